"""Every detector on a batch at once: the one inference pass behind the page, the API,
``cifake-score`` and the stability check, with the committee combining its members' answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor

import numpy as np

from .committee import CommitteeDetector
from .detector import Detector
from .labels import CLASSES, FAKE
from .uploads import Decoded, Failed

Answers = tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]

# Side by side, a batch with at least this many images per thread is also cut into one part per
# thread: otherwise the slowest detector's share (VGG-16's, as long as the other five together)
# keeps the other threads waiting. Smaller parts cost more per image than they gain.
MIN_PART = 16


def parts(batch: np.ndarray, workers: int) -> list[np.ndarray]:
    """``batch`` cut into one part per worker where each part holds at least :data:`MIN_PART` images, else whole."""
    return np.array_split(batch, max(1, min(workers, len(batch) // MIN_PART)))


def predict_all(
    detectors: Mapping[str, Detector], batch: np.ndarray, executor: Executor | None = None, workers: int = 1
) -> Answers:
    """Every detector on a uint8 ``[n, 32, 32, 3]`` batch: ``(probas, verdicts, errors)``, where
    ``probas[name]`` is ``[n, 2]`` in (FAKE, REAL) order, ``verdicts[name]`` its ``[n]`` verdicts,
    and ``errors[name]`` says why a detector failed (the others still answer). With an
    ``executor`` of ``workers`` threads, the detectors that score images themselves run side by
    side on them, each on its part of a large batch (:data:`MIN_PART`; how the app serves them:
    ``cifake_models.serving``); a committee then combines their answers."""
    scorers = [name for name, detector in detectors.items() if not isinstance(detector, CommitteeDetector)]
    pieces = parts(batch, workers) if executor is not None else [batch]

    def scored(task: tuple[str, np.ndarray]) -> np.ndarray | Exception:
        name, part = task
        try:
            return np.asarray(detectors[name].probabilities(part), dtype=np.float64)
        except Exception as error:  # one broken detector must not take the others down
            return error

    answers = list(
        (executor.map if executor is not None else map)(scored, [(n, part) for part in pieces for n in scorers])
    )
    raw = {}
    for i, name in enumerate(scorers):
        mine = answers[i :: len(scorers)]  # this detector's answer for each piece, in order
        failed = [a for a in mine if isinstance(a, Exception)]
        raw[name] = failed[0] if failed else np.concatenate(mine)
    probas, verdicts, errors = {}, {}, {}
    for name, detector in detectors.items():  # registry order: a committee after its members
        try:
            if isinstance(detector, CommitteeDetector):  # it combines what its members just computed
                failed = [m for m in detector.members if m not in probas]
                if failed:
                    raise RuntimeError(f"its members {', '.join(failed)} failed on this batch")
                proba = detector.combine({m: probas[m][:, FAKE] for m in detector.members})
            elif isinstance(raw[name], Exception):
                raise raw[name]
            else:
                proba = raw[name]
            verdicts[name] = detector.decide(proba)
            probas[name] = proba[:, [list(detector.classes_).index(c) for c in CLASSES]]
        except Exception as error:
            errors[name] = f"{type(error).__name__}: {error}"
    return probas, verdicts, errors


def stack(items: Sequence[Decoded | Failed]) -> np.ndarray:
    """The arrays of the decoded items as one uint8 ``[n, 32, 32, 3]`` batch (failed ones left out)."""
    arrays = [item.array for item in items if isinstance(item, Decoded)]
    return np.stack(arrays) if arrays else np.zeros((0, 32, 32, 3), np.uint8)
