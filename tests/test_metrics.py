import numpy as np
import pytest
from sklearn import metrics

from cifake_models.labels import CLASSES
from cifake_models.metrics import best_threshold, classification_figures

FAKE, REAL = CLASSES.index("FAKE"), CLASSES.index("REAL")


def test_figures_on_a_hand_computed_example():
    labels = np.array([FAKE, FAKE, FAKE, REAL, REAL, REAL])
    proba_fake = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
    figures = classification_figures(labels, proba_fake, threshold=0.5)
    # predicted FAKE, FAKE, REAL, FAKE, REAL, REAL
    assert figures["confusion_matrix"] == [[2, 1], [1, 2]]
    assert figures["accuracy"] == pytest.approx(4 / 6)
    assert figures["per_class"]["FAKE"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    # FAKE scores beat REAL scores in 8 of the 9 pairs
    assert figures["roc_auc"] == pytest.approx(8 / 9)


def test_figures_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    proba_fake = np.clip(0.35 * (labels == FAKE) + rng.uniform(0, 0.65, 500), 0, 1)
    figures = classification_figures(labels, proba_fake, threshold=0.42)
    predicted = np.where(proba_fake >= 0.42, FAKE, REAL)
    assert figures["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    assert figures["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels == FAKE, proba_fake))
    assert figures["pr_auc"] == pytest.approx(metrics.average_precision_score(labels == FAKE, proba_fake))
    assert figures["per_class"]["REAL"]["f1"] == pytest.approx(metrics.f1_score(labels, predicted, pos_label=REAL))
    assert figures["confusion_matrix"] == metrics.confusion_matrix(labels, predicted, labels=[FAKE, REAL]).tolist()
    fpr, tpr = figures["roc_curve"]["fpr"], figures["roc_curve"]["tpr"]
    assert fpr[0] == 0 and tpr[-1] == 1 and len(fpr) <= 200
    assert np.trapezoid(tpr, fpr) == pytest.approx(figures["roc_auc"], abs=0.01)


def test_figures_with_a_single_class_have_no_auc():
    figures = classification_figures(np.array([REAL, REAL]), np.array([0.2, 0.7]), 0.5)
    assert figures["roc_auc"] is None and figures["accuracy"] == 0.5


def test_best_threshold_maximises_accuracy():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    proba_fake = np.clip(0.2 * (labels == FAKE) + rng.uniform(0, 0.8, 300), 0, 1)
    chosen = best_threshold(labels, proba_fake)
    accuracy = lambda t: np.mean(np.where(proba_fake >= t, FAKE, REAL) == labels)  # noqa: E731
    assert accuracy(chosen) == max(accuracy(t) for t in np.concatenate([proba_fake, [1.01]]))
