"""Does ``cifake-evaluate FOLDER`` give ``train.evaluate``'s figures? On a folder made from test images.

    PYTHONPATH=$PWD python -m scripts.folder_agreement --n 500 --out runs/folder_agreement

Writes N test images of the official split (a seeded random sample; their original
JPEG bytes) into OUT/folder/REAL and OUT/folder/FAKE, with a corrupt JPEG and a text file beside
them; runs ``cifake-evaluate`` on it; then computes the figures ``train.evaluate`` writes for the
same images (its ``Scorer``, thresholds, ``classification_figures`` and accuracy-coverage curve) and
prints, per detector, the largest difference over all of them (the points of the ROC, PR and
threshold-sweep curves apart: the areas count). Exits 1 where one is over ``--tolerance`` (0.001)
or where the two bad files are not listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cifake_models import folder_eval
from cifake_models.calibration import selective_curve
from cifake_models.data import load_split, stored_files
from cifake_models.labels import CLASSES
from cifake_models.metrics import classification_figures
from cifake_models.paths import checkpoint_dir_or_default
from cifake_models.registry import load_detector
from train.evaluate import Scorer

# Points of curves, left out: ties among probabilities (kept to six decimals, and computed by ONNX
# Runtime as the app serves them, not by torch) move them by an image; their areas are compared.
CURVES = ("roc_curve", "pr_curve", "threshold_sweep")
BAD_FILES = {"REAL/broken.jpg": b"\xff\xd8\xff\xe0 not really a JPEG", "FAKE/notes.txt": b"not an image at all\n"}


def make_folder(data: Path | None, n: int, folder: Path, seed: int = 0) -> list[str]:
    """N test files' bytes into ``folder``'s REAL/ and FAKE/ (and the bad files); their names in the split."""
    files = list(stored_files(data, "test"))
    chosen = np.random.default_rng(seed).choice(len(files), min(n, len(files)), replace=False)
    names = []
    for i in sorted(chosen):
        name, label, data_bytes = files[i]
        path = folder / CLASSES[label] / Path(name).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data_bytes)
        names.append(name)
    for relative, content in BAD_FILES.items():
        (folder / relative).write_bytes(content)
    return names


def evaluate_figures(data: Path | None, names: list[str], detectors: dict, checkpoints: Path) -> dict[str, dict]:
    """train.evaluate's figures of each detector on the test images named ``names``."""
    test = load_split(data, "test")
    rows = np.flatnonzero(np.isin(test.names, names))
    subset, scorer = test.subset(rows), Scorer()
    out = {}
    for name, d in detectors.items():
        proba = scorer.fake(d, "test", subset.images)
        figures = classification_figures(subset.labels, proba, d.rule.threshold)
        out[name] = {**figures, "selective": selective_curve(subset.labels, proba, d.rule.threshold).to_dict()}
    return out


def largest_difference(got, expected, where: str = "") -> tuple[float, str]:
    """The largest absolute difference between two figure trees, and where (:data:`CURVES` left out)."""
    if isinstance(expected, dict):
        parts = [largest_difference(got[k], v, f"{where}.{k}") for k, v in expected.items() if k not in CURVES]
        return max(parts, default=(0.0, where))
    if isinstance(expected, list | tuple):
        if len(got) != len(expected):
            return float("inf"), f"{where} (lengths {len(got)} and {len(expected)})"
        return max(
            (largest_difference(g, e, f"{where}[{i}]") for i, (g, e) in enumerate(zip(got, expected))),
            default=(0.0, where),
        )
    if expected is None or got is None:
        return (0.0 if got is expected else float("inf")), where
    return abs(float(got) - float(expected)), where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/folder_agreement"))
    parser.add_argument("--data", type=Path)
    parser.add_argument("--checkpoints", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.001)
    args = parser.parse_args(argv)
    checkpoints = checkpoint_dir_or_default(args.checkpoints)
    names = make_folder(args.data, args.n, args.out / "folder")
    report_dir = args.out / "report"
    folder_eval.main(
        [str(args.out / "folder"), "--out", str(report_dir), "--checkpoints", str(checkpoints), "--workers", "1"]
    )
    report = json.loads((report_dir / "report.json").read_text())
    detectors = {name: load_detector(name, checkpoints) for name in report["detectors"]}
    expected = evaluate_figures(args.data, names, detectors, checkpoints)
    diffs = {name: largest_difference(report["detectors"][name][folder_eval.SPLIT], e) for name, e in expected.items()}
    for name, (difference, where) in diffs.items():
        print(f"{name}: largest difference {difference:.2g} ({where.lstrip('.')})")
    worst = max(difference for difference, _ in diffs.values())
    listed = {b["file"] for b in report["bad_files"]} == set(BAD_FILES)
    print(
        f"{len(names)} images; largest difference {worst:.2g} (tolerance {args.tolerance}); bad files listed: {listed}"
    )
    return 0 if worst <= args.tolerance and listed else 1


if __name__ == "__main__":
    sys.exit(main())
