"""The costliest requests allowed: ``python -m scripts.benchmarks.worst_request [--files 100]``

One ``/predict_batch`` request as the app handles it in-process, with the stability check on, for
two kinds of worst file: ``--files`` distinct PNGs just under the pixel cap that compress to a few
KB (decoding is the cost), and ``--files`` distinct small photos-like PNGs (the detectors and the
stability copies are the cost). Prints each request's CPU time over all the process's threads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cifake_models.page.analysis import MAX_BATCH_FILES, predict_files
from cifake_models.page.state import load_state
from cifake_models.uploads import MAX_PIXELS


def large_files(folder: Path, n: int) -> list[str]:
    """Distinct flat PNGs just under the pixel cap: a few KB each, the most decoding per byte."""
    height = 5000
    width = (MAX_PIXELS - 1) // height
    paths = []
    for i in range(n):
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[i % height, : i + 1] = 255
        paths.append(str(folder / f"large_{i}.png"))
        Image.fromarray(pixels).save(paths[-1], compress_level=9)
    return paths


def small_files(folder: Path, n: int) -> list[str]:
    """Distinct noisy 256x256 PNGs: cheap to decode, every detector and stability copy runs."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(str(folder / f"small_{i}.png"))
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def measure(state, label: str, paths: list[str]) -> None:
    cpu, wall = time.process_time(), time.perf_counter()
    records = predict_files(state, paths, check_stability=True)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    refused = sum(1 for record in records if record["error"])
    print(
        f"{label}: {len(records)} files ({refused} not processed), CPU {cpu:.1f} s over all threads, wall {wall:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=MAX_BATCH_FILES, help="files in each request")
    args = parser.parse_args()
    state = load_state()
    with tempfile.TemporaryDirectory() as folder:
        measure(state, "files at the pixel cap", large_files(Path(folder), args.files))
        measure(state, "small distinct files", small_files(Path(folder), args.files))


if __name__ == "__main__":
    main()
