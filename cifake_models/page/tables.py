"""The page's tables: the Detect tab's results (shown, and written as CSV in the columns of
:func:`cifake_models.results.csv_header`, as ``cifake-score`` writes them) and the Compare tab's
figures of every detector beside the paper's."""

from __future__ import annotations

import csv
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

import cifake_models as cm
from cifake_models.labels import FAKE_LABEL, REAL_LABEL
from cifake_models.reports import describe_recipe
from cifake_models.results import ImageResult, csv_header, spreadsheet_safe

from .state import AppState

RESULTS_DIR = Path(tempfile.gettempdir()) / "cifake-app-results"  # CSV downloads; write_csv deletes those an hour old
CACHE_SECONDS = 3600  # uploads and CSVs older than this are deleted


def results_table(state: AppState, answers: list[ImageResult]) -> pd.DataFrame:
    """The table shown under the cards: one row per file, P(FAKE) per available detector."""
    columns = ["File", "Majority", "Agreement"] + [state.title(n) for n in state.detectors] + ["Notes / error"]
    rows = []
    for r in answers:
        row = [r.file, r.majority, r.agreement]
        row += [round(r.predictions[n].p_fake, 4) if n in r.predictions else None for n in state.detectors]
        row.append(r.error or "; ".join(r.notes))
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def results_widths(state: AppState) -> list[str]:
    """Column widths of :func:`results_table`, so long notes do not squeeze the probabilities."""
    share = 46 / max(len(state.detectors), 1)
    return ["14%", "8%", "12%"] + [f"{share:.1f}%"] * len(state.detectors) + ["20%"]


def write_csv(state: AppState, answers: list[ImageResult]) -> str:
    """Every result, with P(REAL), P(FAKE) and the verdict of each detector, as a CSV file."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - CACHE_SECONDS
    for old in RESULTS_DIR.glob("*/*.csv"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
                old.parent.rmdir()
        except OSError:
            pass
    path = RESULTS_DIR / uuid.uuid4().hex / "cifake_results.csv"
    path.parent.mkdir()
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_header(state.names))
        writer.writerows([spreadsheet_safe(cell) for cell in r.row(state.names)] for r in answers)
    return str(path)


def compare_table(state: AppState) -> pd.DataFrame:
    rows = []
    for name in state.names:
        spec, report = cm.get_spec(name), state.reports.get(name, {})
        test, free, robustness = report.get("test", {}), report.get("test_leak_free", {}), report.get("robustness", {})
        per_class = test.get("per_class", {})
        status = "available" if name in state.detectors else f"unavailable: {state.unavailable.get(name)}"
        if name not in state.reports:
            status += f" (no evaluation report: {state.report_errors.get(name)})"
        elif name in state.stale_reports:
            status += f" ({state.stale_reports[name]})"
        checkpoint = state.checkpoint_dir / spec.checkpoint_file
        size = checkpoint.stat().st_size if checkpoint.is_file() else report.get("checkpoint", {}).get("size_bytes")
        ms = report.get("ms_per_image", {})
        rnd = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        rows.append(
            {
                "Detector": spec.title,
                "Status": status,
                "Accuracy": rnd(test.get("accuracy")),
                "Paper accuracy": spec.paper.accuracy if spec.paper else None,
                "ROC-AUC": rnd(test.get("roc_auc")),
                "Paper ROC-AUC": spec.paper.roc_auc if spec.paper else None,
                "PR-AUC": rnd(test.get("pr_auc")),
                "Leak-free accuracy": rnd(free.get("accuracy")),
                "Leak-free ROC-AUC": rnd(free.get("roc_auc")),
                "Resized/re-saved: mean accuracy": rnd(robustness.get("mean_accuracy")),
                "Resized/re-saved: worst accuracy": rnd((robustness.get("worst") or {}).get("accuracy")),
                "Worst case": (robustness.get("worst") or {}).get("perturbation"),
                "FAKE precision": rnd(per_class.get(FAKE_LABEL, {}).get("precision")),
                "FAKE recall": rnd(per_class.get(FAKE_LABEL, {}).get("recall")),
                "FAKE F1": rnd(per_class.get(FAKE_LABEL, {}).get("f1")),
                "REAL precision": rnd(per_class.get(REAL_LABEL, {}).get("precision")),
                "REAL recall": rnd(per_class.get(REAL_LABEL, {}).get("recall")),
                "REAL F1": rnd(per_class.get(REAL_LABEL, {}).get("f1")),
                "Threshold P(FAKE)": rnd(test.get("threshold")),
                "Test images": test.get("n"),
                "Initialisation": state.initialisation(name),
                "Our recipe": describe_recipe(report) if report.get("recipe") else "",
                "Paper recipe": spec.paper.recipe if spec.paper else "not in the paper",
                "Checkpoint MB": None if size is None else round(size / 1e6, 1),
                "ms/image (1)": None if ms.get("batch_1") is None else round(ms["batch_1"], 2),
                "ms/image (64)": None if ms.get("batch_64") is None else round(ms["batch_64"], 2),
                "Trained on": (report.get("training") or {}).get("hardware"),
            }
        )
    return pd.DataFrame(rows)


COMPARE_GROUPS = {
    "Every detector on CIFAKE's official test split, ours beside the paper's": [
        "Detector",
        "Status",
        "Accuracy",
        "Paper accuracy",
        "ROC-AUC",
        "Paper ROC-AUC",
        "PR-AUC",
        "Leak-free accuracy",
        "Leak-free ROC-AUC",
        "Threshold P(FAKE)",
        "Checkpoint MB",
        "ms/image (1)",
        "ms/image (64)",
    ],
    "On what people upload: the test images resized, re-compressed, blurred, shifted or cropped first"
    " (the robustness suite)": [
        "Detector",
        "Accuracy",
        "Resized/re-saved: mean accuracy",
        "Resized/re-saved: worst accuracy",
        "Worst case",
    ],
    "Per class on the test split (FAKE is the positive class)": [
        "Detector",
        "Test images",
        "FAKE precision",
        "FAKE recall",
        "FAKE F1",
        "REAL precision",
        "REAL recall",
        "REAL F1",
    ],
    "How each detector was trained": ["Detector", "Initialisation", "Our recipe", "Paper recipe", "Trained on"],
}
