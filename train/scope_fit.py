"""Fit the out-of-scope score: ``python -m train.scope_fit`` writes <checkpoints>/scope.safetensors.

In-scope images are train-split images and their robustness-suite copies; out-of-scope ones are the tuning parts
of the scope sets (train.scope_sets). The regularisation is chosen by cross-validation grouped by source, and the
cut on the validation split so that ``--share`` of its images, and of their suite copies, stay in scope.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

from cifake_models import CHECKPOINT_DIR, get_spec, load_detector
from cifake_models.checkpoint import CheckpointError, file_sha256
from cifake_models.data import Split, default_data_dir, load_split, train_val_indices
from cifake_models.decision import ScopeRule
from cifake_models.perturbations import SUITE
from cifake_models.scope import FEATURES_OF, SCOPE_FILE, ScopeModel, penultimate, pixel_statistics

from .commands import THREADS_HELP, limit_threads
from .scope_sets import drawing_set, photo_set

C_GRID = (0.01, 0.1, 1.0)
RIDGE = 1e-3  # added to the covariance's diagonal (standardised features) before inverting it


def suite_copies(images: np.ndarray, seed: int) -> np.ndarray:
    """Each image through one perturbation of the robustness suite, drawn at random (seeded)."""
    which = np.random.default_rng(seed).integers(0, len(SUITE), len(images))
    return np.stack([SUITE[w].apply(image[None])[0] for w, image in zip(which, images)]) if len(images) else images


@dataclass(frozen=True)
class FitData:
    """The images the score is fitted and cut on."""

    train: Split  # clean in-scope images (train split, validation held out)
    train_copies: np.ndarray
    val: np.ndarray
    val_copies: np.ndarray
    outliers: np.ndarray  # tuning parts of the scope sets
    outlier_groups: np.ndarray  # their source (photo) or kind (generated image)


def fit_data(data_dir: Path | None, n_fit: int, n_val: int, seed: int) -> FitData:
    train = load_split(data_dir, "train")
    fit_rows, val_rows = train_val_indices(train.labels)
    rng = np.random.default_rng(seed)
    fit_rows, val_rows = rng.permutation(fit_rows), rng.permutation(val_rows)
    n_copies = n_fit // 5
    photos, drawings = photo_set(seed), drawing_set(seed)
    tuning = [(s.images[s.parts == "tuning"], s.sources[s.parts == "tuning"]) for s in (photos, drawings)]
    return FitData(
        train.subset(np.sort(fit_rows[:n_fit])),
        suite_copies(train.images[fit_rows[n_fit : n_fit + n_copies]], seed + 1),
        train.images[val_rows[:n_val]],
        suite_copies(train.images[val_rows[n_val : 2 * n_val]], seed + 2),
        np.concatenate([t[0] for t in tuning]),
        np.concatenate([t[1] for t in tuning]),
    )


def moments(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Standardisation, class means and the shared covariance's inverse, from the training features."""
    mean, std = features.mean(0), features.std(0) + 1e-6
    z = (features - mean) / std
    means = np.stack([z[labels == c].mean(0) for c in np.unique(labels)])
    centred = np.concatenate([z[labels == c] - means[i] for i, c in enumerate(np.unique(labels))])
    precision = np.linalg.inv(np.cov(centred.T) + RIDGE * np.eye(z.shape[1]))
    return mean, std, means, precision


def logistic(inputs: np.ndarray, outliers: np.ndarray, c: float) -> LogisticRegression:
    """Outliers weighed as much, in all, as the in-scope images."""
    x = np.r_[inputs, outliers]
    y = np.r_[np.zeros(len(inputs)), np.ones(len(outliers))]
    weight = np.r_[np.ones(len(inputs)), np.full(len(outliers), len(inputs) / len(outliers))]
    return LogisticRegression(C=c, max_iter=5000).fit(x, y, sample_weight=weight)


def choose_c(inputs: np.ndarray, held: np.ndarray, outliers: np.ndarray, groups: np.ndarray) -> tuple[float, dict]:
    """The C whose held-out sources score the best mean AUROC against ``held`` (validation) images."""
    folds = list(GroupKFold(n_splits=5).split(outliers, groups=groups))
    aurocs = {}
    for c in C_GRID:
        scores = []
        for fit_rows, test_rows in folds:
            model = logistic(inputs, outliers[fit_rows], c)
            s = model.decision_function(np.r_[held, outliers[test_rows]])
            scores.append(roc_auc_score(np.r_[np.zeros(len(held)), np.ones(len(test_rows))], s))
        aurocs[c] = float(np.mean(scores))
    return max(aurocs, key=aurocs.get), aurocs


