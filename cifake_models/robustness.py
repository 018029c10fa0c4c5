"""A detector scored under the perturbation suite: accuracy, ROC-AUC and calibration per
perturbation, with the mean and the worst case. ``train.evaluate`` runs it on the test split,
training's validation record on the validation split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .metrics import classification_figures
from .perturbations import SUITE, Perturbation

ROBUSTNESS_SAMPLE = 2000  # images per perturbation, balanced; enough for about +-0.5 points


@dataclass(frozen=True)
class PerturbedScore:
    """One perturbation's figures, each image judged at the detector's own threshold."""

    perturbation: str
    family: str
    strength: float
    accuracy: float
    roc_auc: float | None
    ece: float


@dataclass(frozen=True)
class Robustness:
    """The whole suite on one sample: figures per perturbation, and clean ones on the same images."""

    n: int
    sample_seed: int
    clean_accuracy: float
    clean_roc_auc: float | None
    scores: tuple[PerturbedScore, ...]

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean([s.accuracy for s in self.scores]))

    @property
    def worst(self) -> PerturbedScore:
        return min(self.scores, key=lambda s: s.accuracy)

    def to_dict(self) -> dict:
        return {**asdict(self), "mean_accuracy": self.mean_accuracy, "worst": asdict(self.worst)}

    @classmethod
    def from_dict(cls, data: dict) -> Robustness:
        scores = tuple(PerturbedScore(**s) for s in data["scores"])
        return cls(data["n"], data["sample_seed"], data["clean_accuracy"], data["clean_roc_auc"], scores)


def balanced_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` images (or all, if fewer), half of each class where possible."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    chosen = []
    for i, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        share = n // len(classes) + (i < n % len(classes))
        chosen.append(rng.choice(members, min(share, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def perturb_all(images: np.ndarray, suite: Sequence[Perturbation] = SUITE) -> dict[Perturbation, np.ndarray]:
    """Every perturbation of the suite applied to ``images``: computed once, shared by all detectors."""
    return {p: p.apply(images) for p in suite}


def score_suite(
    predict_fake: Callable[[str, np.ndarray], np.ndarray],
    threshold: float,
    images: np.ndarray,
    labels: np.ndarray,
    perturbed: dict[Perturbation, np.ndarray],
    sample_seed: int = 0,
) -> Robustness:
    """``predict_fake(key, batch)`` gives P(FAKE) for a uint8 batch, ``key`` naming it ("clean" or
    the perturbation's name) so a caller can reuse what it computed; ``perturbed`` comes from
    :func:`perturb_all`."""
    clean = classification_figures(labels, predict_fake("clean", images), threshold)
    scores = []
    for perturbation, batch in perturbed.items():
        figures = classification_figures(labels, predict_fake(perturbation.name, batch), threshold)
        scores.append(
            PerturbedScore(
                perturbation.name,
                perturbation.family,
                perturbation.strength,
                figures["accuracy"],
                figures["roc_auc"],
                figures["ece"],
            )
        )
    return Robustness(len(labels), sample_seed, clean["accuracy"], clean["roc_auc"], tuple(scores))
