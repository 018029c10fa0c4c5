"""Every plotly figure of the Evaluation tab, from the evaluation reports (``train.evaluate``):
ROC and PR curves, confusion matrices, training curves, robustness, and for one detector the
threshold explorer, reliability diagram and accuracy against coverage. A figure whose data a
report lacks says so in place of the plot; per-split figures are ``report[split]``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cifake_models.labels import CLASSES, FAKE_LABEL, REAL_LABEL
from cifake_models.perturbations import FAMILIES
from cifake_models.registry import get_spec, list_detectors
from cifake_models.reports import REEVALUATE

SPLITS = {"test": "Official test split", "test_leak_free": "Leak-free test split (test images also in train removed)"}
COLOURS = plotly.colors.qualitative.D3
NOT_EVALUATED = "no evaluation report"


class Reported(Protocol):
    """What the figures read: the detectors' names and titles, and each one's report."""

    reports: dict[str, dict]

    @property
    def names(self) -> list[str]: ...

    def title(self, name: str) -> str: ...


@dataclass(frozen=True)
class ReportView:
    """Reports other than the shipped ones (a ``cifake-evaluate`` folder report's ``detectors``),
    seen as the figures see the page's state (``cifake_models.page.state.AppState``)."""

    reports: dict[str, dict]

    @property
    def names(self) -> list[str]:
        return [name for name in list_detectors() if name in self.reports]

    def title(self, name: str) -> str:
        return get_spec(name).title


def empty_figure(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(
        title=title, xaxis_visible=False, yaxis_visible=False, height=360, margin=dict(l=40, r=20, t=50, b=40)
    )
    return fig


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        height=380,
        margin=dict(l=50, r=20, t=50, b=45),
        legend=dict(x=1, xanchor="right", y=0, yanchor="bottom", bgcolor="rgba(255,255,255,0.7)"),
    )
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.01])
    return fig


def _figures(state: Reported, name: str, split: str) -> dict | None:
    return state.reports.get(name, {}).get(split)


def _curves_figure(state: Reported, names: list[str], split: str, kind: str) -> go.Figure:
    """ROC (``kind="roc"``) or precision-recall (``kind="pr"``) curves of ``names`` on one plot."""
    curve, (x, y), auc_key, auc_label, axes, titles, what = {
        "roc": (
            "roc_curve",
            ("fpr", "tpr"),
            "roc_auc",
            "AUC",
            ("false positive rate (REAL called FAKE)", "true positive rate (FAKE caught)"),
            ("ROC curves", "ROC"),
            "ROC curve",
        ),
        "pr": (
            "pr_curve",
            ("recall", "precision"),
            "pr_auc",
            "AP",
            ("recall", "precision"),
            ("Precision-recall curves (FAKE positive)", "Precision-recall"),
            "precision-recall curve",
        ),
    }[kind]
    fig = go.Figure()
    if kind == "roc":
        fig.add_trace(
            go.Scatter(
                x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance", hoverinfo="skip"
            )
        )
    drawn = 0
    for i, name in enumerate(names):
        figures = _figures(state, name, split) or {}
        points = figures.get(curve) or {}
        if not points.get(x):
            continue  # a detector without a report, or a report without this curve: the others still draw
        auc = figures.get(auc_key)
        fig.add_trace(
            go.Scatter(
                x=points[x],
                y=points[y],
                mode="lines",
                line=dict(color=COLOURS[i % len(COLOURS)]),
                name=f"{state.title(name)} ({auc_label} {auc:.3f})" if auc is not None else state.title(name),
            )
        )
        drawn += 1
    title = titles[0] if len(names) > 1 else f"{titles[1]}: {state.title(names[0])}"
    if not drawn:
        lacking = len(names) == 1 and _lacking(_figures(state, names[0], split), curve, title, what)
        return lacking or empty_figure(title, f"no report holds a {what}: {REEVALUATE}")
    return _layout(fig, title, *axes)


def roc_figure(state: Reported, names: list[str], split: str = "test") -> go.Figure:
    return _curves_figure(state, names, split, "roc")


def pr_figure(state: Reported, names: list[str], split: str = "test") -> go.Figure:
    return _curves_figure(state, names, split, "pr")


