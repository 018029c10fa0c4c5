"""What every trainer records: checkpoint metadata and the validation-chosen threshold."""

from __future__ import annotations

from datetime import datetime, timezone

from cifake_models.checkpoint import FORMAT_VERSION, hardware, library_versions
from cifake_models.data import CLASSES, Split
from cifake_models.registry import DetectorSpec
from cifake_models.detector import FAKE, Detector
from cifake_models.reports import best_threshold, classification_figures


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
        "architecture": spec.architecture.__name__ if spec.is_torch else "HOG -> StandardScaler -> RBF expansion over Nystroem landmarks (linear SVM) -> sigmoid",
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
    """Choose the decision threshold on validation and record it with the validation figures."""
    proba_fake = detector.predict_proba_arrays(val.images)[:, FAKE]
    detector.metadata["threshold"] = {
        "value": best_threshold(val.labels, proba_fake),
        "chosen_on": "validation split",
        "rule": "the P(FAKE) cut that maximises validation accuracy",
    }
    figures = classification_figures(val.labels, proba_fake, detector.threshold)
    detector.metadata["validation"] = {k: figures[k] for k in ("n", "accuracy", "roc_auc", "pr_auc")}
    return figures
