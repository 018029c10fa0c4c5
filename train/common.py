"""What every trainer records: checkpoint metadata and the choices made on validation."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cifake_models.calibration import ECE_TARGETS, FAMILIES, SUITE_SHARES, Calibration, UnsureBand, selective_figures
from cifake_models.checkpoint import FORMAT_VERSION, CheckpointError, hardware, library_versions
from cifake_models.committee import CommitteeDetector
from cifake_models.data import CLASSES, SPLIT_SEED, VAL_FRACTION, Split
from cifake_models.registry import DetectorSpec
from cifake_models.detector import FAKE, Detector
from cifake_models.images import mirror
from cifake_models.reports import best_threshold, brier_score, classification_figures, expected_calibration_error
from cifake_models.robustness import balanced_sample, perturb_all, score_suite

from . import distributed

VALIDATION_ROBUSTNESS_SAMPLE = 1000  # validation images per perturbation
CALIBRATION_FOLDS = 5  # calibration candidates are compared on held-out folds: an isotonic map fits its own data exactly


@dataclass(frozen=True)
class DataInfo:
    """What a checkpoint records of the data it was trained on (its ``data`` entry)."""

    source: str
    train_fingerprint: str
    val_fingerprint: str
    n_train: int
    n_val: int
    val_fraction: float  # the validation split held out of train (train_val_indices), before any --limit
    split_seed: int

    @classmethod
    def of(cls, source: str | Path, train: Split, val: Split, val_fraction: float, split_seed: int) -> "DataInfo":
        return cls(str(source), train.fingerprint(), val.fingerprint(), len(train), len(val), val_fraction, split_seed)


def checkpoint_metadata(
    spec: DetectorSpec,
    recipe: dict,
    data_info: DataInfo,
    weights: str,
    history: list,
    wall_time_s: float,
    device: str,
    earlier_stages: list[dict] = (),
    processes: int = 1,
) -> dict:
    """``wall_time_s`` and ``history`` cover every stage; ``earlier_stages`` describe the stages
    before this one (oldest first), each with its checkpoint's SHA-256, recipe, and training
    record (hardware and that stage's own wall time). ``device``: where this stage ran (rank 0's
    under torchrun), ``processes`` of them."""
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
        "data": asdict(data_info),
        "history": history,
        "earlier_stages": list(earlier_stages),
        "training": {"hardware": hardware(device), "device": device, "processes": processes, "wall_time_s": round(wall_time_s, 1)},
        "versions": library_versions(),
        "notes": spec.notes,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def held_out_split(metadata: dict) -> tuple[float, int]:
    """The validation split a checkpoint held out, as ``train_val_indices``'s fraction and seed
    (the defaults for checkpoints from before they were recorded)."""
    data = metadata.get("data") or {}
    return data.get("val_fraction", VAL_FRACTION), data.get("split_seed", SPLIT_SEED)


def require_held_out_split(checkpoint: str, metadata: dict, data_info: DataInfo, advice: str = "") -> None:
    """Refuse a checkpoint that held out another validation split than this run: this run's
    validation images would include ones it trained on."""
    fraction, seed = held_out_split(metadata)
    if (fraction, seed) != (data_info.val_fraction, data_info.split_seed):
        raise CheckpointError(f"{checkpoint} held out another validation split (fraction {fraction}, seed {seed}) than this run "
                              f"(fraction {data_info.val_fraction}, seed {data_info.split_seed}){advice}")


def with_new_fields(record: dict, kind: type) -> dict:
    """A recipe or preprocessing as a checkpoint recorded it (JSON), each field added to ``kind``
    since then filled with its default: what the code that wrote it did without the field. So
    that a checkpoint is not called another run's for a field it could not record; a field no
    longer known stays, and shows as a difference."""
    return {**json.loads(json.dumps(asdict(kind()))), **record}


def differences(saved: dict, wanted: dict, prefix: str = "") -> str:
    """Where two records (JSON-like dicts) differ, as ``key: saved -> wanted``, nested keys dotted."""
    parts = []
    for key in sorted(saved.keys() | wanted.keys()):
        old, new = saved.get(key, "(none)"), wanted.get(key, "(none)")
        if isinstance(old, dict) and isinstance(new, dict):
            parts.append(differences(old, new, f"{prefix}{key}."))
        elif old != new:
            parts.append(f"{prefix}{key}: {old} -> {new}")
    return "; ".join(p for p in parts if p)


def already_trained(spec: DetectorSpec, out_dir: Path, run: dict, recorded: Callable[[dict], dict]) -> bool:
    """Under ``--resume``: whether ``spec``'s checkpoint in ``out_dir`` is finished, by a run like
    this one, so that it is kept rather than trained again. ``run`` is what identifies this run
    (recipe, data...), ``recorded`` reads the same from a checkpoint's metadata. A finished
    checkpoint of another run is neither overwritten nor silently kept: CheckpointError."""
    path = out_dir / spec.checkpoint_file
    if not path.is_file():
        return False
    metadata = spec.stored_metadata(out_dir)
    if "threshold" not in metadata:  # cut short in its validation (before the final file was written once): redo
        return False
    # Through JSON, as the metadata is stored (tuples become lists).
    saved, wanted = json.loads(json.dumps(recorded(metadata))), json.loads(json.dumps(run))
    if saved != wanted:
        raise CheckpointError(f"{path} is finished, but by another recipe or data than this run's ({differences(saved, wanted)}): "
                              "delete it to train it again this way, or write this run elsewhere (--out)")
    if distributed.current().main:
        print(f"{spec.name}: already trained: {path}; delete it to train again", flush=True)
    return True


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
    """From the detector's uncalibrated P(FAKE) on ``val``: fit each calibration family on
    ``val`` alone and on ``val`` with the robustness suite's copies of a balanced sample of it
    (what uploads look like) at each weight of ``SUITE_SHARES``, keep the fit whose
    cross-validated errors come nearer both ECE targets, then choose the threshold and the
    unsure band on the calibrated validation probabilities, and record them with the validation
    figures and the suite's (so robustness, too, can be compared between candidates without the
    test split)."""
    sample = balanced_sample(val.labels, robustness_sample)
    labels = val.labels[sample]
    perturbed = perturb_all(val.images[sample])
    raw_perturbed = {p.name: detector.predict_proba_raw(batch)[:, FAKE] for p, batch in perturbed.items()}
    all_labels = np.concatenate([val.labels, *[labels] * len(perturbed)])
    all_fake = np.concatenate([raw_fake, *raw_perturbed.values()])
    is_copy = np.arange(len(all_labels)) >= len(val)
    # Folds of validation images; a perturbed copy is held out with the image it was made from.
    # Where some fold would leave a fit one class only (tiny smoke-run splits), the fits are
    # compared on the images they were fitted to instead.
    folds = CALIBRATION_FOLDS
    image_fold = np.random.default_rng(0).permutation(len(val)) % folds
    if any(len(np.unique(val.labels[image_fold != k])) < len(CLASSES) for k in range(folds)):
        folds, image_fold = 1, np.zeros(len(val), int)
    fold = np.concatenate([image_fold, *[image_fold[sample]] * len(perturbed)])

    def fit(family: type, share: float, rows: np.ndarray) -> Calibration:
        """``family`` fitted on ``rows``, where the copies make up ``share`` of the total weight."""
        clean, copies = rows & ~is_copy, rows & is_copy
        weights = np.where(is_copy, share / max(copies.sum(), 1), (1 - share) / clean.sum()) * rows.sum()
        used = rows & (weights > 0)
        return family.fit(all_labels[used], all_fake[used], weights[used])

    def held_out_eces(family: type, share: float) -> dict[str, float]:
        """ECE of each image's calibrated P from the fit on the other folds (pooled over folds;
        in-sample where there is one fold)."""
        calibrated = np.empty_like(all_fake)
        for k in range(folds):
            fitted_to = fold != k if folds > 1 else np.ones(len(fold), bool)  # one fold: in-sample
            calibrated[fold == k] = fit(family, share, fitted_to).apply(all_fake[fold == k])
        copies = calibrated[len(val):].reshape(len(perturbed), len(sample))
        return {
            "clean": expected_calibration_error(val.labels, calibrated[: len(val)]),
            "suite": float(np.mean([expected_calibration_error(labels, p) for p in copies])),
        }

    def describe(family: type, share: float) -> str:
        data = "validation split" if not share else f"validation split and the suite's copies of {len(sample):,} of its images, {share:.0%} of the weight"
        return f"{family.method}, on the {data}"

    options = {describe(family, share): (family, share) for family in FAMILIES for share in SUITE_SHARES}
    eces = {name: held_out_eces(*option) for name, option in options.items()}
    # The fit that comes closer to both targets: the larger of its two errors, each in units of its target.
    fitted_on = min(eces, key=lambda f: max(eces[f][k] / ECE_TARGETS[k] for k in ECE_TARGETS))
    calibration = fit(*options[fitted_on], np.ones(len(all_labels), bool))
    proba_fake = calibration.apply(raw_fake)
    threshold = best_threshold(val.labels, proba_fake)
    band = UnsureBand.choose(val.labels, proba_fake, threshold)
    figures = classification_figures(val.labels, proba_fake, threshold)
    detector.metadata["calibration"] = {
        **calibration.to_dict(),
        "fitted_on": fitted_on,
        "chosen_on": "validation split",
        "rule": f"of fits of each family on the clean validation split alone and with its perturbed copies at several weights, "
                f"the one whose larger {f'{folds}-fold held-out' if folds > 1 else 'in-sample'} ECE on the validation split (clean, or mean under the suite) "
                f"is the smaller in units of its target "
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
