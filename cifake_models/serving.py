"""Concurrent requests share forward passes.

:class:`SharedPasses` runs every detector once on all the images waiting at that moment, and
gives each request its rows back; within a pass the detectors run side by side, one thread each
(:func:`side_by_side`). Why not Gradio's batching: docs/layout.md (design notes).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .detector import Detector
from .inference import Answers, predict_all


@dataclass(frozen=True)
class Serving:
    """How a serving process runs its detectors."""

    threads: int | None  # each detector computes on this many threads (None: torch's count)
    executor: Executor | None  # the detectors run side by side on its threads (None: one after another)
    workers: int = 1  # the executor's threads


@functools.cache
def side_by_side(enabled: bool = True) -> Serving:
    """Set this process up to serve: ``enabled``, every detector computes on one thread (pass
    ``threads`` to ``prepare_for_serving``; this sets the process's BLAS threads, the SVM's, and
    torch's, the heatmaps', to one), and as many run at once as torch had threads; else one after
    another, each on all of torch's threads. The thread counts are the process's, so the first
    call decides and later calls (every ``load_state``) share its executor."""
    if not enabled:
        return Serving(None, None)
    workers = torch.get_num_threads()
    threadpool_limits(1, user_api="blas")
    torch.set_num_threads(1)
    return Serving(1, ThreadPoolExecutor(workers, "cifake-detector"), workers)


class SharedPasses:
    """``predict(batch)`` answers as :func:`cifake_models.inference.predict_all` does, sharing each
    forward pass with whatever other threads ask at the same time (up to ``max_images`` per pass;
    a larger request runs alone). With an ``executor`` of ``workers`` threads, the detectors of a
    pass run side by side on them (:func:`side_by_side`)."""

    def __init__(
        self,
        detectors: Mapping[str, Detector],
        max_images: int = 256,
        executor: Executor | None = None,
        workers: int = 1,
    ):
        self.detectors = detectors
        self.max_images = max_images
        self.executor, self.workers = executor, workers
        self.passes = 0  # forward passes run, for tests and benchmarks
        self._waiting: queue.SimpleQueue[tuple[np.ndarray, Future]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def predict(self, batch: np.ndarray) -> Answers:
        if len(batch) == 0:
            return predict_all(self.detectors, batch, self.executor, self.workers)
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
        carried = None  # a request that would have overfilled the last pass starts the next one
        while True:
            requests = [carried or self._waiting.get()]
            carried = None
            size = len(requests[0][0])
            while size < self.max_images:
                try:
                    request = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if size + len(request[0]) > self.max_images:
                    carried = request
                    break
                requests.append(request)
                size += len(request[0])
            try:
                probas, verdicts, errors = predict_all(
                    self.detectors, np.concatenate([batch for batch, _ in requests]), self.executor, self.workers
                )
            except BaseException as error:  # predict_all catches detector errors; this is a last resort
                for _, answer in requests:
                    answer.set_exception(error)
                continue
            self.passes += 1
            start = 0
            for batch, answer in requests:
                rows = slice(start, start + len(batch))
                answer.set_result(
                    ({n: p[rows] for n, p in probas.items()}, {n: v[rows] for n, v in verdicts.items()}, errors)
                )
                start += len(batch)
