"""Uploaded files in, one typed :class:`~cifake_models.results.ImageResult` each out, in order:
what the page's cards and table, the CSV and both API endpoints are made from. Every decoded
image of a request goes through one forward pass, shared with the requests running at the same
time; a file that is not a usable image gets its error, never an exception (``predict_file``
apart, which answers for one file)."""

from __future__ import annotations

import os

from cifake_models import explain, stability
from cifake_models.inference import stack
from cifake_models.results import ImageResult, results, scope_answers, with_note
from cifake_models.uploads import Decoded, Failed, UploadError, decode_many, decode_or_fail, decode_upload

from .state import AppState

MAX_BATCH_FILES = 100  # files per request; more are reported as skipped, not processed
# Images of a request that get heatmaps: Integrated Gradients is costly per image (docs/performance.md,
# python -m scripts.benchmarks.extras), and a batch of 100 files would wait for maps nobody scrolls to.
MAX_HEATMAPS = 4


def analyse(
    state: AppState, items: list[Decoded | Failed], check_stability: bool = False, heatmaps: int = 0
) -> list[ImageResult]:
    """One result per upload, in order; every decoded image goes through one shared pass. With
    ``check_stability``, every detector also scores changed copies of each image (one more
    batched pass); the first ``heatmaps`` images get each network's map of its evidence."""
    batch = stack(items)
    answers = state.predict(batch) if len(batch) else ({}, {}, {})
    scopes, why = scope_answers(state.scope, batch)
    out = with_note(results(items, answers, state.unavailable, scopes), why)
    decoded = [r for r in out if r.array is not None]  # the rows of batch, in order
    if check_stability and decoded:
        for result, checked in zip(
            decoded, stability.check(state.detectors, batch, answers=answers, predict=state.predict)
        ):
            result.stability = checked.detectors if result.predictions else None
            result.stability_errors = checked.errors
    for result in [r for r in decoded if r.predictions][:heatmaps]:
        try:
            result.heatmaps = explain.heatmaps(state.detectors, result.array, executor=state.serving.executor)
        except Exception as error:  # a map is an extra: the verdicts stand without it
            result.notes.append(f"heatmaps unavailable: {type(error).__name__}: {error}")
    return out


def limit_batch(paths: list) -> tuple[list, list[Failed]]:
    """The first :data:`MAX_BATCH_FILES` paths, and a "not processed" result for each of the rest."""
    paths = list(paths or [])  # a None stays in its place (decode_many answers it), so results keep the request's order
    skipped = [
        Failed(
            os.path.basename(os.fspath(p)) if p is not None else "",
            f"not processed: at most {MAX_BATCH_FILES} files per request",
        )
        for p in paths[MAX_BATCH_FILES:]
    ]
    return paths[:MAX_BATCH_FILES], skipped


def analyse_files(state: AppState, paths: list, check_stability: bool = False, heatmaps: int = 0) -> list[ImageResult]:
    """One result per file (files past :data:`MAX_BATCH_FILES` say they were skipped)."""
    paths, skipped = limit_batch(paths)
    return analyse(state, decode_many(paths) + skipped, check_stability, heatmaps)


def predict_file(
    state: AppState, path, check_stability: bool = False
) -> dict[str, dict[str, float | str | bool | None]]:
    """``{detector: {"REAL": p, "FAKE": p, "verdict": v}}`` for one uploaded file (calibrated
    probabilities; FAKE, REAL or UNSURE); unavailable detectors are left
    out. With ``check_stability``, each detector's mapping also says whether its verdict holds
    on changed copies (``"stable"``, ``"stability"``). Raises :class:`UploadError` for a file
    that is not a usable image."""
    if path is None:
        raise UploadError("no file was sent")
    item = decode_or_fail(os.path.basename(os.fspath(path)), lambda: decode_upload(path))  # MemoryError too
    result = analyse(state, [item], check_stability)[0]
    if result.error:
        raise UploadError(result.error)
    return result.probabilities()


def predict_files(state: AppState, paths: list, check_stability: bool = False) -> list[dict]:
    """One JSON-ready result per file, in order; a bad file gets its ``error``, never an exception."""
    return [r.api_record() for r in analyse_files(state, paths, check_stability)]
