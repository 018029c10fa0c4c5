"""How close is the Nystroem approximation to exact libsvm? ``python scripts/svm_kernel_check.py``

Fits the registry's HOG + SVM recipe two ways on one common subset of the train split (exact
``SVC`` with the same RBF kernel, and Nystroem + the linear SVM at several ranks) and scores
both on validation images. The test split is not touched.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC

from cifake_models import get_spec
from cifake_models.data import load_split, train_val_indices
from cifake_models.svm import build_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--train", type=int, default=10_000, help="common training subset size")
    parser.add_argument("--val", type=int, default=4_000, help="validation images scored")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1000, 2000, 4000])
    args = parser.parse_args()
    split = load_split(args.data, "train")
    train_index, val_index = train_val_indices(split.labels)  # the trainer's default validation split
    rng = np.random.default_rng(0)
    train = split.subset(np.sort(rng.choice(train_index, args.train, replace=False)))
    val = split.subset(np.sort(rng.choice(val_index, args.val, replace=False)))
    recipe = get_spec("hog_svm").recipe
    pipeline = build_pipeline(recipe)
    features = pipeline[:2].fit(train.images.reshape(len(train), -1))  # HOG + scaler
    x_train = features.transform(train.images.reshape(len(train), -1))
    x_val = features.transform(val.images.reshape(len(val), -1))
    gamma = pipeline.named_steps["rbf"].gamma

    def score(name: str, model, started: float) -> np.ndarray:
        decision = model.decision_function(x_val)
        accuracy = np.mean((decision > 0) == val.labels)
        print(
            f"| {name} | {accuracy:.4f} | {roc_auc_score(val.labels, decision):.4f} "
            f"| {time.perf_counter() - started:.0f} s |",
            flush=True,
        )
        return decision > 0

    print(
        f"{len(train)} train / {len(val)} validation images, HOG {x_train.shape[1]} features, "
        f"gamma {gamma:.5f}, C {recipe.C}\n"
    )
    print("| model | val accuracy | val ROC-AUC | fit time |\n| --- | ---: | ---: | ---: |")
    started = time.perf_counter()
    exact = SVC(C=recipe.C, gamma=gamma, kernel="rbf", cache_size=2000).fit(x_train, train.labels)
    exact_votes = score(f"exact SVC ({exact.n_support_.sum()} support vectors)", exact, started)
    for rank in args.ranks:
        started = time.perf_counter()
        approx = clone(pipeline[2:]).set_params(rbf__n_components=rank).fit(x_train, train.labels)
        votes = score(f"Nystroem {rank} + linear SVM", approx, started)
        print(f"|   agreement with exact SVC | {np.mean(votes == exact_votes):.4f} | | |")


if __name__ == "__main__":
    main()
