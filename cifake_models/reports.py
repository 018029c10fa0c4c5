"""The JSON evaluation reports: loading them, whether they are of the shipped checkpoint, and
a recipe in words."""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import file_sha256
from .paths import report_dir_or_default
from .perturbations import TRAINING_RANGES
from .recipes import OPTIMIZERS

REEVALUATE = "run python -m train.evaluate"  # what writes (and rewrites) the reports


def describe_recipe(report: dict) -> str:
    """The training recipe of a report, in one line: the README's recipe table and the app use it.

    A checkpoint trained in stages (``python -m train --init-from``) lists them in order; mirror
    averaging at test time, where validation chose it, closes the line.
    """
    stages = [*(report.get("earlier_stages") or []), report]
    if len(stages) == 1:
        text = _describe_stage(report)
    else:
        text = " → ".join(f"stage {i}: {_describe_stage(stage)}" for i, stage in enumerate(stages, 1))
    if (report.get("test_time") or {}).get("mirror_average"):
        text += "; test: P averaged with the mirror image"
    return text


def _widened(pre: dict) -> str:
    """The upload-like changes whose strength range or weight differs from the default, e.g.
    " (blur 0.3-1.5; blur drawn 3x)"."""
    changed = [
        f"{family} {low:g}-{high:g}"
        for family, low, high in pre.get("upload_ranges", ())
        if TRAINING_RANGES.get(family) != (low, high)
    ]
    weighted = [f"{family} drawn {weight:g}x" for family, weight in pre.get("upload_weights", ())]
    parts = [", ".join(part) for part in (changed, weighted) if part]
    return f" ({'; '.join(parts)})" if parts else ""


def _describe_stage(report: dict) -> str:
    recipe, pre = report["recipe"], report.get("preprocessing")
    if report.get("members"):  # a committee
        return (
            f"logistic regression (C={recipe['C']:g}) on the logits of {', '.join(report['members'])}, "
            f"fitted on the validation split, one per subset of members"
        )
    if pre is None:  # the SVM
        sigmas = " and ".join(f"{sigma:g}" for sigma in recipe.get("smoothing") or ())
        upload_share = recipe.get("upload_augment")
        return (
            f"{'colour' if recipe['colour'] else 'grayscale'} HOG, {recipe['orientations']} orientations, "
            f"{' + '.join(f'{c}x{c}' for c in recipe['pixels_per_cell'])} cells, "
            f"{recipe['cells_per_block']}x{recipe['cells_per_block']} blocks"
            f"{f', of the image and of its copies smoothed at sigma {sigmas}' if sigmas else ''}; "
            f"RBF via {recipe['n_components']:,} Nystroem "
            f"landmarks + linear SVM (C={recipe['C']}, gamma {recipe['gamma_scale']:g}/n_features)"
            f"{f'; trained with {100 * upload_share:g}% upload-like changes{_widened(recipe)}' if upload_share else ''}"
            "; sigmoid calibrated on validation"
        )
    seen = recipe["epochs"] * (recipe["images_per_epoch"] or report["data"]["n_train"])
    crop = (
        f"RandomResizedCrop {pre['crop']} (scale {pre['crop_scale'][0]}-{pre['crop_scale'][1]})"
        if tuple(pre["crop_scale"]) != (1.0, 1.0) or pre["crop"] != 32
        else "no crop"
    )
    if recipe.get("schedule") == "onecycle":
        schedule = ", one-cycle"
    else:
        schedule = f", StepLR({recipe['step_size']}, {recipe['gamma']})" if recipe["step_size"] else ""
    decay = f", weight decay {recipe['weight_decay']:g}" if recipe.get("weight_decay") else ""
    smoothing = f", label smoothing {smooth:g}" if (smooth := recipe.get("label_smoothing")) else ""
    uploads = f" + {100 * p:g}% upload-like changes{_widened(pre)}" if (p := pre.get("upload_augment")) else ""
    bf16 = ", bf16 autocast" if recipe.get("precision") == "bf16" else ""
    averaged = f", weights averaged (EMA {ema:g})" if (ema := recipe.get("ema")) else ""
    distilled = (
        f", distilled from {(report.get('teacher') or {}).get('title', 'a teacher')} "
        f"(weight {recipe['distill_weight']:g}, T {recipe['distill_temperature']:g})"
        if recipe.get("distill_weight")
        else ""
    )
    return (
        f"{'grayscale' if pre['grayscale'] else 'RGB'} {pre['crop']}x{pre['crop']}; {crop}{uploads}"
        f"{f' + shift up to {shift} px (reflect pad)' if (shift := pre.get('translate')) else ''}"
        f"{' + h-flip' if pre['hflip'] else ''}; "
        f"{OPTIMIZERS[recipe['optimizer']].__name__} {recipe['lr']:g}{decay}{schedule}"
        f"{smoothing}{distilled}{averaged}{bf16}, batch {recipe['batch_size']}; {recipe['epochs']} epochs x "
        f"{recipe['images_per_epoch'] or report['data']['n_train']:,} images = {seen:,} images seen"
    )


def load_report(name: str, report_dir: str | Path | None = None) -> dict:
    """The evaluation report ``python -m train.evaluate`` wrote for detector ``name``, in
    ``report_dir`` (default ``$CIFAKE_REPORTS``, else ``assets/reports``)."""
    path = report_dir_or_default(report_dir) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation report {path}; run `python -m train.evaluate`")
    return json.loads(path.read_text())


def stale_report(report: dict, checkpoint: str | Path) -> str | None:
    """Why ``report`` does not describe the checkpoint file ``checkpoint``, or None where it does.

    ``train.evaluate`` records the SHA-256 of the file it evaluated; a checkpoint retrained,
    recalibrated (``train.revalidate``) or shipped (``train.choose``) since then has figures
    that no longer belong to it until the evaluation runs again."""
    recorded = (report.get("checkpoint") or {}).get("sha256")
    if recorded is None:
        return f"the report does not record which checkpoint it evaluated: {REEVALUATE}"
    if not Path(checkpoint).is_file():
        return None  # nothing to compare with: the page says the checkpoint is missing
    if file_sha256(checkpoint) != recorded:
        return f"the report's figures are from an earlier {Path(checkpoint).name}: {REEVALUATE}"
    return None
