"""Tiny CIFAKE data and tiny trained checkpoints, made by the tests themselves."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifake_models import list_detectors
from cifake_models.data import DEFAULT_DATA_DIRS, load_split, train_val_indices
from cifake_models.labels import CLASSES
from cifake_models.registry import get_spec
from train import evaluate
from train.committee_fit import fit_committee
from train.metadata import DataInfo
from train.svm_fit import fit_svm
from train.torch_fit import fit_torch

torch.set_num_threads(1)  # tiny models: threads only add overhead, and CI has 2 cores
SHARED_DATA = DEFAULT_DATA_DIRS[-1]  # ../shared/data/cifake beside the checkout


def synthetic_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """FAKE: smooth colour gradients; REAL: noisy textures; learnable by every detector."""
    if CLASSES[label] == "FAKE":
        ramp = np.linspace(0, 1, 32)
        base = np.outer(ramp, ramp)[..., None] * rng.uniform(80, 255, size=3)
        return np.clip(base + rng.normal(0, 4, (32, 32, 3)), 0, 255).astype(np.uint8)
    return rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


def write_tiny_cifake(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Write the same tiny CIFAKE twice: the Kaggle folders under ``root/kaggle`` and the
    packed ``.npz`` files (as in shared/data/cifake) under ``root/packed``."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        files, labels, names = [], [], []
        for label, class_name in enumerate(CLASSES):
            folder = root / "kaggle" / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                data = jpeg_bytes(synthetic_image(label, rng))
                name = f"{i} ({i % 10 + 1}).jpg" if i else f"{i}.jpg"
                (folder / name).write_bytes(data)
                files.append(np.frombuffer(data, np.uint8))
                labels.append(label)
                names.append(f"{split}/{class_name}/{name}")
        (root / "packed").mkdir(exist_ok=True)
        np.savez(
            root / "packed" / f"cifake-{split}.npz",
            jpeg=np.concatenate(files),
            jpeg_offsets=np.concatenate([[0], np.cumsum([len(f) for f in files])]).astype(np.int64),
            labels=np.asarray(labels, np.uint8),
            names=np.asarray(names),
            classes=np.asarray(CLASSES),
        )
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Root holding ``kaggle/`` and ``packed/`` copies of a 48-train, 16-test tiny CIFAKE."""
    return write_tiny_cifake(tmp_path_factory.mktemp("cifake"), {"train": 24, "test": 8})


def tiny_recipe(spec, **changes):
    """The registry's recipe cut to a few images and one epoch."""
    if spec.is_torch:
        return dataclasses.replace(spec.recipe, **{"epochs": 1, "batch_size": 8, **changes})
    return dataclasses.replace(spec.recipe, **{"n_components": 16, **changes})


def train_tiny(name: str, data_root: Path, out_dir: Path, resume: bool = False, on_epoch_end=None, **changes):
    spec = get_spec(name)
    split = load_split(data_root, "train")
    val_fraction, split_seed = 0.25, 0  # a quarter of the tiny train split: 6 validation images a class
    train_index, val_index = train_val_indices(split.labels, val_fraction, split_seed)
    train, val = split.subset(train_index), split.subset(val_index)
    data_info = DataInfo.of(data_root, train, val, val_fraction, split_seed)
    if spec.is_committee:
        return fit_committee(spec, val, spec.recipe, out_dir, data_info, resume=resume)
    if spec.is_torch:
        return fit_torch(
            spec,
            train,
            val,
            tiny_recipe(spec, **changes),
            out_dir,
            data_info,
            device="cpu",
            resume=resume,
            on_epoch_end=on_epoch_end,
        )
    return fit_svm(spec, train, val, tiny_recipe(spec, **changes), out_dir, data_info, resume=resume)


# After one tiny epoch (five steps) ResNet-50 gives every image the same P(FAKE), so it would ship
# in the tiny assets as a detector that learned nothing. In channels-last it was right on 10, 14
# and 16 of the 16 test images after three, four and five epochs: five learn the tiny task.
TINY_ASSET_CHANGES = {"resnet50": {"epochs": 5}}


