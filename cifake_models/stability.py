"""Does a verdict survive what an upload goes through? Each image is scored again after a few
mild, everyday changes made by the robustness suite's own functions, exactly as the app would
have seen the changed upload, in one batched pass with the image (:func:`~cifake_models.inference.predict_all`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .detector import Detector
from .inference import Answers, predict_all
from .labels import FAKE
from .page.words import join_words
from .perturbations import Perturbation


@dataclass(frozen=True)
class Change:
    """One everyday change, and the words that name it in a sentence."""

    perturbation: Perturbation
    noun: str  # "stable under re-saving, resizing and blur"
    when: str  # "flips to REAL when resized to 24 px and back"


# Mild strengths a real upload meets, each one of the robustness suite's own (so the evaluation
# report measures every detector's accuracy under exactly these): JPEG quality 70, about what
# image hosts and messengers re-save at; a thumbnail round trip through 24 px; a blur of half a pixel.
CHANGES: tuple[Change, ...] = (
    Change(Perturbation("jpeg", 70), "re-saving", "re-saved as JPEG at quality 70"),
    Change(Perturbation("downscale", 24), "resizing", "resized to 24 px and back"),
    Change(Perturbation("blur", 0.5), "blur", "blurred slightly (sigma 0.5 px)"),
)


@dataclass(frozen=True)
class Copy:
    """One detector's answer for one changed copy of the image."""

    change: Change
    verdict: str
    p_fake: float


@dataclass(frozen=True)
class Stability:
    """One detector's verdict on the image as uploaded, and on each changed copy."""

    detector: str
    verdict: str
    p_fake: float
    copies: tuple[Copy, ...]  # in CHANGES order

    @property
    def flips(self) -> tuple[Copy, ...]:
        """The copies on which the verdict differs from the image's."""
        return tuple(copy for copy in self.copies if copy.verdict != self.verdict)

    @property
    def stable(self) -> bool:
        return not self.flips

    @property
    def sentence(self) -> str:
        """``"stable under re-saving, resizing and blur"``, ``"flips to REAL when resized to 24 px
        and back"``, ``"flips to REAL when blurred slightly (sigma 0.5 px); to UNSURE when ..."``."""
        if self.stable:
            return "stable under " + join_words([copy.change.noun for copy in self.copies], "and")
        by_verdict: dict[str, list[str]] = {}
        for copy in self.flips:
            by_verdict.setdefault(copy.verdict, []).append(copy.change.when)
        parts = [f"to {verdict} when {join_words(whens, 'or')}" for verdict, whens in by_verdict.items()]
        return "flips " + "; ".join(parts)


@dataclass(frozen=True)
class ImageStability:
    """Every detector's :class:`Stability` for one image; ``errors``: detectors that failed on the pass."""

    detectors: dict[str, Stability]
    errors: dict[str, str]


def copies(arrays: np.ndarray, changes: Sequence[Change] = CHANGES) -> np.ndarray:
    """uint8 ``[n, 32, 32, 3]`` in, ``[1 + len(changes), n, 32, 32, 3]`` out: the images as they
    are, then each change applied to all of them."""
    return np.stack([arrays, *(change.perturbation.apply(arrays) for change in changes)])


def check(
    detectors: Mapping[str, Detector],
    arrays: np.ndarray,
    changes: Sequence[Change] = CHANGES,
    answers: Answers | None = None,
    predict: Callable[[np.ndarray], Answers] | None = None,
) -> list[ImageStability]:
    """One :class:`ImageStability` per image of the uint8 ``[n, 32, 32, 3]`` batch ``arrays``.

    ``answers`` are :func:`predict_all`'s for ``arrays`` from the same ``detectors``, where the
    caller already has them (the page does): then only the copies are scored. Otherwise the
    images themselves are scored again in the same pass as their copies. Either way a verdict
    is compared with one computed the same way (a committee's, too, from its members' answers).
    ``predict`` scores the copies in place of ``predict_all(detectors, ...)`` (the page's shared
    passes, ``AppState.predict``)."""
    n = len(arrays)
    if n == 0:
        return []
    predict = predict or (lambda batch: predict_all(detectors, batch))
    views = copies(arrays, changes)
    if answers is None:
        probas, verdicts, errors = predict(views.reshape(-1, *arrays.shape[1:]))
    else:
        (own_probas, own_verdicts, own_errors), (copy_probas, copy_verdicts, copy_errors) = (
            answers,
            predict(views[1:].reshape(-1, *arrays.shape[1:])),
        )
        answered = [name for name in copy_verdicts if name in own_verdicts]
        probas = {name: np.concatenate([own_probas[name], copy_probas[name]]) for name in answered}
        verdicts = {name: np.concatenate([own_verdicts[name], copy_verdicts[name]]) for name in answered}
        errors = {**own_errors, **copy_errors}
    out = []
    for i in range(n):
        per_detector = {}
        for name, verdict in verdicts.items():
            rows = np.arange(len(views)) * n + i  # image i as it is, then under each change
            p_fake = probas[name][rows, FAKE]
            per_detector[name] = Stability(
                name,
                str(verdict[rows[0]]),
                float(p_fake[0]),
                tuple(Copy(change, str(v), float(p)) for change, v, p in zip(changes, verdict[rows[1:]], p_fake[1:])),
            )
        out.append(ImageStability(per_detector, dict(errors)))
    return out
