"""Evaluate every shipped checkpoint on the official test split: ``python -m train.evaluate``.

Writes ``<reports>/<detector>.json`` per detector: the paper's figures on the whole test split
(accuracy, per-class precision/recall/F1, ROC-AUC, PR-AUC, confusion matrix, ROC and PR
curves), the same without the 378 test images that also occur in train, the decision
threshold and mirror averaging (both chosen on validation), the training history and the timing.
The test split is used here and nowhere else.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cifake_models import REPORT_DIR, get_spec
from cifake_models.checkpoint import hardware, library_versions, write_json
from cifake_models.data import Split, default_data_dir, leaked_test_names, load_split
from cifake_models.detector import FAKE, Detector
from cifake_models.reports import classification_figures, percent

from .commands import checkpoint_command, load_checkpoints, parse

TIMING_BATCHES = (1, 64)


def best_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    """The fastest of ``repeats`` calls of ``fn`` after one warm-up call: the least disturbed timing."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def seconds_per_image(detector: Detector, images: np.ndarray, repeats: int = 5) -> float:
    """Best of ``repeats`` timings of ``predict_proba_arrays`` on ``images``, per image."""
    return best_seconds(lambda: detector.predict_proba_arrays(images), repeats) / len(images)


def evaluate_detector(detector: Detector, test: Split, leaked: set[str], checkpoint: Path) -> dict:
    spec = get_spec(detector.name)
    proba_fake = detector.predict_proba_arrays(test.images)[:, FAKE]
    keep = ~np.isin(test.names, sorted(leaked))
    meta = detector.metadata
    return {
        "detector": spec.name,
        "title": spec.title,
        "checkpoint": {"file": checkpoint.name, "size_bytes": checkpoint.stat().st_size},
        "paper": {"accuracy": spec.paper.accuracy, "roc_auc": spec.paper.roc_auc, "recipe": spec.paper.recipe},
        "architecture": meta.get("architecture"),
        "recipe": meta.get("recipe"),
        "preprocessing": meta.get("preprocessing"),
        "weights": meta.get("weights"),
        "initialisation": meta.get("initialisation"),
        "notes": spec.notes,
        "training": meta.get("training"),
        "data": meta.get("data"),
        "history": meta.get("history", []),
        "earlier_stages": meta.get("earlier_stages", []),
        "test_time": meta.get("test_time"),
        "threshold": meta.get("threshold"),
        "validation": meta.get("validation"),
        "test": classification_figures(test.labels, proba_fake, detector.threshold),
        "test_leak_free": {
            "removed": int((~keep).sum()),
            **classification_figures(test.labels[keep], proba_fake[keep], detector.threshold),
        },
        "ms_per_image": {
            # a small test split is repeated to fill the batch
            f"batch_{n}": 1000 * seconds_per_image(detector, test.images[np.arange(n) % len(test)]) for n in TIMING_BATCHES
        },
        "evaluated": {
            "split": "test",
            "test_fingerprint": test.fingerprint(),
            "hardware": hardware(),
            "versions": library_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_command("python -m train.evaluate", __doc__)
    parser.add_argument("--reports", type=Path, default=REPORT_DIR, help="default: %(default)s")
    parser.add_argument("--limit", type=int, help="evaluate on a random subset of this size (smoke runs only)")
    args = parse(parser, argv)
    data_dir = args.data or default_data_dir()
    test = load_split(data_dir, "test")
    if args.limit:
        test = test.subset(np.sort(np.random.default_rng(0).choice(len(test), min(args.limit, len(test)), replace=False)))
    leaked = leaked_test_names(data_dir)
    print(f"test: {len(test)} images, {int(np.isin(test.names, sorted(leaked)).sum())} of them also in train")
    detectors, failures = load_checkpoints(args.detectors, args.checkpoints)
    for detector in detectors:
        spec = get_spec(detector.name)
        report = evaluate_detector(detector, test, leaked, args.checkpoints / spec.checkpoint_file)
        write_json(args.reports / f"{spec.name}.json", report)
        t, lf = report["test"], report["test_leak_free"]
        print(
            f"{spec.name}: accuracy {percent(t['accuracy'])} (paper {percent(spec.paper.accuracy)}), "
            f"ROC-AUC {t['roc_auc']:.4f} (paper {spec.paper.roc_auc:.4f}); leak-free accuracy {percent(lf['accuracy'])}; "
            f"{report['ms_per_image'].get('batch_1', float('nan')):.1f} ms/image"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