@pytest.fixture(scope="session")
def tiny_assets(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """Checkpoints and evaluation reports for every registered detector, trained on tiny data.

    Returns ``{"checkpoints": dir, "reports": dir, "data": dir}``; the layout is that of assets/.
    """
    root = tmp_path_factory.mktemp("assets")
    checkpoints, reports = root / "checkpoints", root / "reports"
    for name in list_detectors():
        train_tiny(name, tiny_data / "packed", checkpoints, **TINY_ASSET_CHANGES.get(name, {}))
    assert (
        evaluate.main(
            ["--data", str(tiny_data / "packed"), "--checkpoints", str(checkpoints), "--reports", str(reports)]
        )
        == 0
    )
    return {"checkpoints": checkpoints, "reports": reports, "data": tiny_data / "packed"}


@pytest.fixture(scope="session")
def app_module(tiny_assets):
    """``app`` imported with $CIFAKE_CHECKPOINTS / $CIFAKE_REPORTS pointing at the tiny assets,
    so that its module-level ``demo`` loads those (quick) rather than assets/."""
    with pytest.MonkeyPatch.context() as patch:  # only while it imports: other tests read the defaults
        patch.setenv("CIFAKE_CHECKPOINTS", str(tiny_assets["checkpoints"]))
        patch.setenv("CIFAKE_REPORTS", str(tiny_assets["reports"]))
        module = importlib.import_module("app")
        assert module.demo is not None  # built on first use: here, on the tiny assets
    return module


def with_new_figures(report: dict) -> dict:
    """A copy of a tiny report holding, hand-made, the figures ``train.evaluate`` is gaining and
    the app reads (threshold sweep, reliability before and after calibration, accuracy against
    coverage, the unsure band's point), and a leak-free split whose numbers differ from the
    official split's (the tiny data's leak-free split removes nothing, so they would be equal)."""
    report = copy.deepcopy(report)
    report["test"]["threshold_sweep"] = {
        "threshold": [0.0, 0.25, 0.5, 0.75, 1.0],
        "fake_called_fake": [8, 8, 7, 4, 0],
        "real_called_fake": [8, 3, 1, 0, 0],
        "n_fake": 8,
        "n_real": 8,
    }
    report["test"]["reliability"] = {"p_fake_mean": [0.1, 0.45, 0.9], "fake_share": [0.0, 0.5, 1.0], "count": [6, 4, 6]}
    report["test"]["selective"] = {
        "confidence": [0.5, 0.75, 0.9],
        "coverage": [1.0, 0.75, 0.5],
        "accuracy": [0.875, 0.95, None],
    }
    report["calibration"] = {
        "test": {"reliability_before": {"p_fake_mean": [0.3, 0.6], "fake_share": [0.1, 0.9], "count": [8, 8]}}
    }
    report["unsure"] = {"test": {"coverage": 0.75, "accuracy": 0.95}}
    report["test_leak_free"] = {
        **report["test_leak_free"],
        "removed": 2,
        "n": 14,
        "accuracy": 11 / 14,
        "confusion_matrix": [[6, 2], [1, 5]],
        "roc_curve": {"fpr": [0.0, 0.2, 1.0], "tpr": [0.0, 0.75, 1.0]},
        "roc_auc": 0.8,
        "threshold_sweep": {
            "threshold": [0.0, 0.5, 1.0],
            "fake_called_fake": [8, 6, 0],
            "real_called_fake": [6, 1, 0],
            "n_fake": 8,
            "n_real": 6,
        },
    }
    return report


@pytest.fixture(scope="session")
def tiny_folder_report(tiny_assets, tmp_path_factory) -> Path:
    """``scripts.folder_agreement`` on the tiny test split: OUT/folder (its 16 images, a corrupt JPEG,
    a text file) and OUT/report (cifake-evaluate's report of it, checked against train.evaluate's figures)."""
    from scripts import folder_agreement

    out = tmp_path_factory.mktemp("folder-report")
    arguments = ["--n", "1000", "--out", str(out), "--data", str(tiny_assets["data"])]
    assert folder_agreement.main([*arguments, "--checkpoints", str(tiny_assets["checkpoints"])]) == 0
    return out
