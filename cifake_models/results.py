"""One image's answer from every detector: the typed result behind the app's cards, table, CSV
and API, and behind ``cifake-score``'s CSV and JSON Lines.

The rules live here once: how far the detectors agree, the majority, and the columns of a results file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .detector import Detector
from .inference import Answers, predict_all, stack
from .labels import FAKE, FAKE_LABEL, OUT_OF_SCOPE, REAL_LABEL
from .registry import REGISTRY
from .scope import ScopeAnswer, ScopeScorer
from .uploads import Decoded, Failed

if TYPE_CHECKING:  # optional extras of a result, computed elsewhere
    from .explain import Heatmap
    from .stability import Stability

# Then three per detector: see csv_header.
COLUMNS = ("file", "error", "notes", "majority", "agreement", "in_scope", "scope_score", "scope_cut")
OUT_OF_SCOPE_TEXT = "out of scope: unlike the photos and generator these detectors learned"
DECIMALS = 6  # probabilities are reported rounded to this many decimals


@dataclass(frozen=True)
class Prediction:
    """One detector's answer for one image."""

    p_real: float
    p_fake: float
    verdict: str  # FAKE, REAL or UNSURE (Detector.decide), or OUT_OF_SCOPE where the image is unlike CIFAKE

    def mapping(self) -> dict[str, float | str]:
        """``{"REAL": p, "FAKE": p, "verdict": v}``: calibrated probabilities and the verdict, as the API answers."""
        return {REAL_LABEL: self.p_real, FAKE_LABEL: self.p_fake, "verdict": self.verdict}


@dataclass
class ImageResult:
    """Every available detector's answer for one file, or why there is none."""

    file: str
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    predictions: dict[str, Prediction] = field(default_factory=dict)
    detector_errors: dict[str, str] = field(default_factory=dict)  # detectors that failed on this batch
    array: np.ndarray | None = None  # the uint8 32x32 RGB image the detectors saw
    # Optional extras (cifake_models.page.analysis adds them): each detector's verdict on changed
    # copies of the image (cifake_models.stability), and where its evidence lies (cifake_models.explain).
    stability: dict[str, Stability] | None = None
    stability_errors: dict[str, str] = field(
        default_factory=dict
    )  # detectors whose copies could not be scored, and why
    heatmaps: dict[str, Heatmap] | None = None
    scope: ScopeAnswer | None = None  # None: no scope score is loaded, or it failed (see notes)

    @property
    def out_of_scope(self) -> bool:
        return self.scope is not None and not self.scope.in_scope

    @property
    def verdicts(self) -> dict[str, str]:
        """Each detector's verdict, committees apart: the vote counts the detectors themselves."""
        return {name: p.verdict for name, p in self.predictions.items() if not _is_committee(name)}

    @property
    def committees(self) -> dict[str, Prediction]:
        """The committees' answers: measured combinations of the others, shown on their own."""
        return {name: p for name, p in self.predictions.items() if _is_committee(name)}

    @property
    def agreement(self) -> str:
        if self.out_of_scope and self.verdicts:
            return OUT_OF_SCOPE_TEXT
        return agreement(self.verdicts) if self.array is not None else ""

    @property
    def majority(self) -> str:
        if self.out_of_scope and self.verdicts:
            return OUT_OF_SCOPE
        return majority(self.verdicts) if self.array is not None else ""

    def probabilities(self) -> dict[str, dict[str, float | str | bool | None]]:
        """``{detector: {"REAL": p, "FAKE": p, "verdict": v}}``, as the API answers; with the
        stability check, also ``"stable": bool`` and ``"stability": "flips to REAL when ..."``
        (``"stable": None`` and ``"stability": "not checked: why"`` where its copies failed)."""
        out = {name: {**p.mapping(), **self.scope_mapping()} for name, p in self.predictions.items()}
        for name, check in (self.stability or {}).items():
            if name in out:
                out[name].update(stable=check.stable, stability=check.sentence)
        for name, why in self.stability_errors.items():
            if name in out and name not in (self.stability or {}):
                out[name].update(stable=None, stability=f"not checked: {why}")
        return out

    def scope_mapping(self) -> dict[str, float | bool | None]:
        """``{"in_scope": bool, "scope_score": s, "scope_cut": c}``; None each where no score was made."""
        return self.scope.mapping() if self.scope else {"in_scope": None, "scope_score": None, "scope_cut": None}

    def api_record(self) -> dict:
        return {
            "file": self.file,
            "error": self.error,
            "notes": self.notes,
            **self.scope_mapping(),
            "predictions": self.probabilities(),
        }

    def row(self, names: Sequence[str]) -> list:
        """The CSV row for :func:`csv_header` ``(names)``; a detector without an answer gets empty cells."""
        row = [self.file, self.error or "", "; ".join(self.notes), self.majority, self.agreement]
        row += ["" if v is None else v for v in self.scope_mapping().values()]
        for name in names:
            p = self.predictions.get(name)
            row += [p.p_real, p.p_fake, p.verdict] if p else ["", "", ""]
        return row


def _is_committee(name: str) -> bool:
    return name in REGISTRY and REGISTRY[name].is_committee


