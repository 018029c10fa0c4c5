"""A ``cifake-evaluate FOLDER`` report shown: its table (console, Markdown, HTML), its figures (the
Evaluation tab's own, on the folder's split) and its self-contained HTML page. The report itself is
made by ``cifake_models.folder_eval``; this module only reads it, so the page can show one uploaded.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, fields
from pathlib import Path

import plotly.graph_objects as go
import plotly.io

from cifake_models.labels import FAKE_LABEL, OUT_OF_SCOPE, REAL_LABEL, UNSURE
from cifake_models.metrics import CURVE_POINTS, percent

from .figures import (
    ReportView,
    confusion_figure,
    empty_figure,
    pr_figure,
    reliability_figure,
    roc_figure,
    selective_figure,
)

REPORT_KIND = "cifake-evaluate folder report"
SPLIT, IN_SCOPE_SPLIT = "folder", "folder_in_scope"  # the report's splits, keyed as train.evaluate's are
MAX_REPORT_BYTES = 10 * 2**20  # a report uploaded to the page (curves are thinned: a few MB at most)
NO_ANSWERS = "no detector answered for any image of this folder"
MAX_ENTRIES = 4 * CURVE_POINTS  # of any list in an uploaded report
VERDICTS = (FAKE_LABEL, REAL_LABEL, UNSURE, OUT_OF_SCOPE)  # a report's verdict shares, per true class


class ReportError(ValueError):
    """A file that is not a report of cifake-evaluate, with the reason in words."""


def read_report(path: str | Path) -> dict:
    """A folder report from ``path``, checked to be one; :class:`ReportError` otherwise."""
    path = Path(path)
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise ReportError(f"{path.name} is over {MAX_REPORT_BYTES // 2**20} MB: not a report of cifake-evaluate")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ReportError(f"{path.name} is nested too deeply to be a report of cifake-evaluate") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{path.name} is not JSON ({error}): upload the report.json cifake-evaluate wrote") from None
    if not isinstance(report, dict) or report.get("kind") != REPORT_KIND:
        raise ReportError(f"{path.name} is not a report of cifake-evaluate FOLDER (its report.json)")
    blocks = report.get("detectors")
    if not isinstance(blocks, dict) or not all(isinstance(b, dict) and SPLIT in b for b in blocks.values()):
        raise ReportError(f"{path.name}: its detectors' figures are missing or malformed")
    try:  # everything the page draws from it, once: a malformed figure is this file's fault, said so
        check_shapes(report)
        report_markdown(report)
        for name in ReportView(blocks).names or [None]:
            folder_plots(report, name)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ReportError(f"{path.name}: malformed report ({type(error).__name__}: {error})") from None
    return report


def check_shapes(report: dict) -> None:
    """Before anything is computed from an uploaded report: figures whose lists are no longer than a
    report's own (curves are thinned to CURVE_POINTS), and verdict shares that are numbers; ValueError otherwise."""
    pending: list = [report["detectors"]]
    while pending:
        item = pending.pop()
        if isinstance(item, list | dict):
            values = item if isinstance(item, list) else list(item.values())
            if len(values) > MAX_ENTRIES:
                raise ValueError(f"a list or mapping of {len(values):,} entries")
            pending.extend(values)
    for block in report["detectors"].values():
        for part in (block.get("verdicts") or {}).values():
            shares = [part.get(v) for v in VERDICTS]
            if not (isinstance(part.get("n"), int) and all(isinstance(x, int | float) for x in shares)):
                raise ValueError("verdict shares that are not numbers")


@dataclass(frozen=True)
class SummaryRow:
    """One detector's line of the report's table (console, page, HTML): figures by its threshold,
    and its verdicts' shares, where UNSURE and OUT_OF_SCOPE are neither right nor wrong."""

    title: str
    accuracy: float
    roc_auc: float | None
    ece: float
    in_scope_accuracy: float | None
    real_called_fake: float | None  # share of the REAL images whose verdict is FAKE
    fake_called_real: float | None
    unsure: float  # share of all images whose verdict is UNSURE

    HEADER = (
        "detector",
        "accuracy",
        "ROC-AUC",
        "ECE",
        "accuracy in scope",
        "REAL called FAKE",
        "FAKE called REAL",
        "UNSURE",
    )

    @classmethod
    def of(cls, block: dict) -> SummaryRow:
        figures, in_scope, shares = block[SPLIT], block.get(IN_SCOPE_SPLIT), block.get("verdicts") or {}
        share = lambda label, verdict: shares[label][verdict] if label in shares else None  # noqa: E731
        n = sum(part["n"] for part in shares.values()) or 1
        return cls(
            block.get("title", block.get("detector", "?")),
            figures["accuracy"],
            figures.get("roc_auc"),
            figures.get("ece"),
            in_scope["accuracy"] if in_scope else None,
            share(REAL_LABEL, FAKE_LABEL),
            share(FAKE_LABEL, REAL_LABEL),
            sum(part["n"] * part[UNSURE] for part in shares.values()) / n,
        )

    def cells(self) -> tuple[str, ...]:
        shown = lambda x, f=percent: "–" if x is None else f(x)  # noqa: E731
        return (
            self.title,
            percent(self.accuracy),
            shown(self.roc_auc, lambda x: f"{x:.4f}"),
            shown(self.ece, lambda x: f"{x:.4f}"),
            shown(self.in_scope_accuracy),
            shown(self.real_called_fake),
            shown(self.fake_called_real),
            percent(self.unsure),
        )


