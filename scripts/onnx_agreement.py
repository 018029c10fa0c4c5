"""Do the served networks answer as PyTorch does? ``python scripts/onnx_agreement.py [--images N] [NAME ...]``

For each shipped network (default: all), scores ``--images`` test images drawn at random with
the detector as training and evaluation run it (PyTorch) and as the app and ``cifake-score``
serve it (``prepare_for_serving(threads=1)``: ONNX Runtime), and prints the largest difference in
P(FAKE) before calibration and after it, and how many verdicts differ. Also the most a raw
difference of 1e-6 can move the calibrated P anywhere on the map (at an isotonic map's steepest
step). The figures in ``cifake_models/onnx_runtime.py`` and docs/performance.md come from this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cifake_models import REGISTRY, load_detector
from cifake_models.data import load_split
from cifake_models.labels import FAKE

RAW_STEP = 1e-6


def largest_move(detector, step: float = RAW_STEP) -> float:
    """The most a raw P(FAKE) change of ``step`` moves the calibrated one, over the map's knots
    (where an isotonic map is steepest) and a fine grid."""
    knots = np.asarray(detector.metadata.get("calibration", {}).get("knots", []), dtype=np.float64)
    grid = np.concatenate([knots, np.linspace(0.0, 1.0 - step, 200_001)])
    return float(
        np.max(
            np.abs(detector.rule.calibration.apply(np.clip(grid + step, 0, 1)) - detector.rule.calibration.apply(grid))
        )
    )


def main() -> None:
    networks = [name for name, spec in REGISTRY.items() if spec.is_torch]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "names",
        nargs="*",
        default=networks,
        metavar="NAME",
        help=f"networks to compare (default: {' '.join(networks)})",
    )
    parser.add_argument("--data", type=Path)
    parser.add_argument("--images", type=int, default=5000, help="test images compared (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    test = load_split(args.data, "test")
    images = test.images[np.random.default_rng(args.seed).choice(len(test), min(args.images, len(test)), replace=False)]
    print(f"{len(images)} test images; raw and calibrated P(FAKE), PyTorch against ONNX Runtime")
    for name in args.names:
        plain, served = load_detector(name), load_detector(name).prepare_for_serving(threads=1)
        raw = np.abs(plain.uncalibrated(images)[:, FAKE] - served.uncalibrated(images)[:, FAKE]).max()
        calibrated_plain, calibrated_served = plain.probabilities(images), served.probabilities(images)
        calibrated = np.abs(calibrated_plain[:, FAKE] - calibrated_served[:, FAKE]).max()
        verdicts = int((plain.decide(calibrated_plain) != served.decide(calibrated_served)).sum())
        print(
            f"{name:12s} raw {raw:.1e}  calibrated {calibrated:.1e}  verdicts differing {verdicts}  "
            f"a raw {RAW_STEP:g} moves calibrated P by at most {largest_move(plain):.2g}"
        )


if __name__ == "__main__":
    main()
