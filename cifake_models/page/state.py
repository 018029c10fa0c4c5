"""What the page loads once, at start-up: every registered detector, its evaluation report, and
the example images. A detector whose checkpoint is missing or corrupt is kept as unavailable,
with the reason, so that the others keep working and the page can say why."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import cifake_models as cm
from cifake_models.inference import Answers
from cifake_models.paths import REPO_ROOT, checkpoint_dir_or_default, report_dir_or_default
from cifake_models.reports import stale_report
from cifake_models.scope import SCOPE_REPORT, ScopeScorer, try_load_scope
from cifake_models.serving import Serving, SharedPasses, side_by_side

EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
ONE_AFTER_ANOTHER = Serving(None, None)  # detectors run one after another, each on all of torch's threads


@dataclass
class AppState:
    """Every registered detector, loaded once: the usable ones, and why the others are not."""

    checkpoint_dir: Path
    report_dir: Path
    detectors: dict[str, cm.Detector] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)
    report_errors: dict[str, str] = field(default_factory=dict)
    stale_reports: dict[str, str] = field(default_factory=dict)  # reports not of the checkpoint loaded, and why
    load_seconds: float = 0.0
    serving: Serving = ONE_AFTER_ANOTHER  # how the detectors run: side by side, or one after another
    passes: SharedPasses = field(init=False)  # every request's forward passes, shared
    scope: ScopeScorer | None = None  # whether an image is like CIFAKE (cifake_models.scope); None: see scope_error
    scope_error: str | None = None
    scope_report: dict | None = None  # <reports>/scope.json (train.scope_eval), where there is one

    def __post_init__(self) -> None:
        # Made here, not at the first request: two first requests at once would make two, and
        # never share a pass. It reads self.detectors, which load_state then fills.
        self.passes = SharedPasses(self.detectors, executor=self.serving.executor, workers=self.serving.workers)

    @property
    def names(self) -> list[str]:
        return cm.list_detectors()

    def title(self, name: str) -> str:
        return cm.get_spec(name).title

    def initialisation(self, name: str) -> str:
        if name in self.detectors:
            return str(self.detectors[name].metadata.get("initialisation") or "not recorded")
        return str(self.reports.get(name, {}).get("initialisation") or "unknown (no checkpoint)")

    def predict(self, batch: np.ndarray) -> Answers:
        """Every available detector on a uint8 ``[n, 32, 32, 3]`` batch, in a forward pass shared
        with the requests running at the same time (see ``cifake_models.inference.predict_all``)."""
        return self.passes.predict(batch)


def resolve_dirs(checkpoint_dir: str | Path | None = None, report_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Explicit arguments, then ``$CIFAKE_CHECKPOINTS`` / ``$CIFAKE_REPORTS``, then assets/."""
    return checkpoint_dir_or_default(checkpoint_dir), report_dir_or_default(report_dir)


def load_state(
    checkpoint_dir: str | Path | None = None, report_dir: str | Path | None = None, together: bool = True
) -> AppState:
    """Every detector and report; ``together``: the detectors of a pass run side by side
    (:func:`~cifake_models.serving.side_by_side`), else one after another."""
    checkpoint_dir, report_dir = resolve_dirs(checkpoint_dir, report_dir)
    state = AppState(checkpoint_dir, report_dir, serving=side_by_side(together))
    start = time.perf_counter()
    for name in cm.list_detectors():
        try:
            state.detectors[name] = cm.load_detector(name, checkpoint_dir, loaded=state.detectors).prepare_for_serving(
                state.serving.threads
            )
        except cm.CheckpointError as error:
            state.unavailable[name] = str(error)
        except Exception as error:  # e.g. a checkpoint of an older architecture
            state.unavailable[name] = (
                f"could not load {cm.get_spec(name).checkpoint_file}: {type(error).__name__}: {error}"
            )
        try:
            state.reports[name] = cm.load_report(name, report_dir)
        except FileNotFoundError as error:
            state.report_errors[name] = str(error)
        except Exception as error:
            state.report_errors[name] = f"unreadable report: {type(error).__name__}: {error}"
        if name in state.reports and (
            reason := stale_report(state.reports[name], checkpoint_dir / cm.get_spec(name).checkpoint_file)
        ):
            state.stale_reports[name] = reason
    state.scope, state.scope_error = try_load_scope(checkpoint_dir, state.detectors)
    state.scope_report = read_scope_report(report_dir)
    state.load_seconds = time.perf_counter() - start
    hide_folders(state)
    return state


def hide_folders(state: AppState) -> None:
    """Name files in the reasons a client may read relative to the checkpoint and report folders:
    the server's own paths are nobody else's business."""
    hide = lambda reasons: {k: relative(v, state.checkpoint_dir, state.report_dir) for k, v in reasons.items()}  # noqa: E731
    state.unavailable, state.report_errors, state.stale_reports = map(
        hide, (state.unavailable, state.report_errors, state.stale_reports)
    )
    for detector in state.detectors.values():
        if isinstance(getattr(detector, "unavailable", None), dict):
            detector.unavailable = hide(detector.unavailable)


def relative(message: str, *folders: Path) -> str:
    """``message`` with each of ``folders`` (as given, and resolved) left out of the paths it names."""
    for folder in folders:
        for form in sorted({str(folder), str(Path(folder).resolve())}, key=len, reverse=True):
            message = message.replace(form + os.sep, "")
    return message


def read_scope_report(report_dir: Path) -> dict | None:
    """The scope report, or None where there is none or it cannot be read (the page says so in its figures)."""
    try:
        return json.loads((report_dir / SCOPE_REPORT).read_text())
    except (OSError, ValueError):
        return None


def example_files() -> list[str]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return [str(p) for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
