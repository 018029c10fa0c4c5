"""Probabilities that mean what they say, and an honest "unsure": both chosen on validation.

A :data:`Calibration` (:class:`BetaCalibration` or :class:`IsotonicCalibration`, both increasing)
maps a detector's P(FAKE) to a calibrated one; :class:`UnsureBand` is where it says UNSURE.
Why these families and how one is chosen: docs/layout.md (design notes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .labels import FAKE

TARGET_ACCURACY = 0.99  # on the images a detector decides, on validation
# Expected calibration error to aim for on CIFAKE's own images and, on average, on the suite's changed copies.
ECE_TARGETS = {"clean": 0.01, "suite": 0.03}
# The perturbed copies' share of the weight in each candidate fit (0: the clean validation split alone).
SUITE_SHARES = (0.0, 0.25, 0.5, 0.75)
CONFIDENCE_GRID = np.round(np.arange(0.5, 1.0, 0.0025), 4)  # candidate confidence levels for the band
LOGIT_CLIP = 1e-6  # P is clipped to [1e-6, 1 - 1e-6] before the logit, so a 0 or 1 stays finite
# The identity's share in an isotonic map: enough to make its steps strictly increasing (no ties
# between images it would otherwise merge, so ROC-AUC and the threshold search see the raw order),
# too little to move a probability by more than 1e-3.
IDENTITY_SHARE = 1e-3


def called_fake(proba_fake: np.ndarray, threshold: float) -> np.ndarray:
    """The one cut: an image is called FAKE when its P(FAKE) is at or above the threshold."""
    return np.asarray(proba_fake) >= threshold


def beta_features(proba_fake: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(proba_fake, dtype=np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.stack([np.log(p), -np.log(1 - p)], axis=1)


def log_odds(proba_fake: np.ndarray) -> np.ndarray:
    return beta_features(proba_fake).sum(axis=1)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # overflow-free


@dataclass(frozen=True)
class BetaCalibration:
    """``P'(FAKE) = sigmoid(a ln P(FAKE) - b ln(1 - P(FAKE)) + c)``; the identity is a = b = 1, c = 0."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0
    method: str = "beta calibration (Kull et al. 2017)"

    def apply(self, proba_fake: np.ndarray) -> np.ndarray:
        return sigmoid(beta_features(proba_fake) @ np.array([self.a, self.b]) + self.c)

    @classmethod
    def fit(cls, labels: np.ndarray, proba_fake: np.ndarray, weights: np.ndarray | None = None) -> BetaCalibration:
        """Maximum-likelihood fit on ``labels`` (indices of :data:`CLASSES`), each image counted
        ``weights`` times (default once); validation only."""
        from sklearn.linear_model import LogisticRegression

        x, y = beta_features(proba_fake), (np.asarray(labels) == FAKE).astype(int)
        # A huge C: plain maximum likelihood; three parameters on thousands of images need no penalty.
        model = LogisticRegression(C=1e6, max_iter=1000).fit(x, y, sample_weight=weights)
        a, b = model.coef_[0]
        if a >= 0 and b >= 0:
            return cls(float(a), float(b), float(model.intercept_[0]))
        # A negative slope would make it non-monotone; Kull et al. then fall back to one slope.
        return cls.fit_shared_slope(labels, proba_fake, weights)

    @classmethod
    def fit_shared_slope(
        cls, labels: np.ndarray, proba_fake: np.ndarray, weights: np.ndarray | None = None
    ) -> BetaCalibration:
        """``a == b``: temperature scaling with a bias, on the log-odds."""
        from sklearn.linear_model import LogisticRegression

        y = (np.asarray(labels) == FAKE).astype(int)
        model = LogisticRegression(C=1e6, max_iter=1000).fit(log_odds(proba_fake)[:, None], y, sample_weight=weights)
        slope = max(float(model.coef_[0, 0]), 0.0)
        return cls(
            slope,
            slope,
            float(model.intercept_[0]),
            method="temperature scaling with a bias (Guo et al. 2017; Platt 1999)",
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IsotonicCalibration:
    """The isotonic regression of the labels on P(FAKE) (Zadrozny & Elkan 2002): interpolated
    linearly between its ``knots`` (raw P(FAKE)) and ``values`` (calibrated), held constant
    outside them, and blended with :data:`IDENTITY_SHARE` of the identity to be strictly increasing."""

    knots: tuple[float, ...]
    values: tuple[float, ...]
    method: str = "isotonic regression (Zadrozny & Elkan 2002)"

    def apply(self, proba_fake: np.ndarray) -> np.ndarray:
        p = np.asarray(proba_fake, dtype=np.float64)
        return (1 - IDENTITY_SHARE) * np.interp(p, self.knots, self.values) + IDENTITY_SHARE * p

    @classmethod
    def fit(cls, labels: np.ndarray, proba_fake: np.ndarray, weights: np.ndarray | None = None) -> IsotonicCalibration:
        """Weighted least squares among non-decreasing maps (the pool-adjacent-violators
        algorithm, scikit-learn's); validation only."""
        from sklearn.isotonic import IsotonicRegression

        y = (np.asarray(labels) == FAKE).astype(float)
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            np.asarray(proba_fake, dtype=np.float64), y, sample_weight=weights
        )
        return cls(tuple(map(float, model.X_thresholds_)), tuple(map(float, model.y_thresholds_)))

    def to_dict(self) -> dict:
        return {"knots": list(self.knots), "values": list(self.values), "method": self.method}


