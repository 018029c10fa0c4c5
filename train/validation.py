"""The choices made on the validation split, recorded in a checkpoint: test-time views,
calibration, decision threshold, unsure band, and the validation figures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cifake_models.calibration import ECE_TARGETS, FAMILIES, SUITE_SHARES, Calibration, UnsureBand, selective_figures
from cifake_models.committee import CommitteeDetector
from cifake_models.data import Split
from cifake_models.decision import DecisionRule, Views
from cifake_models.detector import Detector
from cifake_models.images import mirror
from cifake_models.labels import CLASSES, FAKE
from cifake_models.metrics import best_threshold, brier_score, classification_figures, expected_calibration_error
from cifake_models.robustness import balanced_sample, perturb_all, score_suite

VALIDATION_ROBUSTNESS_SAMPLE = 1000  # validation images per perturbation
CALIBRATION_FOLDS = (
    5  # calibration candidates are compared on held-out folds: an isotonic map fits its own data exactly
)


def record_validation(detector: Detector, val: Split) -> dict:
    """Make every choice that is made on validation, in order, and record it with the
    validation figures: the views (mirror averaging), the calibration, the decision threshold,
    the unsure band, and the robustness suite's figures.

    CIFAKE's classes do not change under a left-right flip, so the mean of P over an image and
    its mirror is a two-view ensemble at twice the inference cost. It is kept only where it
    raises validation accuracy, each variant at its own best threshold.
    """
    if isinstance(detector, CommitteeDetector):  # its members made their own choice of views
        return record_calibration(detector, val, detector.uncalibrated(val.images)[:, FAKE])
    single = detector.single_view(val.images)[:, FAKE]
    views = {"single": single, "mirror_average": (single + detector.single_view(mirror(val.images))[:, FAKE]) / 2}
    thresholds = {view: best_threshold(val.labels, proba) for view, proba in views.items()}
    figures = {view: classification_figures(val.labels, views[view], thresholds[view]) for view in views}
    accuracy = {view: figures[view]["accuracy"] for view in views}
    chosen = "mirror_average" if accuracy["mirror_average"] > accuracy["single"] else "single"
    detector.metadata["test_time"] = {
        "mirror_average": chosen == "mirror_average",
        "chosen_on": "validation split",
        "rule": "average P over the image and its left-right mirror where that raises validation accuracy",
        "validation_accuracy": accuracy,
    }
    detector.views = Views(chosen == "mirror_average")
    return record_calibration(detector, val, views[chosen])


@dataclass(frozen=True)
class CalibrationData:
    """Validation's uncalibrated P(FAKE), then the suite's copies of a balanced sample of it, with
    the cross-validation fold of each (a copy is held out with the image it was made from)."""

    labels: np.ndarray
    raw_fake: np.ndarray
    is_copy: np.ndarray
    fold: np.ndarray
    folds: int
    n_val: int
    n_sample: int
    n_copies: int  # perturbations: copies of the sample

    @classmethod
    def of(
        cls, val: Split, raw_fake: np.ndarray, sample: np.ndarray, raw_perturbed: dict[str, np.ndarray]
    ) -> CalibrationData:
        labels = np.concatenate([val.labels, *[val.labels[sample]] * len(raw_perturbed)])
        # Where some fold would leave a fit one class only (tiny smoke-run splits), the fits are
        # compared on the images they were fitted to instead.
        folds = CALIBRATION_FOLDS
        image_fold = np.random.default_rng(0).permutation(len(val)) % folds
        if any(len(np.unique(val.labels[image_fold != k])) < len(CLASSES) for k in range(folds)):
            folds, image_fold = 1, np.zeros(len(val), int)
        fold = np.concatenate([image_fold, *[image_fold[sample]] * len(raw_perturbed)])
        raw = np.concatenate([raw_fake, *raw_perturbed.values()])
        return cls(
            labels, raw, np.arange(len(labels)) >= len(val), fold, folds, len(val), len(sample), len(raw_perturbed)
        )

    def fit(self, family: type, share: float, rows: np.ndarray | None = None) -> Calibration:
        """``family`` fitted on ``rows`` (default: all), where the copies make up ``share`` of the total weight."""
        rows = np.ones(len(self.labels), bool) if rows is None else rows
        clean, copies = rows & ~self.is_copy, rows & self.is_copy
        weights = np.where(self.is_copy, share / max(copies.sum(), 1), (1 - share) / clean.sum()) * rows.sum()
        used = rows & (weights > 0)
        return family.fit(self.labels[used], self.raw_fake[used], weights[used])

    def held_out_eces(self, family: type, share: float) -> dict[str, float]:
        """ECE of each image's calibrated P from the fit on the other folds (pooled over folds;
        in-sample where there is one fold)."""
        calibrated = np.empty_like(self.raw_fake)
        for k in range(self.folds):
            fitted_to = self.fold != k if self.folds > 1 else np.ones(len(self.fold), bool)  # one fold: in-sample
            calibrated[self.fold == k] = self.fit(family, share, fitted_to).apply(self.raw_fake[self.fold == k])
        copies = calibrated[self.n_val :].reshape(self.n_copies, self.n_sample)
        copy_labels = self.labels[self.n_val : self.n_val + self.n_sample]
        return {
            "clean": expected_calibration_error(self.labels[: self.n_val], calibrated[: self.n_val]),
            "suite": float(np.mean([expected_calibration_error(copy_labels, p) for p in copies])),
        }

    def describe(self, family: type, share: float) -> str:
        copies = f"the suite's copies of {self.n_sample:,} of its images, {share:.0%} of the weight"
        data = f"validation split and {copies}" if share else "validation split"
        return f"{family.method}, on the {data}"


def record_calibration(
    detector: Detector, val: Split, raw_fake: np.ndarray, robustness_sample: int = VALIDATION_ROBUSTNESS_SAMPLE
) -> dict:
    """From the detector's uncalibrated P(FAKE) on ``val``: fit each calibration family on
    ``val`` alone and on ``val`` with the robustness suite's copies of a balanced sample of it
    (what uploads look like) at each weight of ``SUITE_SHARES``, keep the fit whose
    cross-validated errors come nearer both ECE targets, then choose the threshold and the
    unsure band on the calibrated validation probabilities, and record them with the validation
    figures and the suite's (so robustness, too, can be compared between candidates without the
    test split)."""
    sample = balanced_sample(val.labels, robustness_sample)
    perturbed = perturb_all(val.images[sample])
    raw_perturbed = {p.name: detector.uncalibrated(batch)[:, FAKE] for p, batch in perturbed.items()}
    data = CalibrationData.of(val, raw_fake, sample, raw_perturbed)
    options = {data.describe(family, share): (family, share) for family in FAMILIES for share in SUITE_SHARES}
    eces = {name: data.held_out_eces(*option) for name, option in options.items()}
    # The fit that comes closer to both targets: the larger of its two errors, each in units of its target.
    fitted_on = min(eces, key=lambda f: max(eces[f][k] / ECE_TARGETS[k] for k in ECE_TARGETS))
    calibration = data.fit(*options[fitted_on])
    proba_fake = calibration.apply(raw_fake)
    threshold = best_threshold(val.labels, proba_fake)
    band = UnsureBand.choose(val.labels, proba_fake, threshold)
    figures = classification_figures(val.labels, proba_fake, threshold)
    detector.metadata["calibration"] = {
        **calibration.to_dict(),
        "fitted_on": fitted_on,
        "chosen_on": "validation split",
        "rule": "of fits of each family on the clean validation split alone and with its perturbed copies at several "
        f"weights, the one whose larger {f'{data.folds}-fold held-out' if data.folds > 1 else 'in-sample'} ECE on "
        "the validation split (clean, or mean under the suite) is the smaller in units of its target "
        + ", ".join(f"{k} {v}" for k, v in ECE_TARGETS.items()),
        "candidates": eces,
        "validation": {
            "ece_before": expected_calibration_error(val.labels, raw_fake),
            "ece_after": figures["ece"],
            "brier_before": brier_score(val.labels, raw_fake),
            "brier_after": figures["brier"],
        },
    }
    record_decision(detector, val, proba_fake, threshold, band)
    robustness = score_suite(
        lambda key, _batch: proba_fake[sample] if key == "clean" else calibration.apply(raw_perturbed[key]),
        threshold,
        val.images[sample],
        val.labels[sample],
        perturbed,
    )
    detector.metadata["validation"] = {
        **{k: figures[k] for k in ("n", "accuracy", "roc_auc", "pr_auc", "ece", "brier")},
        "robustness": robustness.to_dict(),
    }
    detector.rule = DecisionRule.from_metadata(f"{detector.name}'s validation", detector.metadata)
    return figures


def record_decision(detector: Detector, val: Split, proba_fake: np.ndarray, threshold: float, band: UnsureBand) -> None:
    """The threshold and unsure band chosen on the calibrated validation probabilities, as the checkpoint records
    them."""
    detector.metadata["threshold"] = {
        "value": threshold,
        "chosen_on": "validation split",
        "rule": "the calibrated P(FAKE) cut that maximises validation accuracy",
    }
    detector.metadata["unsure"] = {
        **band.to_dict(),
        "chosen_on": "validation split",
        "rule": (
            f"UNSURE unless the calibrated probability of the called class reaches the lowest level at which "
            f"validation accuracy on the decided images is at least {band.target_accuracy:.0%}"
        ),
        "validation": selective_figures(val.labels, proba_fake, band, threshold),
    }
