"""A detector's decision rule, chosen on validation at training and parsed once at load: which
views it averages, how it calibrates, where it calls FAKE, and where it says UNSURE."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from .calibration import BetaCalibration, Calibration, IsotonicCalibration, UnsureBand, called_fake
from .checkpoint import CheckpointError
from .labels import FAKE_LABEL, OUT_OF_SCOPE, REAL_LABEL, UNSURE


class Verdict(StrEnum):
    """What a detector answers for an image: one of its classes, or none of them."""

    FAKE = FAKE_LABEL
    REAL = REAL_LABEL
    UNSURE = UNSURE
    OUT_OF_SCOPE = OUT_OF_SCOPE  # the image is unlike CIFAKE (ScopeRule): given for every detector at once


@dataclass(frozen=True)
class ScopeRule:
    """An image is in scope when its out-of-scope score (cifake_models.scope) is at or below ``cut``, chosen
    on validation so that ``target_share`` of CIFAKE's images, and of their robustness-suite copies, stay in."""

    cut: float
    target_share: float

    def in_scope(self, score: np.ndarray) -> np.ndarray:
        return np.asarray(score) <= self.cut


@dataclass(frozen=True)
class Views:
    """The test-time views whose probabilities are averaged: the image alone, or also its mirror."""

    mirror_average: bool = False

    @classmethod
    def from_metadata(cls, path: str | Path, metadata: dict) -> Views:
        try:
            return cls(bool(_field(path, metadata, "test_time")["mirror_average"]))
        except KeyError as error:
            raise CheckpointError(f"{path} records malformed test-time views (no {error})") from error


SINGLE_VIEW = Views()  # the image alone: the views of a detector made in code or being trained
IDENTITY_CALIBRATION = BetaCalibration()  # a = b = 1, c = 0: P(FAKE) as the detector gives it


@dataclass(frozen=True)
class DecisionRule:
    """Calibrated P(FAKE) at or above ``threshold`` is FAKE, below it REAL; inside ``unsure`` UNSURE."""

    calibration: Calibration
    threshold: float
    unsure: UnsureBand

    @classmethod
    def at(cls, threshold: float, calibration: Calibration = IDENTITY_CALIBRATION) -> DecisionRule:
        """A rule that always decides, at ``threshold`` (for detectors made in code, e.g. tests')."""
        return cls(calibration, threshold, UnsureBand(threshold, threshold, 0.5))

    @classmethod
    def from_metadata(cls, path: str | Path, metadata: dict) -> DecisionRule:
        """The rule a checkpoint at ``path`` records; a missing or malformed field is refused by name."""
        try:
            return cls(
                calibration_of(_field(path, metadata, "calibration")),
                float(_field(path, metadata, "threshold")["value"]),
                unsure_band_of(_field(path, metadata, "unsure")),
            )
        except (KeyError, TypeError, ValueError) as error:
            why = f"{type(error).__name__}: {error}"
            raise CheckpointError(f"{path} records a malformed decision rule ({why})") from error

    def verdicts(self, proba_fake: np.ndarray) -> np.ndarray:
        """FAKE, REAL or UNSURE for each calibrated P(FAKE): the one rule for a verdict."""
        p = np.asarray(proba_fake)
        out = np.where(called_fake(p, self.threshold), Verdict.FAKE.value, Verdict.REAL.value).astype(object)
        out[~self.unsure.decides(p)] = Verdict.UNSURE.value
        return out.astype(str)


def _field(path: str | Path, metadata: dict, name: str) -> dict:
    value = metadata.get(name)
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{path} records no decision rule field {name!r}: validate it again (python -m train.revalidate)"
        )
    return value


def calibration_of(stored: dict) -> Calibration:
    """A stored calibration (``Calibration.to_dict``) as its dataclass."""
    if "knots" in stored:
        return IsotonicCalibration(tuple(stored["knots"]), tuple(stored["values"]), stored["method"])
    return BetaCalibration(stored["a"], stored["b"], stored["c"], stored["method"])


def unsure_band_of(stored: dict) -> UnsureBand:
    """A stored unsure band (``UnsureBand.to_dict``) as its dataclass."""
    fields = ("low", "high", "confidence", "target_accuracy")
    return UnsureBand(*(float(stored[name]) for name in fields))
