"""Fit the HOG + SVM detector on the whole train split and calibrate it on validation."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from cifake_models.data import Split
from cifake_models.detector import SklearnDetector
from cifake_models.perturbations import random_uploads, ranges_of, weights_of
from cifake_models.recipes import SvmRecipe
from cifake_models.registry import DetectorSpec
from cifake_models.svm import build_pipeline, fold_nystroem

from . import lineage
from .metadata import DataInfo, already_trained, checkpoint_metadata, with_new_fields
from .validation import record_validation

log = logging.getLogger(__name__)


def _flat(split: Split) -> np.ndarray:
    return split.images.reshape(len(split), -1)


def upload_augmented(train: Split, recipe: SvmRecipe) -> Split:
    """``train`` with ``recipe.upload_augment`` of its images replaced by one upload-like change
    each (seeded by the recipe's seed), as the networks' training draws them."""
    if not recipe.upload_augment:
        return train
    generator = torch.Generator().manual_seed(recipe.seed)
    changed = random_uploads(
        torch.as_tensor(train.images),
        recipe.upload_augment,
        generator,
        ranges_of(recipe.upload_ranges),
        weights_of(recipe.upload_weights),
    )
    return dataclasses.replace(train, images=changed.numpy())


def fit_svm(
    spec: DetectorSpec,
    train: Split,
    val: Split,
    recipe: SvmRecipe,
    out_dir: Path,
    data_info: DataInfo,
    resume: bool = False,
) -> SklearnDetector:
    """``resume``: keep a checkpoint in ``out_dir`` already fitted this way (``common.already_trained``)."""
    run = {"recipe": recipe.to_dict(), "data": data_info.train_fingerprint}
    if resume and already_trained(
        spec,
        out_dir,
        run,
        lambda metadata: {
            "recipe": with_new_fields(metadata["recipe"], SvmRecipe),
            "data": metadata["data"]["train_fingerprint"],
        },
    ):
        return spec.load(out_dir)
    started = time.perf_counter()
    pipeline = build_pipeline(recipe)
    log.info(f"{spec.name}: fitting on {len(train)} images ({recipe})")
    train = upload_augmented(train, recipe)
    features = pipeline[:2].fit_transform(_flat(train))  # HOG, scaler
    rbf = pipeline.named_steps["rbf"].fit(features)
    # Nystroem features in float32, a chunk at a time: 90,000 x 10,000 of them take 3.6 GB.
    rbf.normalization_ = rbf.normalization_.astype(np.float32)
    mapped = np.concatenate([rbf.transform(chunk) for chunk in np.array_split(features, max(1, len(features) // 5000))])
    log.info(f"{spec.name}: {mapped.shape[1]} Nystroem features in {time.perf_counter() - started:.0f}s")
    pipeline.named_steps["svm"].fit(mapped, train.labels)
    del mapped
    pipeline = fold_nystroem(pipeline)
    fitted = time.perf_counter() - started
    log.info(f"{spec.name}: fitted in {fitted:.0f}s; calibrating on {len(val)} validation images")
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid").fit(_flat(val), val.labels)
    detector = SklearnDetector(spec.name, calibrated)
    detector.metadata = checkpoint_metadata(
        spec, recipe.to_dict(), data_info, "none", history=[], wall_time_s=time.perf_counter() - started, device="cpu"
    )
    detector.metadata["lineage"] = lineage.record(detector.metadata, {})
    figures = record_validation(detector, val)
    detector.save(out_dir / spec.checkpoint_file)
    log.info(f"{spec.name}: validation accuracy {figures['accuracy']:.4f}, ROC-AUC {figures['roc_auc']:.4f}")
    return spec.load(out_dir)