def _confusion_heatmap(matrix: np.ndarray, title: str) -> go.Figure:
    """Counts, and each count's share of its true class, rows and columns in :data:`CLASSES` order."""
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    text = [
        [f"{matrix[i, j]:,}<br>({100 * share[i, j]:.1f}% of true {CLASSES[i]})" for j in range(2)] for i in range(2)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=[f"predicted {c}" for c in CLASSES],
            y=[f"true {c}" for c in CLASSES],
            text=text,
            texttemplate="%{text}",
            colorscale=[[0, "#f7fbff"], [1, "#6baed6"]],
            zmin=0,
            zmax=1,
            showscale=False,
            hovertemplate="%{y}, %{x}: %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, height=380, margin=dict(l=90, r=20, t=50, b=45))
    return fig


def confusion_figure(state: Reported, name: str, split: str = "test") -> go.Figure:
    figures = _figures(state, name, split)
    if missing := _lacking(figures, "confusion_matrix", f"Confusion matrix: {state.title(name)}", "confusion matrix"):
        return missing
    return _confusion_heatmap(
        np.asarray(figures["confusion_matrix"]),
        f"Confusion matrix: {state.title(name)} (accuracy {figures['accuracy']:.4f}, n={figures['n']:,})",
    )


def training_figure(state: Reported, name: str) -> go.Figure:
    history = state.reports.get(name, {}).get("history") or []
    title = f"Training curves: {state.title(name)}"
    if not history:
        return empty_figure(
            title, "no epochs to plot: this detector is fitted in one pass" if name in state.reports else NOT_EVALUATED
        )
    epochs = [h["epoch"] for h in history]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for col, key in ((1, "loss"), (2, "accuracy")):
        for split, dash in (("train", None), ("val", "dash")):
            values = [h.get(f"{split}_{key}") for h in history]
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=values,
                    mode="lines+markers",
                    line=dict(dash=dash, color=COLOURS[0 if split == "train" else 1]),
                    name="train" if split == "train" else "validation",
                    legendgroup=split,
                    showlegend=col == 1,
                    hovertemplate=f"epoch %{{x}}: {split} {key} %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    # A checkpoint trained in stages (python -m train --init-from) restarts its schedule there.
    for before, after in itertools.pairwise(history):
        if after.get("stage", 1) != before.get("stage", 1):
            fig.add_vline(
                x=before["epoch"] + 0.5,
                line=dict(dash="dot", color="grey"),
                annotation_text=f"stage {after['stage']}",
                annotation_position="top left",
            )
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title, height=380, margin=dict(l=50, r=20, t=70, b=45))
    return fig


