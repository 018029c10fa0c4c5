"""The app: ``python -m scripts.benchmarks.the_app [--repeats 5]``

Start-up of ``python app.py`` until HTTP answers; decode + detectors + cards + CSV in-process; and
``gradio_client`` ``/predict`` and ``/predict_batch`` (64 files) against the started server.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from cifake_models.data import load_split
from cifake_models.paths import REPO_ROOT

from .common import (
    best_ms_per_image,
    client,
    common_arguments,
    free_port,
    median_ms,
    print_table,
    setup,
    start_server,
    stop,
)


def main(argv: list[str] | None = None) -> int:
    parser = common_arguments(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    env = setup(args)
    test = load_split(args.data, "test")
    sample = test.images[np.sort(np.random.default_rng(0).choice(len(test), 64, replace=False))]
    work = Path(tempfile.mkdtemp(prefix="cifake-the-app-"))
    port = free_port()
    startup, process = start_server([sys.executable, str(REPO_ROOT / "app.py")], env, port, args.startup_timeout)
    try:
        import app

        the_app(app, app.demo.app_state, port, sample, startup, work, args.repeats)
    finally:
        stop(process)
    return 0


def the_app(app, state, port: int, sample: np.ndarray, startup: float, work: Path, repeats: int) -> None:
    from gradio_client import handle_file

    paths = []
    for i, pixels in enumerate(sample[:64]):
        paths.append(str(work / f"{i:02d}.png"))
        Image.fromarray(pixels).save(paths[-1])
    rows = [["python app.py until HTTP answers", f"{startup:.1f} s", ""]]
    one = best_ms_per_image(lambda: app.detect_outputs(state, paths[:1]), 1, repeats)
    many = best_ms_per_image(lambda: app.detect_outputs(state, paths), 64, repeats)
    rows.append(["decode + detectors + cards + CSV", f"{one:.1f} ms", f"{many:.2f} ms"])
    user = client(f"http://127.0.0.1:{port}/", "10.0.0.1")
    one = median_ms(lambda: user.predict(handle_file(paths[0]), api_name="/predict"), repeats)
    many = (
        median_ms(
            lambda: user.predict([handle_file(p) for p in paths], api_name="/predict_batch"), max(1, repeats // 2)
        )
        / 64
    )
    rows.append(["gradio_client /predict, /predict_batch", f"{one:.1f} ms", f"{many:.2f} ms"])
    print_table("2. The app", ["", "1 image", "per image, batch 64"], rows)


if __name__ == "__main__":
    raise SystemExit(main())
