"""Concurrent requests share forward passes.

A server thread per request hands its decoded images to :class:`SharedPasses` and waits; one
worker thread runs every detector on all the images waiting at that moment, as one batch, and
gives each request its rows back. Nothing waits on a timer: while a pass runs, the requests that
arrive queue up and form the next pass, so a lone request goes straight through and a crowd is
served in few, larger passes, which cost far less per image (the networks' cost at 32x32 is
mostly per call).

Why not Gradio's own batching (``batch=True``): a batched function answers all the events in its
batch with one outcome, so one upload that is not an image would fail every other request that
happened to share its batch. Here each request decodes (and fails) on its own, and only good
images meet in a pass; every endpoint of the app, and the page itself, share the passes.

Within a pass the detectors run side by side, each computing on one thread, on as many threads
as torch uses (:data:`SIDE_BY_SIDE`), rather than one after another with every thread inside each
operator: at 32x32 the operators are too small to keep two threads busy, so the threads mostly
wait on each other. ``scripts/benchmark_app.py`` measures both ways, in-process and under many
users; the probabilities are the same either way (a test checks it).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .detector import Detector
from .results import Answers, predict_all


# Whether a pass runs the detectors side by side, one thread each (True), or one after another
# on all of torch's threads each (False, the way before; the benchmark serves both).
SIDE_BY_SIDE = True


def serving_threads() -> int | None:
    """The threads each served detector computes on: one when they run side by side, else
    torch's count (``None``). Call before ``prepare_for_serving``: it also sets the process's
    BLAS threads (scikit-learn's, the SVM's) to match."""
    if not SIDE_BY_SIDE:
        return None
    threadpool_limits(1, user_api="blas")
    return 1


class SharedPasses:
    """``predict(batch)`` answers as :func:`cifake_models.results.predict_all` does, sharing each
    forward pass with whatever other threads ask at the same time (up to ``max_images`` per pass;
    a larger request runs alone). The detectors of a pass run side by side on ``workers`` threads
    (default: torch's thread count) where :data:`SIDE_BY_SIDE` is on."""

    def __init__(self, detectors: Mapping[str, Detector], max_images: int = 256, workers: int | None = None):
        self.detectors = detectors
        self.max_images = max_images
        self.executor = ThreadPoolExecutor(workers or torch.get_num_threads(), "cifake-detector") if SIDE_BY_SIDE else None
        self.passes = 0  # forward passes run, for tests and benchmarks
        self._waiting: queue.SimpleQueue[tuple[np.ndarray, Future]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def predict(self, batch: np.ndarray) -> Answers:
        if len(batch) == 0:
            return predict_all(self.detectors, batch, self.executor)
        self._ensure_worker()
        answer: Future = Future()
        self._waiting.put((batch, answer))
        return answer.result()

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="cifake-shared-passes", daemon=True)
                self._worker.start()

    def _serve(self) -> None:
        while True:
            requests = [self._waiting.get()]
            size = len(requests[0][0])
            while size < self.max_images:
                try:
                    request = self._waiting.get_nowait()
                except queue.Empty:
                    break
                requests.append(request)
                size += len(request[0])
            try:
                probas, verdicts, errors = predict_all(self.detectors, np.concatenate([batch for batch, _ in requests]), self.executor)
            except BaseException as error:  # predict_all catches detector errors; this is a last resort
                for _, answer in requests:
                    answer.set_exception(error)
                continue
            self.passes += 1
            start = 0
            for batch, answer in requests:
                rows = slice(start, start + len(batch))
                answer.set_result(({n: p[rows] for n, p in probas.items()}, {n: v[rows] for n, v in verdicts.items()}, errors))
                start += len(batch)
