"""Evaluate every shipped checkpoint on the official test split: ``python -m train.evaluate``.
The test split is used here and nowhere else.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cifake_models import REPORT_DIR, get_spec
from cifake_models.calibration import selective_curve, selective_figures
from cifake_models.checkpoint import file_sha256, hardware, library_versions, write_json
from cifake_models.committee import CommitteeDetector
from cifake_models.data import Split, default_data_dir, leaked_test_names, load_split
from cifake_models.detector import Detector
from cifake_models.labels import FAKE
from cifake_models.metrics import brier_score, classification_figures, expected_calibration_error, percent, reliability
from cifake_models.perturbations import Perturbation
from cifake_models.robustness import ROBUSTNESS_SAMPLE, Robustness, balanced_sample, perturb_all, score_suite
from cifake_models.scope import SCOPE_FILE

from . import scope_eval
from .commands import checkpoint_command, load_checkpoints, parse

HELP = """Evaluate every shipped checkpoint on the official test split: ``python -m train.evaluate``.

Writes ``<reports>/<detector>.json`` per detector: the paper's figures on the whole test split
(accuracy, per-class precision/recall/F1, ROC-AUC, PR-AUC, confusion matrix, ROC and PR
curves), the same without the 378 test images that also occur in train, the decision
threshold and mirror averaging (both chosen on validation), the training history and the timing.
The test split is used here and nowhere else.
"""  # the command's --help

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
    """Best of ``repeats`` timings of ``probabilities`` on ``images``, per image."""
    return best_seconds(lambda: detector.probabilities(images), repeats) / len(images)


class Scorer:
    """Each detector's P(FAKE) on each image set, computed once per run: a committee combines its
    members' instead of running them again. The memo holds raw (uncalibrated) probabilities, so
    the report can show calibration before and after."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, str], np.ndarray] = {}

    def raw(self, detector: Detector, key: str, images: np.ndarray) -> np.ndarray:
        if (detector.name, key) not in self._memo:
            if isinstance(detector, CommitteeDetector):
                member_fake = {n: self.fake(m, key, images) for n, m in detector.members.items()}
                proba = detector.combine_raw(member_fake)[:, FAKE]
            else:
                proba = detector.uncalibrated(images)[:, FAKE]
            self._memo[detector.name, key] = proba
        return self._memo[detector.name, key]

    def fake(self, detector: Detector, key: str, images: np.ndarray) -> np.ndarray:
        """Calibrated, as the detector answers."""
        return detector.rule.calibration.apply(self.raw(detector, key, images))


@dataclass(frozen=True)
class RobustnessSet:
    """The balanced test sample the suite is scored on, and its perturbed copies (made once)."""

    index: np.ndarray  # rows of the test split
    images: np.ndarray
    labels: np.ndarray
    perturbed: dict[Perturbation, np.ndarray]
    seed: int = 0

    @classmethod
    def from_split(cls, test: Split, n: int, seed: int = 0) -> RobustnessSet:
        sample = balanced_sample(test.labels, n, seed)
        images = test.images[sample]
        return cls(sample, images, test.labels[sample], perturb_all(images), seed)


def calibration_report(
    detector: Detector,
    test: Split,
    splits: dict[str, np.ndarray],
    robust: RobustnessSet,
    scorer: Scorer,
    figures: dict[str, dict],
    robustness: Robustness,
) -> dict:
    """The calibration recorded at training, and how it does on each test split (``splits``:
    its rows of ``test``) and the suite: expected calibration error and Brier score before it
    (from the raw probabilities) and after it (from each split's calibrated ``figures`` and
    ``robustness`` already computed)."""
    raw = scorer.raw(detector, "test", test.images)
    suite_before = [
        expected_calibration_error(robust.labels, scorer.raw(detector, f"robustness {p.name}", batch))
        for p, batch in robust.perturbed.items()
    ]
    suite_after = [score.ece for score in robustness.scores]
    return {
        **detector.metadata["calibration"],
        **{
            split: {
                "ece_before": expected_calibration_error(test.labels[rows], raw[rows]),
                "ece_after": figures[split]["ece"],
                "brier_before": brier_score(test.labels[rows], raw[rows]),
                "brier_after": figures[split]["brier"],
                "reliability_before": reliability(test.labels[rows], raw[rows]),
            }
            for split, rows in splits.items()
        },
        "suite": {
            "mean_ece_before": float(np.mean(suite_before)),
            "mean_ece_after": float(np.mean(suite_after)),
            "worst_ece_after": float(np.max(suite_after)),
        },
    }


def unsure_report(detector: Detector, test: Split, splits: dict[str, np.ndarray], proba_fake: np.ndarray) -> dict:
    band = detector.rule.unsure
    return {
        **detector.metadata["unsure"],
        **{
            split: selective_figures(test.labels[rows], proba_fake[rows], band, detector.rule.threshold)
            for split, rows in splits.items()
        },
    }


