"""A folder: ``python -m scripts.benchmarks.folder [--folder-images 20000 --kill-after 60]``

``--folder-images`` test images (default all 20,000, as their original JPEG files):
``cifake-score`` killed part-way and resumed, its images per second (over both runs with their
start-ups, and the resumed run's own rate once loaded) against the in-process batch speed of the
served detectors, and its CSV against the app's for the same files.
"""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cifake_models.data import load_split
from cifake_models.page.analysis import MAX_BATCH_FILES

from .common import common_arguments, file_name, jpeg_files, print_table, setup


def score_folder(folder: Path, out: Path, env: dict, kill_after: float | None) -> tuple[float, int, str]:
    """Run ``cifake-score`` on ``folder``; SIGKILL it after ``kill_after`` seconds if given.
    Returns the wall time, the exit code (-9 when killed) and the command's last line (its summary)."""
    command = [sys.executable, "-m", "cifake_models.score", str(folder), "--out", str(out)]
    log = out.with_suffix(".log")
    start = time.perf_counter()
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
    lines = log.read_text().replace("\r", "\n").strip().splitlines()
    return time.perf_counter() - start, process.returncode, lines[-1] if lines else ""


def folder_test(args, env: dict, state, test, work: Path) -> None:
    import app

    folder = work / "test-split"
    folder.mkdir()
    files = jpeg_files(args.data)
    names = [
        file_name(n) for n in test.names[np.sort(np.random.default_rng(1).permutation(len(test))[: args.folder_images])]
    ]
    for name in names:
        (folder / name).write_bytes(files[name])
    out = work / "scores.csv"
    killed_after, code, _ = score_folder(folder, out, env, args.kill_after)
    written = max(0, sum(1 for _ in open(out, encoding="utf-8")) - 1) if out.exists() else 0
    resumed_in, code2, summary = score_folder(folder, out, env, None)
    # The resumed run's own rate, from its summary: files scored per second once the detectors are loaded.
    own = re.search(r"in ([\d.]+) s \(([\d.]+) files/s\) after ([\d.]+) s of start-up", summary)
    with open(out, encoding="utf-8", newline="") as handle:
        table = list(csv.reader(handle))
    unique = len({row[0] for row in table[1:]})
    wall = killed_after + resumed_in
    # In-process batch speed: every detector (as served) on the same images as arrays, in batches
    # of 64 and of cifake-score's 256.
    arrays = test.images[: min(len(names), 2048)]
    in_process = {}
    for size in (64, 256):
        start = time.perf_counter()
        for i in range(0, len(arrays), size):
            state.predict(arrays[i : i + size])
        in_process[size] = len(arrays) / (time.perf_counter() - start)
    sample = sorted(folder.iterdir())[:MAX_BATCH_FILES]
    _, _, download = app.detect_outputs(state, [str(p) for p in sample])
    apps = list(csv.reader(open(download["value"], encoding="utf-8", newline="")))
    ours = {row[0]: row for row in table[1:]}
    same = apps[0] == table[0] and all(ours[row[0]] == row for row in apps[1:])
    rows = [
        [
            "first run, killed (SIGKILL)",
            f"{killed_after:.0f} s",
            f"{written} rows written" + (" (finished before the kill)" if code == 0 else ""),
        ],
        [
            "same command again (resumes)",
            f"{resumed_in:.0f} s",
            f"exit {code2}; {len(table) - 1} rows, {unique} distinct files",
        ],
        [
            "cifake-score, both runs",
            f"{len(names) / wall:.0f} images/s",
            "including start-up (load + ONNX export) twice",
        ],
        [
            "cifake-score, resumed run, once loaded",
            f"{float(own[2]):.0f} images/s" if own else "?",
            f"{own[1]} s scoring after {own[3]} s of start-up (its own summary)" if own else f"no summary: {summary!r}",
        ],
        *(
            [
                f"in-process batches of {size} (served detectors)",
                f"{rate:.0f} images/s",
                f"on {len(arrays)} arrays, no decoding",
            ]
            for size, rate in in_process.items()
        ),
        [f"CSV vs the app's for {len(sample)} of the files", "identical" if same else "DIFFERENT", ""],
    ]
    print_table(f"4. cifake-score on {len(names):,} test-split JPEG files", ["", "", ""], rows)


def main(argv: list[str] | None = None) -> int:
    parser = common_arguments(__doc__)
    parser.add_argument("--folder-images", type=int, default=20_000)
    parser.add_argument(
        "--kill-after", type=float, default=60, help="seconds before the folder run is killed, then resumed"
    )
    args = parser.parse_args(argv)
    env = setup(args)
    from cifake_models.page.state import load_state

    folder_test(args, env, load_state(), load_split(args.data, "test"), Path(tempfile.mkdtemp(prefix="cifake-folder-")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
