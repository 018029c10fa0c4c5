"""The app in a real browser (Debian's chromium, headless, through Playwright): drop and upload
images, see every detector's answer, open the other tabs and see the table and the plots.
Screenshots of each tab go to /tmp/shots/."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import with_new_figures

from cifake_models import feedback, get_spec, list_detectors
from cifake_models.page.state import example_files, load_state

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path("/tmp/shots")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
    pytest.skip(
        f"no chromium at {CHROMIUM} (Debian package `chromium`): browser tests skipped", allow_module_level=True
    )
sync_playwright = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed"
).sync_playwright

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")
TITLES = [get_spec(n).title for n in list_detectors()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(app_module, tiny_assets):
    state = load_state(tiny_assets["checkpoints"], tiny_assets["reports"])
    for name in ("cnn", "hog_svm"):  # the detector the tab opens on, and the one chosen below
        state.reports[name] = with_new_figures(state.reports[name])
    demo = app_module.build_demo(state)
    _, local_url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True
    )
    yield local_url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, url):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.set_default_timeout(60_000)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("#upload")
    yield page
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser-files")
    from PIL import Image

    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "noise.png")
    (root / "letter.txt").write_text("Dear detector, I am not an image.")
    return {"noise.png": root / "noise.png", "letter.txt": root / "letter.txt"}


def card(page, file_name: str):
    return page.locator("#results .card", has_text=file_name)


def assert_every_detector_answered(card_locator) -> None:
    text = card_locator.inner_text()
    assert "say" in text or "says" in text or "unsure" in text, text
    assert "Holds up?" in text
    rows = card_locator.locator("tbody tr")
    assert rows.count() == len(TITLES)
    for i, title in enumerate(TITLES):
        row = rows.nth(i).inner_text()
        assert title in row, row
        assert row.count("%") == 2, row  # P(REAL) and P(FAKE)
        assert rows.nth(i).locator(".verdict").inner_text() in ("FAKE", "REAL", "UNSURE")
        assert "stable under" in row or "flips to" in row, row  # the stability check
    image = card_locator.locator("figure img").first
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert image.evaluate("img => img.naturalWidth") == 128
    # A heatmap per detector but the committee, drawn (decoded by the browser) at 128 px.
    maps = card_locator.locator(".heatmaps img")
    assert maps.count() == len(TITLES) - 1
    assert all(maps.nth(i).evaluate("img => img.complete && img.naturalWidth") == 128 for i in range(maps.count()))


def test_upload_images_and_a_hostile_file(page, files):
    SHOTS.mkdir(exist_ok=True)
    page.locator("#upload input[type=file]").set_input_files([str(files["noise.png"]), str(files["letter.txt"])])
    noise = card(page, "noise.png")
    noise.wait_for()
    assert_every_detector_answered(noise)
    assert "resized from 64x48 to 32x32" in noise.inner_text()
    letter = card(page, "letter.txt")
    assert "not an image this app can read" in letter.inner_text()
    table = page.locator("#results-table")
    assert "noise.png" in table.inner_text() and "letter.txt" in table.inner_text()
    assert page.locator("#csv").is_visible()
    page.screenshot(path=str(SHOTS / "detect.png"), full_page=True)


def test_flag_a_wrong_verdict_and_find_its_record(page, files, tmp_path, monkeypatch):
    monkeypatch.setenv(feedback.FEEDBACK_DIR_ENV, str(tmp_path / "feedback"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    page.locator("#upload input[type=file]").set_input_files([str(files["letter.txt"]), str(files["noise.png"])])
    card(page, "noise.png").wait_for()
    page.locator("#flag-box").get_by_text("This verdict is wrong").first.click()  # open the accordion
    page.locator("#flag-image").get_by_role("combobox").click()
    page.get_by_role("option", name="noise.png").click()
    page.locator("#flag-said").get_by_text("REAL", exact=True).click()
    page.locator("#flag-share").get_by_role("checkbox").check()
    page.locator("#flag").click()
    page.wait_for_function("document.querySelector('#flag-status').textContent.includes('recorded as REAL')")
    [record] = feedback.feedback_log().records()
    assert record["said"] == "REAL"
    assert record["image_sha256"] == hashlib.sha256(files["noise.png"].read_bytes()).hexdigest()
    assert {get_spec(name).title for name in record["detectors"]} == set(TITLES)
    assert (tmp_path / "feedback" / record["image_file"]).read_bytes() == files["noise.png"].read_bytes()


def test_drop_an_image_on_the_page(page, files):
    data = base64.b64encode(files["noise.png"].read_bytes()).decode()
    target = page.locator("#upload input[type=file]").locator("xpath=..")
    target.evaluate(
        """(element, data) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            for (const type of ["dragenter", "dragover", "drop"]) {
                element.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
            }
        }""",
        data,
    )
    dropped = card(page, "dropped.png")
    dropped.wait_for()
    assert_every_detector_answered(dropped)


def test_example_in_one_click(page):
    examples = example_files()
    if not examples:
        pytest.skip("no assets/examples: run scripts/choose_examples.py")
    stem = Path(examples[0]).stem
    page.get_by_role("button", name=stem, exact=True).first.click()
    result = page.locator("#results .card").first
    result.wait_for()
    assert_every_detector_answered(result)
    page.locator("#run-examples").click()
    page.wait_for_function(f"document.querySelectorAll('#results .card').length === {len(examples)}")
    for path in examples:
        assert Path(path).name in page.locator("#results").inner_text()


def test_compare_tab(page):
    page.get_by_role("tab", name="Compare models").click()
    table = page.locator("#compare-table")
    table.wait_for()
    text = table.inner_text()
    for title in TITLES:
        assert title in text
    assert "Paper accuracy" in text.replace("\n", " ")
    page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)


def test_evaluation_tab_shows_plots(page):
    page.get_by_role("tab", name="Evaluation").click()
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 12")
    plots = page.locator(".js-plotly-plot")
    assert plots.count() == 12  # ten of the detectors, two of the scope score
    assert page.locator("#scope-plot .js-plotly-plot").count() == 1
    assert page.locator("#scope-tradeoff-plot .js-plotly-plot").count() == 1
    roc_legend = plots.nth(0).inner_text()
    robustness = page.locator("#robustness-plot .js-plotly-plot").inner_text()
    for title in TITLES:
        assert title in roc_legend and title in robustness
    assert "Accuracy on test images changed as on the way to an upload" in robustness
    assert "Confusion matrix" in plots.nth(2).inner_text()
    assert "Training curves" in plots.nth(5).inner_text()
    assert "after calibration" in page.locator("#reliability-plot").inner_text()
    assert "its unsure band" in page.locator("#selective-plot").inner_text()
    page.screenshot(path=str(SHOTS / "evaluation.png"), full_page=True)
    # Choosing another detector, then the leak-free split, redraws the plots with that split's numbers.
    page.get_by_label("Detector (for the plots below the first row)").click()
    page.get_by_role("option", name="HOG + SVM").click()
    confusion = "[...document.querySelectorAll('.js-plotly-plot')][2].textContent"
    page.wait_for_function(f"{confusion}.includes('Confusion matrix: HOG + SVM')")
    assert "n=16" in plots.nth(2).inner_text()
    assert "no epochs to plot" in page.locator(".js-plotly-plot").nth(5).inner_text()
    page.get_by_label("Leak-free test split (test images also in train removed)").check()
    page.wait_for_function(f"{confusion}.includes('n=14')")  # the leak-free split's confusion matrix (conftest)
    assert "accuracy 0.7857" in plots.nth(2).inner_text()
    page.wait_for_function(
        "document.querySelector('#threshold-summary').textContent.includes('1 of 6 REAL images called FAKE')"
    )


def test_threshold_slider_redraws_the_confusion_matrix(page):
    page.get_by_role("tab", name="Evaluation").click()
    explorer = page.locator("#threshold-plot")
    explorer.locator(".js-plotly-plot").wait_for()
    assert "P(FAKE) ≥" in explorer.inner_text()  # at the detector's own threshold
    number = page.locator("#threshold input[type=number]")
    number.fill("0.7")
    number.press("Tab")
    page.wait_for_function("document.querySelector('#threshold-plot').textContent.includes('P(FAKE) ≥ 0.750')")
    summary = page.locator("#threshold-summary").inner_text()
    assert "recall 50.0%" in summary and "false-positive rate 0.0%" in summary, summary
    page.screenshot(path=str(SHOTS / "threshold.png"), full_page=True)


def test_evaluation_tab_shows_a_report_of_cifake_evaluate(page, tiny_folder_report):
    page.get_by_role("tab", name="Evaluation").click()
    page.locator("#folder-report").get_by_text("Your own images").click()
    report = tiny_folder_report / "report" / "report.json"
    page.locator("#folder-report-file input[type=file]").set_input_files(str(report))
    summary = "document.querySelector('#folder-report-summary').textContent"
    page.wait_for_function(f"{summary}.includes('could not be read')")
    text = page.locator("#folder-report-summary").inner_text()
    assert "8 FAKE, 8 REAL images" in text and "REAL/broken.jpg" in text
    for title in TITLES:
        assert title in text
    page.wait_for_function("document.querySelectorAll('#folder-report .js-plotly-plot').length == 5")
    plots = page.locator("#folder-report .js-plotly-plot")
    assert "Confusion matrix: HOG + SVM" in plots.nth(2).inner_text() and "n=16" in plots.nth(2).inner_text()
    page.get_by_label("Detector (for the plots below the first row)").last.click()
    page.get_by_role("option", name="Native-32 CNN (ours)").click()
    page.wait_for_function(
        "document.querySelectorAll('#folder-report .js-plotly-plot')[2].textContent.includes('Native-32')"
    )
    page.screenshot(path=str(SHOTS / "folder_report.png"), full_page=True)