def evaluate_detector(
    detector: Detector,
    test: Split,
    leaked: set[str],
    checkpoint: Path,
    robust: RobustnessSet,
    scorer: Scorer,
    timing_repeats: int = 5,
) -> dict:
    spec = get_spec(detector.name)
    proba_fake = scorer.fake(detector, "test", test.images)
    keep = ~np.isin(test.names, sorted(leaked))
    meta = detector.metadata
    robustness = score_suite(
        # The clean sample is part of the test split, already scored above.
        lambda key, batch: (
            proba_fake[robust.index] if key == "clean" else scorer.fake(detector, f"robustness {key}", batch)
        ),
        detector.rule.threshold,
        robust.images,
        robust.labels,
        robust.perturbed,
        robust.seed,
    )
    # The official split, and the same without the test images that also occur in train.
    splits = {"test": np.arange(len(test)), "test_leak_free": np.flatnonzero(keep)}
    figures = {
        split: {
            **classification_figures(test.labels[rows], proba_fake[rows], detector.rule.threshold),
            "selective": selective_curve(test.labels[rows], proba_fake[rows], detector.rule.threshold).to_dict(),
        }
        for split, rows in splits.items()
    }
    return {
        "detector": spec.name,
        "title": spec.title,
        # Its SHA-256 ties the figures to this file: the app, and a test on the shipped assets,
        # say when the checkpoint has changed since (cifake_models.reports.stale_report).
        "checkpoint": {
            "file": checkpoint.name,
            "size_bytes": checkpoint.stat().st_size,
            "sha256": file_sha256(checkpoint),
        },
        "paper": None
        if spec.paper is None
        else {"accuracy": spec.paper.accuracy, "roc_auc": spec.paper.roc_auc, "recipe": spec.paper.recipe},
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
        "teacher": meta.get("teacher"),  # a distillation stage's
        "test_time": meta.get("test_time"),
        "threshold": meta.get("threshold"),
        "validation": meta.get("validation"),
        "members": getattr(detector, "member_names", None),
        "calibration": calibration_report(detector, test, splits, robust, scorer, figures, robustness),
        "unsure": unsure_report(detector, test, splits, proba_fake),
        "test": figures["test"],
        "test_leak_free": {"removed": int((~keep).sum()), **figures["test_leak_free"]},
        "robustness": robustness.to_dict(),
        "ms_per_image": {
            # a small test split is repeated to fill the batch
            f"batch_{n}": 1000 * seconds_per_image(detector, test.images[np.arange(n) % len(test)], timing_repeats)
            for n in TIMING_BATCHES
        },
        "evaluated": {
            "split": "test",
            "test_fingerprint": test.fingerprint(),
            "hardware": hardware("cpu"),  # where the detectors ran, as they load: on the CPU
            "versions": library_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }


def unsure_text(unsure: dict | None) -> str:
    if not unsure:
        return "no unsure band; "
    test = unsure["test"]
    decided = "none decided" if test["accuracy"] is None else f"{percent(test['accuracy'])} right on those"
    return (
        f"outside its unsure band ({unsure['low']:.3f}-{unsure['high']:.3f}) "
        f"it decides {percent(test['coverage'])} of test images, {decided}; "
    )


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_command("python -m train.evaluate", HELP)
    parser.add_argument("--reports", type=Path, default=REPORT_DIR, help="default: %(default)s")
    parser.add_argument("--limit", type=int, help="evaluate on a random subset of this size (smoke runs only)")
    parser.add_argument(
        "--robustness-sample",
        type=int,
        default=ROBUSTNESS_SAMPLE,
        help="balanced test images the perturbation suite is scored on (default: %(default)s)",
    )
    parser.add_argument(
        "--timing-repeats",
        type=int,
        default=5,
        help="timed calls per batch size for ms_per_image after a warm-up, the fastest kept (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        choices=("detectors", "scope"),
        help="only the detectors' reports, or only scope.json (train.scope_eval; by default written "
        "after the detectors' where <checkpoints>/scope.safetensors exists)",
    )
    args = parse(parser, argv)
    if args.only == "scope":
        scope_eval.write_report(args.detectors, args.checkpoints, args.reports, args.data, limit=args.limit)
        return 0
    data_dir = args.data or default_data_dir()
    test = load_split(data_dir, "test")
    if args.limit:
        test = test.subset(
            np.sort(np.random.default_rng(0).choice(len(test), min(args.limit, len(test)), replace=False))
        )
    leaked = leaked_test_names(data_dir)
    print(f"test: {len(test)} images, {int(np.isin(test.names, sorted(leaked)).sum())} of them also in train")
    robust = RobustnessSet.from_split(test, args.robustness_sample)
    print(f"robustness: {len(robust.perturbed)} perturbations of {len(robust.labels)} test images")
    detectors, failures = load_checkpoints(args.detectors, args.checkpoints)
    scorer = Scorer()
    for detector in detectors:
        spec = get_spec(detector.name)
        checkpoint = args.checkpoints / spec.checkpoint_file
        report = evaluate_detector(detector, test, leaked, checkpoint, robust, scorer, args.timing_repeats)
        write_json(args.reports / f"{spec.name}.json", report)
        t, lf, r = report["test"], report["test_leak_free"], report["robustness"]
        paper = f" (paper {percent(spec.paper.accuracy)})" if spec.paper else ""
        paper_auc = f" (paper {spec.paper.roc_auc:.4f})" if spec.paper else ""
        print(
            f"{spec.name}: accuracy {percent(t['accuracy'])}{paper}, ROC-AUC {t['roc_auc']:.4f}{paper_auc}; "
            f"leak-free accuracy {percent(lf['accuracy'])}; under the suite: mean {percent(r['mean_accuracy'])}, "
            f"worst {percent(r['worst']['accuracy'])} ({r['worst']['perturbation']}); ECE {t['ece']:.4f} "
            f"(before calibration {report['calibration']['test']['ece_before']:.4f}), "
            f"suite mean {report['calibration']['suite']['mean_ece_after']:.4f}; "
            f"{unsure_text(report['unsure'])}"
            f"{report['ms_per_image'].get('batch_1', float('nan')):.1f} ms/image"
        )
    if args.only is None and (args.checkpoints / SCOPE_FILE).is_file():
        scope_eval.write_report(args.detectors, args.checkpoints, args.reports, data_dir, limit=args.limit)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