# A CSV cell a spreadsheet would read as a formula starts with one of these (OWASP, "CSV Injection");
# "'" too, so that the quote that neutralises the others can be told from a name's own.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def spreadsheet_safe(cell):
    """A text cell as a CSV for spreadsheets holds it: one that starts like a formula gets a
    leading ``'``, as OWASP advises; :func:`from_spreadsheet` reads it back."""
    return f"'{cell}" if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell


def from_spreadsheet(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell


def csv_header(names: Sequence[str]) -> list[str]:
    header = list(COLUMNS)
    for name in names:
        header += [f"{name}_p_real", f"{name}_p_fake", f"{name}_verdict"]
    return header


def agreement(verdicts: Mapping[str, str]) -> str:
    """``"4 of 5 say FAKE"``, ``"all 5 say REAL"``, ``"split: 2 FAKE, 2 REAL"``, each followed by
    how many are unsure (``", 1 unsure"``) where any are; empty where no detector voted (only
    committees answered: they are not counted)."""
    n = len(verdicts)
    if n == 0:
        return ""
    fakes, reals = (sum(v == label for v in verdicts.values()) for label in (FAKE_LABEL, REAL_LABEL))
    unsure = n - fakes - reals
    if unsure == n:
        return f"all {n} unsure" if n > 1 else "1 of 1 is unsure"
    if fakes == n or reals == n:
        label = FAKE_LABEL if fakes else REAL_LABEL
        return f"all {n} say {label}" if n > 1 else f"1 of 1 says {label}"
    if fakes == reals:
        text = f"split: {fakes} FAKE, {reals} REAL"
    else:
        label, count = (FAKE_LABEL, fakes) if fakes > reals else (REAL_LABEL, reals)
        text = f"{count} of {n} say{'s' if count == 1 else ''} {label}"
    return text + (f", {unsure} unsure" if unsure else "")


def majority(verdicts: Mapping[str, str]) -> str:
    """FAKE or REAL when more than half of the detectors say so, else "undecided"; empty where
    no detector voted, as :func:`agreement`."""
    if not verdicts:
        return ""
    for label in (FAKE_LABEL, REAL_LABEL):
        if sum(v == label for v in verdicts.values()) * 2 > len(verdicts):
            return label
    return "undecided"


def scope_answers(scorer: ScopeScorer | None, batch: np.ndarray) -> tuple[list[ScopeAnswer] | None, str | None]:
    """Each image's scope, or None and why (no score loaded, or it failed: the verdicts stand without it)."""
    if scorer is None or not len(batch):
        return None, None
    try:
        return scorer.answers(batch), None
    except Exception as error:  # the scope is an addition: the detectors' answers stand without it
        return None, f"scope score unavailable: {type(error).__name__}: {error}"


def results(
    items: Sequence[Decoded | Failed],
    answers: Answers,
    unavailable: Mapping[str, str] = {},
    scopes: Sequence[ScopeAnswer] | None = None,
) -> list[ImageResult]:
    """One :class:`ImageResult` per item, in order, from :func:`predict_all`'s answers for the
    stacked arrays of the decoded items; ``unavailable`` explains detectors that never loaded;
    ``scopes``: each decoded item's scope, out of scope turning every verdict into OUT_OF_SCOPE."""
    probas, verdicts, detector_errors = answers
    out, i = [], 0
    for item in items:
        if isinstance(item, Failed):
            out.append(ImageResult(item.name, item.error))
            continue
        scope = scopes[i] if scopes is not None else None
        predictions = {
            name: Prediction(
                round(float(proba[i, 1 - FAKE]), DECIMALS),
                round(float(proba[i, FAKE]), DECIMALS),
                str(verdicts[name][i]) if scope is None or scope.in_scope else OUT_OF_SCOPE,
            )
            for name, proba in probas.items()
        }
        error = (
            None
            if predictions
            else "no detector could score this image: "
            + "; ".join(f"{k}: {v}" for k, v in {**unavailable, **detector_errors}.items())
        )
        out.append(ImageResult(item.name, error, item.notes, predictions, detector_errors, item.array, scope=scope))
        i += 1
    return out


def score(
    detectors: Mapping[str, Detector],
    items: Sequence[Decoded | Failed],
    unavailable: Mapping[str, str] = {},
    shown: Sequence[str] | None = None,
    scorer: ScopeScorer | None = None,
) -> list[ImageResult]:
    """Decoded (or failed) files in, one :class:`ImageResult` each out, every detector in one pass.
    ``shown`` (default: all) are the detectors whose answers the results hold: the others scored
    only for a committee among them."""
    batch = stack(items)
    answers = predict_all(detectors, batch) if len(batch) else ({}, {}, {})
    if shown is not None:
        answers = tuple({name: answer for name, answer in part.items() if name in shown} for part in answers)
    scopes, why = scope_answers(scorer, batch)
    out = results(items, answers, unavailable, scopes)
    return with_note(out, why)


def with_note(out: list[ImageResult], note: str | None) -> list[ImageResult]:
    """``out``, each decoded image's notes saying ``note`` where there is one."""
    for result in out:
        if note and result.array is not None:
            result.notes.append(note)
    return out
