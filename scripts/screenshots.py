"""Screenshots of the app on the shipped checkpoints, driven as a person would in headless
Chromium (Playwright): an upload's cards (calibrated probabilities, verdicts with UNSURE,
the stability column, the heatmaps), and the Evaluation tab's reliability diagram,
accuracy/coverage plot and threshold explorer after moving its slider.

    python scripts/screenshots.py [--out DIR] [--images FILE ...]

The tests drive the same page on tiny checkpoints (tests/test_app_browser.py); this shows the
real ones: the README's screenshots in docs/screenshots/ are its output.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

import app
from cifake_models.page.state import example_files

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--images", nargs="+", help="files to upload (default: the first REAL and FAKE examples)")
    parser.add_argument("--threshold", type=float, default=0.9, help="where to move the threshold slider")
    args = parser.parse_args(argv)
    examples = example_files()
    images = args.images or [next(p for p in examples if Path(p).name.startswith(label)) for label in ("fake", "real")]
    args.out.mkdir(parents=True, exist_ok=True)
    _, url, _ = app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(url)
            page.locator("#upload input[type=file]").set_input_files(images)
            page.wait_for_function(
                f"document.querySelectorAll('#results .card .heatmaps').length === {min(len(images), 4)}"
            )
            page.locator("#results").screenshot(path=str(args.out / "detect.png"))
            page.get_by_role("tab", name="Evaluation").click()
            page.locator("#reliability-plot .js-plotly-plot").wait_for()
            page.locator("#reliability-plot").scroll_into_view_if_needed()
            page.locator("#reliability-plot").screenshot(path=str(args.out / "reliability.png"))
            page.locator("#selective-plot").screenshot(path=str(args.out / "coverage.png"))
            number = page.locator("#threshold input[type=number]")
            number.fill(str(args.threshold))
            number.press("Tab")
            page.wait_for_function(
                f"document.querySelector('#threshold-plot').textContent.includes('P(FAKE) ≥ {args.threshold:.3f}')"
            )
            page.locator("#threshold-plot").screenshot(path=str(args.out / "threshold.png"))
            browser.close()
    finally:
        app.demo.close()
    print(f"screenshots in {args.out}: " + ", ".join(sorted(p.name for p in args.out.glob("*.png"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
