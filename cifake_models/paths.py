"""Where the checkout keeps its shipped checkpoints and reports, and where they are read from."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = REPO_ROOT / "assets" / "checkpoints"
REPORT_DIR = REPO_ROOT / "assets" / "reports"
LINEAGE_DIR = REPO_ROOT / "assets" / "lineage"  # the shipped checkpoints' chains (train.lineage)


def checkpoint_dir_or_default(checkpoint_dir: str | Path | None = None) -> Path:
    """``checkpoint_dir``, else ``$CIFAKE_CHECKPOINTS``, else the checkout's assets/checkpoints:
    where detectors are read from when no folder is named (``pip install .`` leaves no assets/)."""
    return Path(checkpoint_dir or os.environ.get("CIFAKE_CHECKPOINTS") or CHECKPOINT_DIR)


def report_dir_or_default(report_dir: str | Path | None = None) -> Path:
    """``report_dir``, else ``$CIFAKE_REPORTS``, else the checkout's assets/reports."""
    return Path(report_dir or os.environ.get("CIFAKE_REPORTS") or REPORT_DIR)
