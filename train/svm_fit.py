"""Fit the HOG + SVM detector on the whole train split and calibrate it on validation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from cifake_models.data import Split
from cifake_models.detector import SklearnDetector
from cifake_models.registry import DetectorSpec
from cifake_models.svm import SvmRecipe, fold_nystroem

from .common import checkpoint_metadata, record_validation


def _flat(split: Split) -> np.ndarray:
    return split.images.reshape(len(split), -1)


def fit_svm(spec: DetectorSpec, train: Split, val: Split, recipe: SvmRecipe, out_dir: Path, data_info: dict) -> SklearnDetector:
    started = time.perf_counter()
    pipeline = recipe.build()
    print(f"{spec.name}: fitting on {len(train)} images ({recipe})", flush=True)
    pipeline.fit(_flat(train), train.labels)
    pipeline = fold_nystroem(pipeline)
    fitted = time.perf_counter() - started
    print(f"{spec.name}: fitted in {fitted:.0f}s; calibrating on {len(val)} validation images", flush=True)
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid").fit(_flat(val), val.labels)
    detector = SklearnDetector(spec.name, calibrated)
    detector.metadata = checkpoint_metadata(
        spec, recipe.to_dict(), data_info, "none", history=[], wall_time_s=time.perf_counter() - started, device="cpu"
    )
    figures = record_validation(detector, val)
    detector.save(out_dir / spec.checkpoint_file)
    print(f"{spec.name}: validation accuracy {figures['accuracy']:.4f}, ROC-AUC {figures['roc_auc']:.4f}", flush=True)
    return spec.load(out_dir)
