"""Evaluation figures, as the paper reports them: accuracy, ROC and PR curves, calibration.

FAKE is the positive class (what a detector looks for) for ROC and PR curves.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics

from .calibration import called_fake
from .labels import CLASSES, FAKE

CURVE_POINTS = 200  # enough for a smooth plot, small enough for a JSON report


def percent(fraction: float) -> str:
    """An accuracy as the README tables and the evaluate and revalidate commands print it, digit for digit."""
    return f"{100 * fraction:.2f}%"


def classification_figures(labels: np.ndarray, proba_fake: np.ndarray, threshold: float) -> dict:
    """Accuracy, per-class precision/recall/F1, ROC-AUC, PR-AUC, confusion matrix and curves.

    ``labels`` index :data:`CLASSES`; an image is called FAKE when ``proba_fake >= threshold``.
    """
    labels = np.asarray(labels)
    proba_fake = np.asarray(proba_fake, dtype=np.float64)
    is_fake = (labels == FAKE).astype(int)
    predicted = np.where(called_fake(proba_fake, threshold), FAKE, 1 - FAKE)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        labels, predicted, labels=range(len(CLASSES)), zero_division=0
    )
    both_classes = 0 < is_fake.sum() < len(is_fake)  # curves and AUCs need both
    fpr, tpr, _ = metrics.roc_curve(is_fake, proba_fake) if both_classes else (np.zeros(0),) * 3
    pr_precision, pr_recall, _ = (
        metrics.precision_recall_curve(is_fake, proba_fake) if both_classes else (np.zeros(0),) * 3
    )
    roc_keep = _thin(len(fpr))
    pr_keep = _thin(len(pr_recall))
    return {
        "n": len(labels),
        "threshold": float(threshold),
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(CLASSES)
        },
        "roc_auc": float(metrics.roc_auc_score(is_fake, proba_fake)) if both_classes else None,
        "ece": expected_calibration_error(labels, proba_fake),
        "brier": brier_score(labels, proba_fake) if len(labels) else None,
        "pr_auc": float(metrics.average_precision_score(is_fake, proba_fake)) if both_classes else None,
        # rows: true class, columns: predicted class, both in CLASSES order
        "confusion_matrix": metrics.confusion_matrix(labels, predicted, labels=range(len(CLASSES))).tolist(),
        "roc_curve": {"fpr": fpr[roc_keep].tolist(), "tpr": tpr[roc_keep].tolist()},
        "pr_curve": {"recall": pr_recall[pr_keep].tolist(), "precision": pr_precision[pr_keep].tolist()},
        "reliability": reliability(labels, proba_fake),
        "threshold_sweep": threshold_sweep(labels, proba_fake, threshold),
    }


def reliability(labels: np.ndarray, proba_fake: np.ndarray, bins: int = 15) -> dict:
    """The reliability diagram's points: per non-empty equal-width bin of P(FAKE), the mean
    P(FAKE) and the share of FAKE images in it (on the diagonal when calibrated)."""
    labels, proba_fake = np.asarray(labels), np.asarray(proba_fake, dtype=np.float64)
    which = np.minimum((proba_fake * bins).astype(int), bins - 1)
    present = np.unique(which)
    return {
        "p_fake_mean": [float(proba_fake[which == b].mean()) for b in present],
        "fake_share": [float((labels[which == b] == FAKE).mean()) for b in present],
        "count": [int((which == b).sum()) for b in present],
    }


def threshold_sweep(labels: np.ndarray, proba_fake: np.ndarray, threshold: float, step: float = 0.005) -> dict:
    """How many FAKE and REAL images are called FAKE at each cut from 0 to 1 (and at the
    detector's own): a confusion matrix for any threshold, for the threshold explorer."""
    labels, proba_fake = np.asarray(labels), np.asarray(proba_fake, dtype=np.float64)
    cuts = np.union1d(np.round(np.arange(0, 1 + step / 2, step), 6), [threshold])
    fake_scores, real_scores = np.sort(proba_fake[labels == FAKE]), np.sort(proba_fake[labels != FAKE])

    def reaching(
        sorted_scores: np.ndarray,
    ) -> list[int]:  # how many are called FAKE at each cut (called_fake, for every cut at once)
        return (len(sorted_scores) - np.searchsorted(sorted_scores, cuts, side="left")).tolist()

    return {
        "threshold": cuts.tolist(),
        "fake_called_fake": reaching(fake_scores),
        "real_called_fake": reaching(real_scores),
        "n_fake": len(fake_scores),
        "n_real": len(real_scores),
    }


def brier_score(labels: np.ndarray, proba_fake: np.ndarray) -> float:
    """Mean squared error of P(FAKE) against the 0/1 truth (Brier 1950)."""
    return float(np.mean((np.asarray(proba_fake, dtype=np.float64) - (np.asarray(labels) == FAKE)) ** 2))


def expected_calibration_error(labels: np.ndarray, proba_fake: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the predicted class's probability (Guo et al. 2017): the
    gap between confidence and accuracy in ``bins`` equal-width bins over [0, 1], weighted by
    how many images fall in each. The predicted class is the one above 0.5, whatever the
    decision threshold: ECE asks whether the probabilities mean what they say."""
    labels, proba_fake = np.asarray(labels), np.asarray(proba_fake, dtype=np.float64)
    if not len(labels):
        return 0.0
    says_fake = proba_fake >= 0.5
    confidence = np.where(says_fake, proba_fake, 1 - proba_fake)
    correct = says_fake == (labels == FAKE)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = 0.0
    for b in np.unique(which):
        members = which == b
        gap += members.sum() * abs(confidence[members].mean() - correct[members].mean())
    return float(gap / len(labels))


def _thin(n: int) -> np.ndarray:
    """At most CURVE_POINTS indices spread over ``range(n)``, always keeping both ends."""
    return np.unique(np.linspace(0, n - 1, min(n, CURVE_POINTS)).round().astype(int)) if n else np.zeros(0, int)


def best_threshold(labels: np.ndarray, proba_fake: np.ndarray) -> float:
    """The P(FAKE) cut that maximises accuracy; called on the validation split only."""
    order = np.argsort(proba_fake)
    scores, is_fake = np.asarray(proba_fake)[order], (np.asarray(labels)[order] == FAKE)
    # Cutting before position i calls items i.. FAKE: correct = REALs below + FAKEs from i on.
    real_below = np.concatenate([[0], np.cumsum(~is_fake)])
    fake_from = is_fake.sum() - np.concatenate([[0], np.cumsum(is_fake)])
    correct = real_below + fake_from
    # Only cut between distinct scores; a cut at a tie cannot be expressed as a threshold.
    valid = np.concatenate([[True], scores[1:] != scores[:-1], [True]])
    i = int(np.argmax(np.where(valid, correct, -1)))
    if i == 0:
        return float(scores[0]) if len(scores) else 0.5
    if i == len(scores):
        return float(np.nextafter(scores[-1], np.inf))
    return float((scores[i - 1] + scores[i]) / 2)
