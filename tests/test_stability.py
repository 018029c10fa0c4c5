"""The stability check on detectors made here, whose reactions to the changes are known."""

import numpy as np

from cifake_models.decision import DecisionRule
from cifake_models.detector import Detector
from cifake_models.inference import predict_all
from cifake_models.labels import FAKE
from cifake_models.perturbations import SUITE
from cifake_models.stability import CHANGES, check


class Sharpness(Detector):
    """P(FAKE) rises with the mean difference between neighbouring pixels: blur lowers it."""

    def __init__(self, threshold: float):
        super().__init__("sharpness", rule=DecisionRule.at(threshold))
        self.rows = []  # batch sizes seen, to count passes

    def single_view(self, batch: np.ndarray) -> np.ndarray:
        self.rows.append(len(batch))
        pixels = batch.astype(np.float64)
        proba = np.empty((len(batch), 2))
        proba[:, FAKE] = np.abs(np.diff(pixels, axis=2)).mean(axis=(1, 2, 3)) / 255
        proba[:, 1 - FAKE] = 1 - proba[:, FAKE]
        return proba


class Blind(Detector):
    """Ignores the pixels: always P(FAKE) = 0.9."""

    def __init__(self, name: str):
        super().__init__(name, rule=DecisionRule.at(0.5))

    def single_view(self, batch: np.ndarray) -> np.ndarray:
        proba = np.full((len(batch), 2), 0.1)
        proba[:, FAKE] = 0.9
        return proba


class ThreeLabels(Sharpness):
    """Calls a middling P(FAKE) UNSURE: verdicts are opaque labels to the check."""

    def decide(self, proba: np.ndarray) -> np.ndarray:
        return np.where(proba[:, FAKE] >= self.rule.threshold, "FAKE", "UNSURE")


def checkerboard(n: int) -> np.ndarray:
    board = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
    return np.repeat(np.repeat(board[None, ..., None], 3, axis=3), n, axis=0)


def test_changes_are_named_strengths_of_the_robustness_suite():
    # so the evaluation report already measures every detector under exactly these changes
    assert CHANGES and all(change.perturbation in SUITE for change in CHANGES)


def test_a_blur_sensitive_detector_flips_under_blur_and_a_blind_one_is_stable():
    images = np.concatenate([checkerboard(1), np.full((1, 32, 32, 3), 128, np.uint8)])  # sharp, flat
    blurred = next(c for c in CHANGES if c.perturbation.family == "blur").perturbation.apply(images[:1])
    sharp, soft = (Sharpness(0).single_view(x)[0, FAKE] for x in (images[:1], blurred))
    assert soft < sharp
    sharpness = Sharpness(threshold=(sharp + soft) / 2)  # FAKE as it is, REAL once blurred
    results = check({"sharpness": sharpness, "blind": Blind("blind")}, images)

    assert len(results) == 2 and not results[0].errors
    answer = results[0].detectors["sharpness"]
    assert answer.verdict == "FAKE" and not answer.stable
    blur = [copy for copy in answer.flips if copy.change.perturbation.family == "blur"]
    assert len(blur) == 1 and blur[0].verdict == "REAL" and blur[0].p_fake < answer.p_fake
    assert answer.sentence.startswith("flips to REAL when") and blur[0].change.when in answer.sentence

    flat = results[1].detectors["sharpness"]  # no edges to lose: REAL on every copy
    assert flat.verdict == "REAL" and flat.stable and flat.p_fake < 1e-3

    blind = results[1].detectors["blind"]
    assert blind.stable and blind.verdict == "FAKE" and [c.change for c in blind.copies] == list(CHANGES)
    assert blind.sentence == "stable under re-saving, resizing and blur"
    # the images and every copy of them went through the detector in one pass
    assert sharpness.rows == [len(images) * (1 + len(CHANGES))]

    # With the images' own answers at hand (the page's first pass), only the copies are scored,
    # and the outcome is the same.
    detectors = {"sharpness": sharpness, "blind": Blind("blind")}
    answers = predict_all(detectors, images)
    sharpness.rows.clear()
    assert check(detectors, images, answers=answers) == check(detectors, images)
    assert sharpness.rows[0] == len(images) * len(CHANGES)


def test_verdicts_are_opaque_labels():
    images = checkerboard(1)
    sharp = Sharpness(0).single_view(images)[0, FAKE]
    answer = check({"three": ThreeLabels(threshold=sharp * 0.999)}, images)[0].detectors["three"]
    assert answer.verdict == "FAKE" and {c.verdict for c in answer.flips} == {"UNSURE"}
    assert answer.sentence.startswith("flips to UNSURE when")


def test_a_failing_detector_is_reported_and_the_others_answer():
    class Broken(Detector):
        def single_view(self, batch):
            raise ValueError("no")

    results = check({"broken": Broken("broken"), "blind": Blind("blind")}, checkerboard(1))
    assert list(results[0].detectors) == ["blind"] and "ValueError" in results[0].errors["broken"]
    assert check({"blind": Blind("blind")}, np.zeros((0, 32, 32, 3), np.uint8)) == []