def robustness_figure(state: Reported) -> go.Figure:
    """Accuracy against perturbation strength, one panel per family, every detector; each line
    starts at the detector's accuracy on the unchanged images of the same sample."""
    names = [n for n in state.names if state.reports.get(n, {}).get("robustness")]
    if not names:
        return empty_figure(
            "Accuracy on resized and re-saved images", f"no report holds robustness figures: {REEVALUATE}"
        )
    families = list(FAMILIES)
    columns = 3
    fig = make_subplots(rows=-(-len(families) // columns), cols=columns, subplot_titles=families, vertical_spacing=0.16)
    for i, name in enumerate(names):
        robustness = state.reports[name]["robustness"]
        for j, family in enumerate(families):
            scores = sorted((s["strength"], s["accuracy"]) for s in robustness["scores"] if s["family"] == family)
            points = sorted([(FAMILIES[family].unchanged, robustness["clean_accuracy"]), *scores])
            fig.add_trace(
                go.Scatter(
                    x=[x for x, _ in points],
                    y=[y for _, y in points],
                    mode="lines+markers",
                    name=state.title(name),
                    legendgroup=name,
                    showlegend=j == 0,
                    line=dict(color=COLOURS[i % len(COLOURS)]),
                    hovertemplate=f"{state.title(name)}: %{{y:.1%}} at {family} %{{x}}<extra></extra>",
                ),
                row=j // columns + 1,
                col=j % columns + 1,
            )
            fig.update_xaxes(
                title_text=FAMILIES[family].strength, title_font_size=11, row=j // columns + 1, col=j % columns + 1
            )
    n = robustness["n"]
    fig.update_yaxes(tickformat=".0%")
    fig.update_layout(
        title=f"Accuracy on test images changed as on the way to an upload ({n:,} balanced test images,"
        " each detector at its own threshold)",
        height=620,
        margin=dict(l=50, r=20, t=80, b=50),
    )
    return fig


def scope_figures(report: dict | None) -> tuple[go.Figure, go.Figure]:
    """The scope score's distribution on CIFAKE test and on each scope set, and the coverage trade-off:
    as the cut moves, the share of CIFAKE test kept in scope against the share of each set flagged."""
    title = "Out-of-scope score"
    if not report or "distributions" not in report:
        message = "no scope report: run python -m train.evaluate --only scope"
        return empty_figure(title, message), empty_figure("Coverage trade-off", message)
    dist, cut = report["distributions"], report["rule"]["cut"]
    edges = np.asarray(dist["edges"])
    centres = (edges[1:] + edges[:-1]) / 2
    histogram = go.Figure()
    for i, (name, counts) in enumerate(dist["counts"].items()):
        share = np.asarray(counts) / max(1, sum(counts))
        colour = COLOURS[i % len(COLOURS)]
        histogram.add_trace(go.Scatter(x=centres, y=share, mode="lines", name=name, line=dict(color=colour)))
    histogram.add_vline(x=cut, line_dash="dash", annotation_text=f"cut {cut:.2f}")
    histogram.update_layout(
        title=f"{title}: in scope at or below the cut",
        xaxis_title="score (log-odds)",
        yaxis_title="share of the set",
        height=420,
        margin=dict(l=50, r=20, t=50, b=45),
    )
    tradeoff = go.Figure()
    curve = dist["tradeoff"]
    kept = np.asarray(curve["in_scope"]["CIFAKE test"])
    for i, (name, inside) in enumerate(curve["in_scope"].items()):
        if name != "CIFAKE test":
            tradeoff.add_trace(
                go.Scatter(
                    x=kept,
                    y=1 - np.asarray(inside),
                    mode="lines",
                    name=name,
                    line=dict(color=COLOURS[(i) % len(COLOURS)]),
                )
            )
    tradeoff.add_vline(x=1 - report["test"]["flagged"], line_dash="dash", annotation_text="shipped cut")
    _layout(
        tradeoff,
        "Coverage trade-off: CIFAKE test kept in scope against each set flagged",
        "share of CIFAKE test in scope",
        "share of the set flagged out of scope",
    )
    tradeoff.update_xaxes(range=[min(kept) - 0.01, 1.01])
    return histogram, tradeoff


# --------------------------------------------------------------------------- one detector's trust


@dataclass(frozen=True)
class ThresholdPoint:
    """A detector's calls on one split when it says FAKE at ``P(FAKE) >= threshold``."""

    threshold: float
    fake_called_fake: int  # true positives
    real_called_fake: int  # false positives
    n_fake: int
    n_real: int

    @property
    def precision(self) -> float | None:
        """Share of the images called FAKE that are FAKE; None when none is called FAKE."""
        called = self.fake_called_fake + self.real_called_fake
        return self.fake_called_fake / called if called else None

    @property
    def recall(self) -> float | None:
        return self.fake_called_fake / self.n_fake if self.n_fake else None

    @property
    def false_positive_rate(self) -> float | None:
        return self.real_called_fake / self.n_real if self.n_real else None

    @property
    def accuracy(self) -> float:
        return (self.fake_called_fake + self.n_real - self.real_called_fake) / max(self.n_fake + self.n_real, 1)

    def confusion_matrix(self) -> np.ndarray:
        """Rows true, columns predicted, both in :data:`CLASSES` order, as the reports store it."""
        counts = {
            (FAKE_LABEL, FAKE_LABEL): self.fake_called_fake,
            (FAKE_LABEL, REAL_LABEL): self.n_fake - self.fake_called_fake,
            (REAL_LABEL, FAKE_LABEL): self.real_called_fake,
            (REAL_LABEL, REAL_LABEL): self.n_real - self.real_called_fake,
        }
        return np.array([[counts[true, called] for called in CLASSES] for true in CLASSES])


def threshold_point(sweep: dict, threshold: float) -> ThresholdPoint:
    """The counts of a split's ``threshold_sweep`` at its stored threshold nearest ``threshold``
    (the sweep holds a grid of thresholds, not every value)."""
    i = int(np.argmin(np.abs(np.asarray(sweep["threshold"], dtype=float) - threshold)))
    return ThresholdPoint(
        float(sweep["threshold"][i]),
        int(sweep["fake_called_fake"][i]),
        int(sweep["real_called_fake"][i]),
        int(sweep["n_fake"]),
        int(sweep["n_real"]),
    )


def starting_threshold(report: dict) -> float:
    """Where the explorer starts: the detector's own threshold, chosen on validation (0.5 without a report)."""
    return float((report.get("threshold") or {}).get("value", 0.5))


def _lacking(figures: dict | None, key: str, heading: str, what: str) -> go.Figure | None:
    """A figure that says what is missing, or None when a split's ``figures`` hold ``key`` to plot."""
    if figures is None:
        return empty_figure(heading, NOT_EVALUATED)
    if not figures.get(key):
        return empty_figure(heading, f"this report has no {what}: {REEVALUATE}")
    return None


def threshold_explorer(figures: dict | None, threshold: float, title: str) -> tuple[go.Figure, ThresholdPoint | None]:
    """The confusion matrix of one detector (``title``) on one split's ``figures`` at the stored
    threshold nearest ``threshold``, and its counts; a message and None where there is no sweep."""
    heading = f"Threshold explorer: {title}"
    if missing := _lacking(figures, "threshold_sweep", heading, "threshold sweep"):
        return missing, None
    point = threshold_point(figures["threshold_sweep"], threshold)
    # A short title, so that it fits half the page: the summary beside the plot says the rest.
    return _confusion_heatmap(point.confusion_matrix(), f"{heading}, P(FAKE) ≥ {point.threshold:.3f}"), point


def reliability_figure(report: dict, split: str, title: str) -> go.Figure:
    """Share of FAKE images against mean P(FAKE), per bin of P(FAKE): on the diagonal, a
    probability means what it says. Beside it, before calibration, where the report has that."""
    heading = f"Reliability: {title}"
    if missing := _lacking(report.get(split), "reliability", heading, "reliability diagram"):
        return missing
    after = report[split]["reliability"]
    before = ((report.get("calibration") or {}).get(split) or {}).get("reliability_before")
    fig = go.Figure(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line=dict(dash="dot", color="grey"),
            name="perfectly calibrated",
            hoverinfo="skip",
        )
    )
    curves = (
        [("before calibration", before, COLOURS[1]), ("after calibration", after, COLOURS[0])]
        if before
        else [(title, after, COLOURS[0])]
    )
    for name, bins, colour in curves:
        fig.add_trace(
            go.Scatter(
                x=bins["p_fake_mean"],
                y=bins["fake_share"],
                customdata=bins["count"],
                mode="lines+markers",
                name=name,
                line=dict(color=colour),
                hovertemplate=f"{name}: mean P(FAKE) %{{x:.3f}},"
                " FAKE %{y:.1%} of %{customdata:,} images<extra></extra>",
            )
        )
    ece = report[split].get("ece")
    return _layout(
        fig,
        heading + (f" (expected calibration error {ece:.4f})" if ece is not None else ""),
        "mean P(FAKE) in the bin",
        "share of the bin's images that are FAKE",
    )


def selective_figure(report: dict, split: str, title: str) -> go.Figure:
    """Accuracy on the images a detector decides against the share it decides, as the band in
    which it says UNSURE widens; the band it uses marked, where the report has it."""
    heading = f"Accuracy against coverage: {title}"
    if missing := _lacking(report.get(split), "selective", heading, "accuracy/coverage curve"):
        return missing
    curve = report[split]["selective"]
    fig = go.Figure(
        go.Scatter(
            x=curve["coverage"],
            y=curve["accuracy"],
            customdata=curve["confidence"],
            mode="lines",
            name="decided when confidence ≥ level",
            line=dict(color=COLOURS[0]),
            hovertemplate="confidence ≥ %{customdata:.3f}: %{x:.1%} decided, %{y:.2%} right<extra></extra>",
        )
    )
    chosen = (report.get("unsure") or {}).get(split)
    if chosen:
        fig.add_trace(
            go.Scatter(
                x=[chosen["coverage"]],
                y=[chosen["accuracy"]],
                mode="markers",
                name="its unsure band",
                marker=dict(size=12, symbol="diamond", color=COLOURS[3]),
                hovertemplate="its band: %{x:.1%} decided, %{y:.2%} right<extra></extra>",
            )
        )
    fig.update_layout(
        title=heading,
        xaxis_title="coverage (share of images decided)",
        yaxis_title="accuracy on the images decided",
        height=380,
        margin=dict(l=50, r=20, t=50, b=45),
        legend=dict(x=0, xanchor="left", y=0, yanchor="bottom", bgcolor="rgba(255,255,255,0.7)"),
    )
    fig.update_xaxes(range=[-0.01, 1.01], tickformat=".0%")
    fig.update_yaxes(tickformat=".0%")
    return fig


# --------------------------------------------------------------------------- the tab


@dataclass(frozen=True)
class EvaluationPlots:
    """The Evaluation tab's figures for one chosen detector and split, in the page's order."""

    all_roc: go.Figure
    all_pr: go.Figure
    confusion: go.Figure
    roc: go.Figure
    pr: go.Figure
    training: go.Figure
    reliability: go.Figure
    selective: go.Figure

    def figures(self) -> tuple[go.Figure, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


def chosen_detector(state: Reported, name: str | None) -> str:
    """``name`` if registered, else the first detector with a report (else the first detector)."""
    if name in state.names:
        return name
    return next((n for n in state.names if n in state.reports), state.names[0])


def evaluation_plots(state: Reported, name: str, split: str) -> EvaluationPlots:
    """Every detector's curves on ``split`` (a key of :data:`SPLITS`), and ``name``'s own figures."""
    names = [n for n in state.names if n in state.reports]
    name = chosen_detector(state, name)
    report, title = state.reports.get(name, {}), state.title(name)
    return EvaluationPlots(
        all_roc=roc_figure(state, names or [name], split),
        all_pr=pr_figure(state, names or [name], split),
        confusion=confusion_figure(state, name, split),
        roc=roc_figure(state, [name], split),
        pr=pr_figure(state, [name], split),
        training=training_figure(state, name),
        reliability=reliability_figure(report, split, title),
        selective=selective_figure(report, split, title),
    )