def fit_scope(detector, data: FitData, share: float, checkpoint_sha256: str) -> ScopeModel:
    features = {
        k: penultimate(detector, v)
        for k, v in {
            "train": data.train.images,
            "copies": data.train_copies,
            "val": data.val,
            "val_copies": data.val_copies,
            "outliers": data.outliers,
        }.items()
    }
    stats = pixel_statistics(np.r_[data.train.images, data.train_copies])
    mean, std, class_means, precision = moments(features["train"], data.train.labels)
    partial = ScopeModel(
        mean,
        std,
        class_means,
        precision,
        stats.mean(0),
        stats.std(0) + 1e-6,
        np.zeros(0),
        0.0,
        ScopeRule(np.inf, share),
        {},
    )
    images = {
        "train": data.train.images,
        "copies": data.train_copies,
        "val": data.val,
        "val_copies": data.val_copies,
        "outliers": data.outliers,
    }
    inputs = {k: partial.inputs(features[k], images[k]) for k in images}
    in_scope = np.r_[inputs["train"], inputs["copies"]]
    c, cv = choose_c(in_scope, np.r_[inputs["val"], inputs["val_copies"]], inputs["outliers"], data.outlier_groups)
    model = logistic(in_scope, inputs["outliers"], c)
    weights, bias = model.coef_[0], float(model.intercept_[0])
    cut = float(max(np.quantile(inputs[k] @ weights + bias, share) for k in ("val", "val_copies")))
    metadata = {
        "kind": "scope",
        "features_of": FEATURES_OF,
        "checkpoint_sha256": checkpoint_sha256,
        "method": "logistic outlier exposure on penultimate features, pixel statistics and Mahalanobis distance",
        "regularisation_C": c,
        "cross_validated_auroc": {str(k): v for k, v in cv.items()},
        "fitted_on": {
            "train_images": len(data.train),
            "train_fingerprint": data.train.fingerprint(),
            "train_suite_copies": len(data.train_copies),
            "validation_images": len(data.val),
            "validation_suite_copies": len(data.val_copies),
            "outliers": len(data.outliers),
            "outlier_sources": sorted(set(data.outlier_groups.tolist())),
            "scope_sets": "tuning parts only",
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return ScopeModel(
        mean,
        std,
        class_means,
        precision,
        partial.stat_mean,
        partial.stat_std,
        weights,
        bias,
        ScopeRule(cut, share),
        metadata,
    )


@dataclass(frozen=True)
class ScopeOptions:
    """How a scope file is fitted (``python -m train.scope_fit``'s options), recorded in it as ``options``."""

    share: float = 0.95  # of validation images, and of their suite copies, kept in scope
    fit_images: int = 10000  # train-split images fitted on
    val_images: int = 2000  # validation images (and as many copies) cut on
    seed: int = 0

    @classmethod
    def recorded(cls, metadata: dict) -> ScopeOptions:
        """The options a scope file's ``metadata`` records; for a file written before they were, its
        rule's share and its sizes, and the default seed (such a file records none)."""
        if "options" in metadata:
            return cls(**metadata["options"])
        fitted = metadata["fitted_on"]
        return cls(metadata["rule"]["target_share"], fitted["train_images"], fitted["validation_images"])


def features_sha256(checkpoints: Path) -> str:
    """The SHA-256 of the checkpoint in ``checkpoints`` whose features the score reads."""
    return file_sha256(checkpoints / get_spec(FEATURES_OF).checkpoint_file)


def already_fitted(path: Path, checkpoints: Path, options: ScopeOptions) -> bool:
    """Whether ``path`` holds a scope score fitted with ``options`` on the native-32 in ``checkpoints``."""
    try:
        metadata = ScopeModel.load(path).metadata
    except (CheckpointError, FileNotFoundError):
        return False
    return (
        "options" in metadata
        and ScopeOptions.recorded(metadata) == options
        and metadata.get("checkpoint_sha256") == features_sha256(checkpoints)
    )


def fit(
    checkpoints: Path, data_dir: Path, options: ScopeOptions, out: Path | None = None, record: dict | None = None
) -> tuple[ScopeModel, Path]:
    """Fit the score on the native-32 in ``checkpoints`` and write <out>/scope.safetensors (default
    ``checkpoints``), recording ``options`` (and ``record``, more metadata); returns it and its path."""
    detector = load_detector(FEATURES_OF, checkpoints)
    data = fit_data(data_dir, options.fit_images, options.val_images, options.seed)
    model = fit_scope(detector, data, options.share, features_sha256(checkpoints))
    model = dataclasses.replace(
        model, metadata={**model.metadata, "options": dataclasses.asdict(options), **(record or {})}
    )
    return model, model.save((out or checkpoints) / SCOPE_FILE)


def main(argv: list[str] | None = None) -> int:
    defaults = ScopeOptions()
    parser = argparse.ArgumentParser(prog="python -m train.scope_fit", description=__doc__)
    parser.add_argument("--data", type=Path, help="CIFAKE folder (default: as train)")
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINT_DIR, help="default: %(default)s")
    parser.add_argument("--out", type=Path, help="folder to write scope.safetensors to (default: --checkpoints)")
    parser.add_argument("--share", type=float, default=defaults.share, help="share of validation images kept in scope")
    parser.add_argument("--fit-images", type=int, default=defaults.fit_images, help="train-split images fitted on")
    parser.add_argument(
        "--val-images", type=int, default=defaults.val_images, help="validation images (and as many copies) cut on"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    options = ScopeOptions(args.share, args.fit_images, args.val_images, args.seed)
    model, path = fit(args.checkpoints, args.data or default_data_dir(), options, args.out)
    print(
        f"{path}: C {model.metadata['regularisation_C']}, cut {model.rule.cut:.4f} "
        f"({args.share:.0%} of validation images and of their suite copies in scope)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