Calibration = BetaCalibration | IsotonicCalibration
FAMILIES: tuple[type, ...] = (BetaCalibration, IsotonicCalibration)  # what train.validation chooses from


@dataclass(frozen=True)
class UnsureBand:
    """A detector decides when ``P(FAKE) >= high`` (FAKE) or ``P(FAKE) < low`` (REAL); between
    the two it says UNSURE. ``low <= threshold <= high``; an empty band (low == high) always decides."""

    low: float
    high: float
    confidence: float  # the calibrated probability of its call a detector needs to decide
    target_accuracy: float = TARGET_ACCURACY

    @classmethod
    def around(cls, threshold: float, confidence: float, target_accuracy: float = TARGET_ACCURACY) -> UnsureBand:
        return cls(min(threshold, 1 - confidence), max(threshold, confidence), confidence, target_accuracy)

    @classmethod
    def choose(
        cls, labels: np.ndarray, proba_fake: np.ndarray, threshold: float, target_accuracy: float = TARGET_ACCURACY
    ) -> UnsureBand:
        """The narrowest band whose decided images are right at least ``target_accuracy`` of
        the time, on ``labels`` and calibrated ``proba_fake`` (the validation split). Where no
        band reaches it, the widest on the grid."""
        curve = selective_curve(labels, proba_fake, threshold)
        reached = [
            i for i, accuracy in enumerate(curve.accuracy) if accuracy is not None and accuracy >= target_accuracy
        ]
        confidence = curve.confidence[reached[0]] if len(reached) else curve.confidence[-1]
        return cls.around(threshold, float(confidence), target_accuracy)

    def decides(self, proba_fake: np.ndarray) -> np.ndarray:
        p = np.asarray(proba_fake)
        return (p >= self.high) | (p < self.low)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SelectiveCurve:
    """Accuracy on the images decided against the share decided, as the confidence level rises."""

    confidence: tuple[float, ...]
    coverage: tuple[float, ...]
    accuracy: tuple[float | None, ...]  # None where no image is decided

    def to_dict(self) -> dict:
        return asdict(self)


def selective_figures(labels: np.ndarray, proba_fake: np.ndarray, band: UnsureBand, threshold: float) -> dict:
    """Coverage (share decided) and accuracy on the decided images, for one band."""
    labels, p = np.asarray(labels), np.asarray(proba_fake)
    decided = band.decides(p)
    correct = called_fake(p, threshold) == (labels == FAKE)
    return {
        "coverage": float(decided.mean()) if len(p) else 0.0,
        "accuracy": float(correct[decided].mean()) if decided.any() else None,
        "decided": int(decided.sum()),
    }


def selective_curve(
    labels: np.ndarray, proba_fake: np.ndarray, threshold: float, grid: np.ndarray = CONFIDENCE_GRID
) -> SelectiveCurve:
    coverage, accuracy = [], []
    for confidence in grid:
        figures = selective_figures(labels, proba_fake, UnsureBand.around(threshold, float(confidence)), threshold)
        coverage.append(figures["coverage"])
        accuracy.append(figures["accuracy"])
    return SelectiveCurve(tuple(float(c) for c in grid), tuple(coverage), tuple(accuracy))
