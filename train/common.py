"""What every trainer records: checkpoint metadata and the choices made on validation."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from cifake_models.calibration import ECE_TARGETS, SUITE_SHARES, Calibration, UnsureBand, selective_figures
from cifake_models.checkpoint import FORMAT_VERSION, hardware, library_versions
from cifake_models.committee import CommitteeDetector
from cifake_models.data import CLASSES, Split
from cifake_models.registry import DetectorSpec
from cifake_models.detector import FAKE, Detector
from cifake_models.images import mirror
from cifake_models.reports import best_threshold, brier_score, classification_figures, expected_calibration_error
from cifake_models.robustness import balanced_sample, perturb_all, score_suite

VALIDATION_ROBUSTNESS_SAMPLE = 1000  # validation images per perturbation


def checkpoint_metadata(
    spec: DetectorSpec,
    recipe: dict,
    data_info: dict,
    weights: str,
    history: list,
    wall_time_s: float,
    device: str,
    earlier_stages: list[dict] = (),
) -> dict:
    """``wall_time_s`` and ``history`` cover every stage; ``earlier_stages`` describe the stages
    before this one (oldest first), each with its checkpoint's SHA-256, recipe, and training
    record (hardware and that stage's own wall time)."""
    initialisation = (
        "ImageNet (torchvision IMAGENET1K_V1), new 2-class head"
        if weights == "imagenet"
        else "random (from scratch): ImageNet weights were not used"
    )
    if earlier_stages:
        initialisation += f"; trained in {len(earlier_stages) + 1} stages, each continuing the last (see earlier_stages)"
    return {
        "format_version": FORMAT_VERSION,
        "detector": spec.name,
        "title": spec.title,
        # a network's builder, or how a detector that is no torch module is built, in words
        "architecture": spec.architecture.__name__ if spec.is_torch else spec.recipe.architecture,
        "classes": list(CLASSES),
        "recipe": recipe,
        "weights": weights,
        "initialisation": initialisation,
        "data": data_info,
        "history": history,
        "earlier_stages": list(earlier_stages),
        "training": {"hardware": hardware(), "device": device, "wall_time_s": round(wall_time_s, 1)},
        "versions": library_versions(),
        "notes": spec.notes,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def record_validation(detector: Detector, val: Split) -> dict:
    """Make every choice that is made on validation, in order, and record it with the
    validation figures: the views (mirror averaging), the calibration, the decision threshold,
    the unsure band, and the robustness suite's figures.

    CIFAKE's classes do not change under a left-right flip, so the mean of P over an image and
    its mirror is a two-view ensemble at twice the inference cost. It is kept only where it
    raises validation accuracy, each variant at its own best threshold.
    """
    if isinstance(detector, CommitteeDetector):  # its members made their own choice of views
        return record_calibration(detector, val, detector.predict_proba_raw(val.images)[:, FAKE])
    single = detector.predict_proba_view(val.images)[:, FAKE]
    views = {"single": single, "mirror_average": (single + detector.predict_proba_view(mirror(val.images))[:, FAKE]) / 2}
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
    return record_calibration(detector, val, views[chosen])


def record_calibration(detector: Detector, val: Split, raw_fake: np.ndarray, robustness_sample: int = VALIDATION_ROBUSTNESS_SAMPLE) -> dict:
    """From the detector's uncalibrated P(FAKE) on ``val``: fit the calibration on ``val`` alone
    and on ``val`` with the robustness suite's copies of a balanced sample of it (what uploads
    look like) at each weight of ``SUITE_SHARES``, keep the fit nearer both ECE targets, then
    choose the threshold and the unsure band on the calibrated validation probabilities, and
    record them with the validation figures and the suite's (so robustness, too, can be
    compared between candidates without the test split)."""
    sample = balanced_sample(val.labels, robustness_sample)
    labels = val.labels[sample]
    perturbed = perturb_all(val.images[sample])
    raw_perturbed = {p.name: detector.predict_proba_raw(batch)[:, FAKE] for p, batch in perturbed.items()}
    all_labels = np.concatenate([val.labels, *[labels] * len(perturbed)])
    all_fake = np.concatenate([raw_fake, *raw_perturbed.values()])
    n_copies = len(all_labels) - len(val)

    def fit(share: float) -> Calibration:  # the copies make up ``share`` of the total weight
        weights = np.concatenate([np.full(len(val), (1 - share) / len(val)), np.full(n_copies, share / n_copies)])
        return Calibration.fit(all_labels, all_fake, weights * len(all_labels)) if share else Calibration.fit(val.labels, raw_fake)

    candidates = {
        "validation split" if not share else
        f"validation split and the suite's copies of {len(sample):,} of its images, {share:.0%} of the weight": fit(share)
        for share in SUITE_SHARES
    }
    eces = {
        fitted_on: {
            "clean": expected_calibration_error(val.labels, c.apply(raw_fake)),
            "suite": float(np.mean([expected_calibration_error(labels, c.apply(p)) for p in raw_perturbed.values()])),
        }
        for fitted_on, c in candidates.items()
    }
    # The fit that comes closer to both targets: the larger of its two errors, each in units of its target.
    fitted_on = min(eces, key=lambda f: max(eces[f][k] / ECE_TARGETS[k] for k in ECE_TARGETS))
    calibration = candidates[fitted_on]
    proba_fake = calibration.apply(raw_fake)
    threshold = best_threshold(val.labels, proba_fake)
    band = UnsureBand.choose(val.labels, proba_fake, threshold)
    figures = classification_figures(val.labels, proba_fake, threshold)
    detector.metadata["calibration"] = {
        **calibration.to_dict(),
        "fitted_on": fitted_on,
        "chosen_on": "validation split",
        "rule": "of fits on the clean validation split alone and with its perturbed copies at several weights, the one "
                "whose larger ECE (clean, or mean under the suite) is the smaller in units of its target "
                + ", ".join(f"{k} {v}" for k, v in ECE_TARGETS.items()),
        "candidates": eces,
        "validation": {
            "ece_before": expected_calibration_error(val.labels, raw_fake),
            "ece_after": figures["ece"],
            "brier_before": brier_score(val.labels, raw_fake),
            "brier_after": figures["brier"],
        },
    }
    detector.metadata["threshold"] = {
        "value": threshold,
        "chosen_on": "validation split",
        "rule": "the calibrated P(FAKE) cut that maximises validation accuracy",
    }
    detector.metadata["unsure"] = {
        **band.to_dict(),
        "chosen_on": "validation split",
        "rule": (f"UNSURE unless the calibrated probability of the called class reaches the lowest level at which "
                 f"validation accuracy on the decided images is at least {band.target_accuracy:.0%}"),
        "validation": selective_figures(val.labels, proba_fake, band, threshold),
    }
    clean = proba_fake[sample]
    robustness = score_suite(
        lambda key, _batch: clean if key == "clean" else calibration.apply(raw_perturbed[key]),
        threshold, val.images[sample], labels, perturbed,
    )
    detector.metadata["validation"] = {
        **{k: figures[k] for k in ("n", "accuracy", "roc_auc", "pr_auc", "ece", "brier")},
        "robustness": robustness.to_dict(),
    }
    return figures
