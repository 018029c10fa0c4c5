"""Compare out-of-scope scores on native-32's penultimate features: ``python scripts/scope_candidates.py``.

Each is fitted on the training split (and, for outlier exposure, the tuning parts of the scope sets), cut on
validation as train.scope_fit cuts, and measured on the kept-aside parts against a balanced test sample. Prints the
markdown table of docs/scope.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from cifake_models import load_detector
from cifake_models.data import default_data_dir, load_split
from cifake_models.decision import ScopeRule
from cifake_models.robustness import balanced_sample
from cifake_models.scope import FEATURES_OF, ScopeModel, penultimate
from train.scope_fit import C_GRID, fit_data, fit_scope, logistic, moments, suite_copies
from train.scope_sets import drawing_set, photo_set


def evaluation_sets(seed: int, n_test: int) -> dict[str, np.ndarray]:
    test = load_split(default_data_dir(), "test")
    rows = balanced_sample(test.labels, n_test, seed)
    photos, drawings = photo_set(seed), drawing_set(seed)
    return {
        "test": test.images[rows],
        "test copies": suite_copies(test.images[rows[: n_test // 2]], seed + 3),
        "photos (kept)": photos.part("kept", False),
        "CIFAR-class photos (kept)": photos.part("kept", True),
        "non-photos (kept)": drawings.part("kept"),
    }


def row(name: str, scores: dict[str, np.ndarray]) -> str:
    cut = max(np.quantile(scores["val"], 0.95), np.quantile(scores["val copies"], 0.95))
    test = scores["test"]
    aurocs = [
        roc_auc_score(np.r_[np.zeros(len(test)), np.ones(len(s))], np.r_[test, s])
        for s in (scores["photos (kept)"], scores["CIFAR-class photos (kept)"], scores["non-photos (kept)"])
    ]
    flagged = [np.mean(scores[k] > cut) for k in ("test", "test copies", "photos (kept)", "non-photos (kept)")]
    cells = [f"{a:.3f}" for a in aurocs] + [f"{f:.1%}" for f in flagged]
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-images", type=int, default=10000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    detector = load_detector(FEATURES_OF)
    data = fit_data(default_data_dir(), args.fit_images, 2000, args.seed)
    images = {"val": data.val, "val copies": data.val_copies, **evaluation_sets(args.seed, args.test_images)}
    features = {k: penultimate(detector, v) for k, v in images.items()}
    train = penultimate(detector, data.train.images)
    mean, std, class_means, precision = moments(train, data.train.labels)
    maha = ScopeModel(mean, std, class_means, precision, np.zeros(0), np.ones(0), np.zeros(0), 0.0, ScopeRule(0, 0), {})
    print(
        "| score | AUROC photos | AUROC CIFAR-class photos | AUROC non-photos | test flagged | test copies flagged "
        "| photos flagged | non-photos flagged |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    print(row("Mahalanobis (Lee et al. 2018)", {k: maha.mahalanobis((f - mean) / std) for k, f in features.items()}))
    unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)  # noqa: E731
    neighbours = NearestNeighbors(n_neighbors=50).fit(unit(train))
    for k in (1, 10, 50):
        distances = {n: neighbours.kneighbors(unit(f), k)[0][:, -1] for n, f in features.items()}
        print(row(f"kNN, k = {k} (Sun et al. 2022)", distances))
    with torch.inference_mode():
        logits = {k: detector.module[-1](torch.as_tensor(f, dtype=torch.float32)).numpy() for k, f in features.items()}
    print(row("energy (Liu et al. 2020)", {k: -np.log(np.exp(v).sum(1)) for k, v in logits.items()}))
    inside = (np.r_[train, penultimate(detector, data.train_copies)] - mean) / std
    outliers = (penultimate(detector, data.outliers) - mean) / std
    for c in C_GRID:
        model = logistic(inside, outliers, c)
        print(
            row(
                f"outlier exposure, features only, C = {c}",
                {k: model.decision_function((f - mean) / std) for k, f in features.items()},
            )
        )
    shipped = fit_scope(detector, data, 0.95, "")
    print(
        row(
            f"shipped: features + pixel statistics + Mahalanobis, C = {shipped.metadata['regularisation_C']} "
            "(chosen by grouped cross-validation)",
            {k: shipped.score(f, images[k]) for k, f in features.items()},
        )
    )


if __name__ == "__main__":
    main()
