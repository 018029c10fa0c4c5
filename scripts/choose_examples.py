"""Pick the app's example images from CIFAKE's official test split: ``python scripts/choose_examples.py``.

Draws ``--per-class`` REAL and FAKE images with a seeded generator, skipping test images whose
pixels also occur in train (``duplicates.json``), and writes them losslessly as PNG (the pixels
the dataset's JPEGs decode to) to ``assets/examples/{real,fake}_<file>.png``. The same data and
seed always give the same files.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cifake_models.data import data_search_order, leaked_test_names, load_split
from cifake_models.labels import CLASSES
from cifake_models.paths import REPO_ROOT

MAX_TOTAL_BYTES = 200_000


def example_name(dataset_name: str, class_name: str) -> str:
    """``test/REAL/0042 (3).jpg`` -> ``real_0042_3.png``."""
    stem = Path(dataset_name).stem
    return f"{class_name.lower()}_{re.sub(r'[^0-9A-Za-z]+', '_', stem).strip('_')}.png"


def choose(labels: np.ndarray, names: np.ndarray, per_class: int, seed: int, leaked: set[str]) -> list[int]:
    rng = np.random.default_rng(seed)
    chosen = []
    for label in range(len(CLASSES)):
        candidates = np.array([i for i in np.flatnonzero(labels == label) if names[i] not in leaked])
        chosen += sorted(rng.choice(candidates, size=min(per_class, len(candidates)), replace=False).tolist())
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=None, help=f"CIFAKE folder or packed .npz folder (default: {data_search_order()})"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "assets" / "examples")
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)

    test = load_split(args.data, "test")
    picked = choose(test.labels, test.names, args.per_class, args.seed, leaked_test_names(args.data))
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()
    total = 0
    for i in picked:
        class_name = CLASSES[test.labels[i]]
        path = args.out / example_name(test.names[i], class_name)
        Image.fromarray(test.images[i]).save(path, format="PNG", optimize=True)
        total += path.stat().st_size
        print(f"{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}  <- {test.names[i]}")
    print(f"{len(picked)} examples, {total / 1000:.1f} kB in all")
    if total > MAX_TOTAL_BYTES:
        print(f"error: examples take {total} bytes, over the {MAX_TOTAL_BYTES} budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
