"""Uploaded files in, one typed :class:`~cifake_models.results.ImageResult` each out, in order:
what the page's cards and table, the CSV and both API endpoints are made from. Every decoded
image of a request goes through one forward pass, shared with the requests running at the same
time; a file that is not a usable image gets its error, never an exception (``predict_file``
apart, which answers for one file)."""

from __future__ import annotations

import os

from cifake_models.results import ImageResult, results, stack
from cifake_models.uploads import Decoded, Failed, UploadError, decode_many, decode_upload

from .bank import Bank

MAX_BATCH_FILES = 100  # files per request; more are reported as skipped, not processed


def analyse(bank: Bank, items: list[Decoded | Failed]) -> list[ImageResult]:
    """One result per upload, in order; every decoded image goes through one shared pass."""
    batch = stack(items)
    return results(items, bank.predict(batch) if len(batch) else ({}, {}, {}), bank.unavailable)


def limit_batch(paths: list) -> tuple[list, list[Failed]]:
    """The first :data:`MAX_BATCH_FILES` paths, and a "not processed" result for each of the rest."""
    paths = [p for p in (paths or []) if p is not None]
    skipped = [Failed(os.path.basename(os.fspath(p)), f"not processed: at most {MAX_BATCH_FILES} files per request")
               for p in paths[MAX_BATCH_FILES:]]
    return paths[:MAX_BATCH_FILES], skipped


def analyse_files(bank: Bank, paths: list) -> list[ImageResult]:
    """One result per file (files past :data:`MAX_BATCH_FILES` say they were skipped)."""
    paths, skipped = limit_batch(paths)
    return analyse(bank, decode_many(paths) + skipped)


def predict_file(bank: Bank, path) -> dict[str, dict[str, float | str]]:
    """``{detector: {"REAL": p, "FAKE": p, "verdict": v}}`` for one uploaded file (calibrated
    probabilities; FAKE, REAL or UNSURE); unavailable detectors are left
    out. Raises :class:`UploadError` for a file that is not a usable image."""
    if path is None:
        raise UploadError("no file was sent")
    result = analyse(bank, [decode_upload(path)])[0]
    if result.error:
        raise UploadError(result.error)
    return result.probabilities()


def predict_files(bank: Bank, paths: list) -> list[dict]:
    """One JSON-ready result per file, in order; a bad file gets its ``error``, never an exception."""
    return [r.api_record() for r in analyse_files(bank, paths)]