def summary_rows(report: dict) -> list[tuple[str, ...]]:
    return [SummaryRow.of(block).cells() for block in report["detectors"].values()]


def report_text(report: dict) -> str:
    """The report's table as plain text, for the console."""
    rows = [SummaryRow.HEADER, *summary_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def overview(report: dict) -> str:
    """One sentence: how many images, how many in scope, how many unreadable."""
    images = ", ".join(f"{n:,} {label}" for label, n in report.get("images", {}).items())
    scope = report.get("scope")
    in_scope = (
        f"{percent(scope['in_scope_share'])} of them are in scope (like CIFAKE; the others get OUT_OF_SCOPE)"
        if scope
        else "no scope score was loaded, so there are no in-scope figures"
    )
    bad = len(report.get("bad_files", []))
    return f"{images} images from {report.get('folder', '?')}; {in_scope}; {bad} files could not be read."


def report_markdown(report: dict) -> str:
    """The page's summary of an uploaded report: the sentence, the table, the unreadable files."""
    rows = [SummaryRow.HEADER, tuple("---" for _ in SummaryRow.HEADER), *summary_rows(report)]
    table = "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)
    bad = report.get("bad_files", [])
    listed = "".join(f"\n- `{b['file']}`: {b['error']}" for b in bad[:20]) + ("\n- …" if len(bad) > 20 else "")
    return f"{overview(report)}\n\n{table}" + (f"\n\n**Files that could not be read**{listed}" if bad else "")


@dataclass(frozen=True)
class FolderPlots:
    """The figures of a folder report for one chosen detector, in the page's order."""

    all_roc: go.Figure
    all_pr: go.Figure
    confusion: go.Figure
    reliability: go.Figure
    selective: go.Figure

    def figures(self) -> tuple[go.Figure, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


def folder_plots(report: dict, name: str | None = None) -> FolderPlots:
    """Every detector's curves on the folder, and ``name``'s (default: the first's) own figures."""
    view = ReportView(report["detectors"])
    if not view.names:  # no image could be read, or no detector of this registry answered
        return FolderPlots(*[empty_figure(f.name, NO_ANSWERS) for f in fields(FolderPlots)])
    name = name if name in view.names else view.names[0]
    block, title = view.reports[name], view.title(name)
    return FolderPlots(
        all_roc=roc_figure(view, view.names, SPLIT),
        all_pr=pr_figure(view, view.names, SPLIT),
        confusion=confusion_figure(view, name, SPLIT),
        reliability=reliability_figure(block, SPLIT, title),
        selective=selective_figure(block, SPLIT, title),
    )


def report_html(report: dict) -> str:
    """One self-contained page: plotly's script inline once, the table, the unreadable files, and
    every detector's figures."""
    names = ReportView(report["detectors"]).names
    figures = folder_plots(report).figures()[:2]
    figures += tuple(f for name in names for f in folder_plots(report, name).figures()[2:])
    plots = [plotly.io.to_html(f, full_html=False, include_plotlyjs=i == 0) for i, f in enumerate(figures)]
    bad = [(b["file"], b["error"]) for b in report["bad_files"]]
    title = f"CIFAKE detectors on {report['folder']}"
    return "\n".join(
        [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>",
            f"</head><body><h1>{html.escape(title)}</h1>",
            f"<p>{html.escape(overview(report))} Made {html.escape(report['created'])}.</p>",
            html_table(SummaryRow.HEADER, summary_rows(report)),
            f"<h2>Files that could not be read ({len(bad)})</h2>",
            html_table(("file", "why"), bad) if bad else "<p>none</p>",
            "<h2>Figures</h2>",
            *plots,
            "</body></html>",
        ]
    )


def html_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
