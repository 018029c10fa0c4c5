"""CIFAKE detectors in a browser: is this a real photo (CIFAR-10) or AI-generated (Stable Diffusion)?

Run ``python app.py`` and open http://127.0.0.1:7860. Three tabs:

* **Detect**: drop, pick or paste images (or click an example); every detector's P(REAL) and
  P(FAKE), its verdict, how far the detectors agree, and the 32x32 image they looked at.
  Several images give a table that downloads as CSV.
* **Compare models**: every detector's figures on CIFAKE's official test split beside the paper's.
* **Evaluation**: confusion matrices, ROC and PR curves, training curves (plotly).

Programs call two named endpoints with ``gradio_client``: ``/predict`` (one image file ->
``{detector: {"REAL": p, "FAKE": p}}``) and ``/predict_batch`` (files -> a list of
``{"file", "error", "notes", "predictions"}``). Requests that arrive together share forward
passes (``cifake_models.serving``), and the networks run in ONNX Runtime.

Checkpoints and evaluation reports are read once, at start-up, from ``$CIFAKE_CHECKPOINTS``
and ``$CIFAKE_REPORTS`` (default ``assets/checkpoints`` and ``assets/reports``). A detector
whose checkpoint is missing or corrupt is shown as unavailable, with the reason; the others
keep working.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from PIL import Image

import cifake_models as cm
from cifake_models.perturbations import FAMILIES
from cifake_models.reports import describe_recipe
from cifake_models.results import FAKE, REAL, Answers, ImageResult, csv_header, results, stack
from cifake_models.serving import SharedPasses
from cifake_models.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES, Decoded, Failed, UploadError, decode_many, decode_upload

REPO_ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
MAX_BATCH_FILES = 100  # files per request; more are reported as skipped, not processed
# /predict requests decoded at once; they then wait for a shared forward pass (cifake_models.serving),
# so more of them at a time means larger, cheaper passes, not more work in parallel.
PREDICT_CONCURRENCY = 16
SERVER_MAX_FILE_SIZE = 2 * MAX_UPLOAD_BYTES  # gradio refuses bigger uploads outright
MAX_CARDS = 24  # result cards drawn per request; the table and CSV hold every file
RESULTS_DIR = Path(tempfile.gettempdir()) / "cifake-app-results"  # CSV downloads, pruned hourly
CACHE_SECONDS = 3600  # uploads and CSVs older than this are deleted
SPLITS = {"Official test split": "test", "Leak-free test split (test images also in train removed)": "test_leak_free"}
COLOURS = plotly.colors.qualitative.D3


# --------------------------------------------------------------------------- detectors


@dataclass
class Bank:
    """Every registered detector, loaded once: the usable ones, and why the others are not."""

    checkpoint_dir: Path
    report_dir: Path
    detectors: dict[str, cm.Detector] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)
    report_errors: dict[str, str] = field(default_factory=dict)
    load_seconds: float = 0.0
    passes: SharedPasses | None = None  # every request's forward passes, shared

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
        with the requests running at the same time (see ``cifake_models.results.predict_all``)."""
        if self.passes is None:
            self.passes = SharedPasses(self.detectors)
        return self.passes.predict(batch)


def resolve_dirs(checkpoint_dir: str | Path | None = None, report_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Explicit arguments, then ``$CIFAKE_CHECKPOINTS`` / ``$CIFAKE_REPORTS``, then assets/."""
    checkpoint_dir = checkpoint_dir or os.environ.get("CIFAKE_CHECKPOINTS") or cm.CHECKPOINT_DIR
    report_dir = report_dir or os.environ.get("CIFAKE_REPORTS") or cm.REPORT_DIR
    return Path(checkpoint_dir), Path(report_dir)


def load_bank(checkpoint_dir: str | Path | None = None, report_dir: str | Path | None = None) -> Bank:
    checkpoint_dir, report_dir = resolve_dirs(checkpoint_dir, report_dir)
    bank = Bank(checkpoint_dir, report_dir)
    start = time.perf_counter()
    for name in cm.list_detectors():
        try:
            bank.detectors[name] = cm.load_detector(name, checkpoint_dir, loaded=bank.detectors).prepare_for_serving()
        except cm.CheckpointError as error:
            bank.unavailable[name] = str(error)
        except Exception as error:  # e.g. a checkpoint of an older architecture
            bank.unavailable[name] = f"could not load {cm.get_spec(name).checkpoint_file}: {type(error).__name__}: {error}"
        try:
            bank.reports[name] = cm.load_report(name, report_dir)
        except FileNotFoundError as error:
            bank.report_errors[name] = str(error)
        except Exception as error:
            bank.report_errors[name] = f"unreadable report: {type(error).__name__}: {error}"
    bank.load_seconds = time.perf_counter() - start
    return bank


# --------------------------------------------------------------------------- predictions


def analyse(bank: Bank, items: list[Decoded | Failed]) -> list[ImageResult]:
    """One result per upload, in order; every decoded image goes through one shared pass."""
    batch = stack(items)
    return results(items, bank.predict(batch) if len(batch) else ({}, {}, {}), bank.unavailable)


def limit_batch(paths: list) -> tuple[list, list[Failed]]:
    paths = [p for p in (paths or []) if p is not None]
    skipped = [Failed(os.path.basename(os.fspath(p)), f"not processed: at most {MAX_BATCH_FILES} files per request")
               for p in paths[MAX_BATCH_FILES:]]
    return paths[:MAX_BATCH_FILES], skipped


def predict_file(bank: Bank, path) -> dict[str, dict[str, float]]:
    """``{detector: {"REAL": p, "FAKE": p}}`` for one uploaded file; unavailable detectors are left
    out. Raises :class:`UploadError` for a file that is not a usable image."""
    if path is None:
        raise UploadError("no file was sent")
    result = analyse(bank, [decode_upload(path)])[0]
    if result.error:
        raise UploadError(result.error)
    return result.probabilities()


def predict_files(bank: Bank, paths: list) -> list[dict]:
    """One JSON-ready result per file, in order; a bad file gets its ``error``, never an exception."""
    paths, skipped = limit_batch(paths)
    return [r.api_record() for r in analyse(bank, decode_many(paths) + skipped)]


# --------------------------------------------------------------------------- detect tab output


def pixels_data_uri(array: np.ndarray, scale: int = 4) -> str:
    """The 32x32 array upscaled with nearest neighbour (no smoothing), as a PNG data URI."""
    image = Image.fromarray(array).resize((32 * scale, 32 * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _bar(p: float, colour: str) -> str:
    return (f'<div class="bar"><div class="fill" style="width:{100 * p:.1f}%;background:{colour}"></div>'
            f'<span>{100 * p:.1f}%</span></div>')


def result_card(bank: Bank, result: ImageResult) -> str:
    name = html.escape(result.file)
    if result.error and not result.predictions:
        return f'<div class="card error"><div class="head"><b>{name}</b></div><p class="msg">⚠ {html.escape(result.error)}</p></div>'
    rows = []
    for det in bank.names:
        title = html.escape(bank.title(det))
        if det in result.predictions:
            p = result.predictions[det]
            verdict = p.verdict
            threshold = bank.detectors[det].threshold
            rows.append(
                f'<tr><td class="det">{title}</td><td>{_bar(p.p_real, "#2e7d32")}</td><td>{_bar(p.p_fake, "#c62828")}</td>'
                f'<td class="verdict {verdict.lower()}">{verdict}</td><td class="thr">{threshold:.3f}</td></tr>'
            )
        else:
            reason = bank.unavailable.get(det) or result.detector_errors.get(det, "unavailable")
            rows.append(f'<tr class="na"><td class="det">{title}</td><td colspan="4">unavailable: {html.escape(reason)}</td></tr>')
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes) or "<li>none: already 32x32 RGB</li>"
    verdict_class = result.majority.lower()
    committees = "".join(
        f'<span class="agree committee {p.verdict.lower()}">{html.escape(bank.title(n))}: {p.verdict}</span>'
        for n, p in result.committees.items()
    )
    return f"""<div class="card">
<div class="head"><b>{name}</b> {committees}<span class="agree {verdict_class}">{html.escape(result.agreement)}</span></div>
<div class="body">
<figure><img src="{pixels_data_uri(result.array)}" width="128" height="128" alt="32x32 input of {name}">
<figcaption>what the detectors saw: 32x32, shown 4x (nearest neighbour)</figcaption></figure>
<div class="probs"><table><thead><tr><th>Detector</th><th>P(REAL)</th><th>P(FAKE)</th><th>Verdict</th><th title="P(FAKE) at or above which the detector says FAKE, chosen on the validation split">Threshold</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<div class="notes">Conversions: <ul>{notes}</ul></div></div></div></div>"""


CARD_CSS = """
.card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px 12px; margin: 0 0 12px 0; }
.card.error { border-color: #c62828; }
.card .head { margin-bottom: 6px; font-size: 1.05em; }
.card .msg { color: #c62828; margin: 4px 0; }
.agree { margin-left: 10px; padding: 2px 8px; border-radius: 10px; background: #eee; color: #222; font-weight: 600; }
.agree.fake { background: #fde0e0; color: #8e0000; }
.agree.real { background: #dff3e0; color: #1b5e20; }
.body { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
figure { margin: 0; width: 140px; }
figure img { image-rendering: pixelated; border: 1px solid #999; }
figcaption { font-size: 0.75em; color: var(--body-text-color-subdued); }
.probs { flex: 1; min-width: 320px; }
.probs table { width: 100%; border-collapse: collapse; font-size: 0.92em; }
.probs th, .probs td { padding: 3px 6px; border-bottom: 1px solid var(--border-color-primary); text-align: left; }
.bar { position: relative; background: #eee; height: 18px; min-width: 90px; border-radius: 3px; }
.bar .fill { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 3px; opacity: 0.75; }
.bar span { position: relative; padding-left: 4px; font-size: 0.85em; color: #111; }
.verdict.fake { color: #c62828; font-weight: 700; }
.verdict.real { color: #2e7d32; font-weight: 700; }
.thr { color: var(--body-text-color-subdued); }
tr.na td { color: var(--body-text-color-subdued); font-style: italic; }
.notes { font-size: 0.85em; margin-top: 4px; }
.notes ul { margin: 2px 0 0 18px; padding: 0; }
.more { font-style: italic; }
"""


def results_html(bank: Bank, answers: list[ImageResult]) -> str:
    if not answers:
        return '<p class="more">Drop images above, paste one, or click an example to see every detector\'s answer.</p>'
    cards = [result_card(bank, r) for r in answers[:MAX_CARDS]]
    if len(answers) > MAX_CARDS:
        cards.append(f'<p class="more">Showing the first {MAX_CARDS} of {len(answers)} files; the table below and the CSV hold all of them.</p>')
    return "\n".join(cards)


def results_table(bank: Bank, answers: list[ImageResult]) -> pd.DataFrame:
    """The table shown under the cards: one row per file, P(FAKE) per available detector."""
    columns = ["File", "Majority", "Agreement"] + [bank.title(n) for n in bank.detectors] + ["Notes / error"]
    rows = []
    for r in answers:
        row = [r.file, r.majority, r.agreement]
        row += [round(r.predictions[n].p_fake, 4) if n in r.predictions else None for n in bank.detectors]
        row.append(r.error or "; ".join(r.notes))
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def results_widths(bank: Bank) -> list[str]:
    """Column widths of :func:`results_table`, so long notes do not squeeze the probabilities."""
    share = 46 / max(len(bank.detectors), 1)
    return ["14%", "8%", "12%"] + [f"{share:.1f}%"] * len(bank.detectors) + ["20%"]


def write_csv(bank: Bank, answers: list[ImageResult]) -> str:
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
        writer.writerow(csv_header(bank.names))
        writer.writerows(r.row(bank.names) for r in answers)
    return str(path)


def detect_outputs(bank: Bank, paths: list) -> tuple[str, pd.DataFrame, dict]:
    paths, skipped = limit_batch(paths)
    if not paths:
        return results_html(bank, []), results_table(bank, []), gr.update(value=None, visible=False)
    answers = analyse(bank, decode_many(paths) + skipped)
    return (results_html(bank, answers), results_table(bank, answers),
            gr.update(value=write_csv(bank, answers), visible=True))


# --------------------------------------------------------------------------- compare tab


def compare_table(bank: Bank) -> pd.DataFrame:
    rows = []
    for name in bank.names:
        spec, report = cm.get_spec(name), bank.reports.get(name, {})
        test, free, robustness = report.get("test", {}), report.get("test_leak_free", {}), report.get("robustness", {})
        per_class = test.get("per_class", {})
        status = "available" if name in bank.detectors else f"unavailable: {bank.unavailable.get(name)}"
        if name not in bank.reports:
            status += f" (no evaluation report: {bank.report_errors.get(name)})"
        checkpoint = bank.checkpoint_dir / spec.checkpoint_file
        size = checkpoint.stat().st_size if checkpoint.is_file() else report.get("checkpoint", {}).get("size_bytes")
        ms = report.get("ms_per_image", {})
        rnd = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        rows.append({
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
            "FAKE precision": rnd(per_class.get(FAKE, {}).get("precision")),
            "FAKE recall": rnd(per_class.get(FAKE, {}).get("recall")),
            "FAKE F1": rnd(per_class.get(FAKE, {}).get("f1")),
            "REAL precision": rnd(per_class.get(REAL, {}).get("precision")),
            "REAL recall": rnd(per_class.get(REAL, {}).get("recall")),
            "REAL F1": rnd(per_class.get(REAL, {}).get("f1")),
            "Threshold P(FAKE)": rnd(test.get("threshold")),
            "Test images": test.get("n"),
            "Initialisation": bank.initialisation(name),
            "Our recipe": describe_recipe(report) if report.get("recipe") else "",
            "Paper recipe": spec.paper.recipe if spec.paper else "not in the paper",
            "Checkpoint MB": None if size is None else round(size / 1e6, 1),
            "ms/image (1)": None if ms.get("batch_1") is None else round(ms["batch_1"], 2),
            "ms/image (64)": None if ms.get("batch_64") is None else round(ms["batch_64"], 2),
            "Trained on": (report.get("training") or {}).get("hardware"),
        })
    return pd.DataFrame(rows)


COMPARE_GROUPS = {
    "Every detector on CIFAKE's official test split, ours beside the paper's": [
        "Detector", "Status", "Accuracy", "Paper accuracy", "ROC-AUC", "Paper ROC-AUC", "PR-AUC", "Leak-free accuracy",
        "Leak-free ROC-AUC", "Threshold P(FAKE)", "Checkpoint MB", "ms/image (1)", "ms/image (64)"],
    "On what people upload: the test images resized, re-compressed, blurred, shifted or cropped first (the robustness suite)": [
        "Detector", "Accuracy", "Resized/re-saved: mean accuracy", "Resized/re-saved: worst accuracy", "Worst case"],
    "Per class on the test split (FAKE is the positive class)": [
        "Detector", "Test images", "FAKE precision", "FAKE recall", "FAKE F1", "REAL precision", "REAL recall", "REAL F1"],
    "How each detector was trained": ["Detector", "Initialisation", "Our recipe", "Paper recipe", "Trained on"],
}


def compare_notes(bank: Bank) -> str:
    lines = []
    for name in bank.names:
        spec, report = cm.get_spec(name), bank.reports.get(name, {})
        notes = report.get("notes") or spec.notes
        free = report.get("test_leak_free", {})
        extra = f" Leak-free split: {free.get('removed')} test images that also occur in train removed." if free else ""
        if notes or extra:
            lines.append(f"- **{spec.title}**: {notes}{extra}")
    evaluated = next((r.get("evaluated", {}) for r in bank.reports.values()), {})
    head = ("Figures on CIFAKE's official test split (FAKE is the positive class for ROC and PR). "
            "A verdict is FAKE when P(FAKE) reaches the detector's threshold, chosen on a validation split "
            "carved out of train, never on test; so is whether P is averaged over the image and its mirror image "
            "(the recipe says where). Times per image are from the evaluation run"
            + (f" ({evaluated.get('hardware')})" if evaluated.get("hardware") else "") + ".")
    return head + "\n\n" + "\n".join(lines)


# --------------------------------------------------------------------------- evaluation tab


def _empty_figure(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=360, margin=dict(l=40, r=20, t=50, b=40))
    return fig


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=380, margin=dict(l=50, r=20, t=50, b=45),
                      legend=dict(x=1, xanchor="right", y=0, yanchor="bottom", bgcolor="rgba(255,255,255,0.7)"))
    fig.update_xaxes(range=[-0.01, 1.01])
    fig.update_yaxes(range=[-0.01, 1.01])
    return fig


def _figures(bank: Bank, name: str, split: str) -> dict | None:
    return bank.reports.get(name, {}).get(split)


def _curves_figure(bank: Bank, names: list[str], split: str, kind: str) -> go.Figure:
    """ROC (``kind="roc"``) or precision-recall (``kind="pr"``) curves of ``names`` on one plot."""
    curve, (x, y), auc_key, auc_label, axes, titles = {
        "roc": ("roc_curve", ("fpr", "tpr"), "roc_auc", "AUC",
                ("false positive rate (REAL called FAKE)", "true positive rate (FAKE caught)"), ("ROC curves", "ROC")),
        "pr": ("pr_curve", ("recall", "precision"), "pr_auc", "AP", ("recall", "precision"),
               ("Precision-recall curves (FAKE positive)", "Precision-recall")),
    }[kind]
    fig = go.Figure()
    if kind == "roc":
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance", hoverinfo="skip"))
    for i, name in enumerate(names):
        figures = _figures(bank, name, split)
        if not figures or not figures[curve][x]:
            continue
        auc = figures.get(auc_key)
        fig.add_trace(go.Scatter(x=figures[curve][x], y=figures[curve][y], mode="lines",
                                 line=dict(color=COLOURS[i % len(COLOURS)]),
                                 name=f"{bank.title(name)} ({auc_label} {auc:.3f})" if auc is not None else bank.title(name)))
    title = titles[0] if len(names) > 1 else f"{titles[1]}: {bank.title(names[0])}"
    return _layout(fig, title, *axes)


def roc_figure(bank: Bank, names: list[str], split: str = "test") -> go.Figure:
    return _curves_figure(bank, names, split, "roc")


def pr_figure(bank: Bank, names: list[str], split: str = "test") -> go.Figure:
    return _curves_figure(bank, names, split, "pr")


def confusion_figure(bank: Bank, name: str, split: str = "test") -> go.Figure:
    figures = _figures(bank, name, split)
    if not figures:
        return _empty_figure(f"Confusion matrix: {bank.title(name)}", "no evaluation report")
    matrix = np.asarray(figures["confusion_matrix"])
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    text = [[f"{matrix[i, j]:,}<br>({100 * share[i, j]:.1f}% of true {cm.CLASSES[i]})" for j in range(2)] for i in range(2)]
    fig = go.Figure(go.Heatmap(z=share, x=[f"predicted {c}" for c in cm.CLASSES], y=[f"true {c}" for c in cm.CLASSES],
                               text=text, texttemplate="%{text}", colorscale=[[0, "#f7fbff"], [1, "#6baed6"]], zmin=0, zmax=1, showscale=False,
                               hovertemplate="%{y}, %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=f"Confusion matrix: {bank.title(name)} (accuracy {figures['accuracy']:.4f}, n={figures['n']:,})",
                      height=380, margin=dict(l=90, r=20, t=50, b=45))
    return fig


def training_figure(bank: Bank, name: str) -> go.Figure:
    history = bank.reports.get(name, {}).get("history") or []
    title = f"Training curves: {bank.title(name)}"
    if not history:
        return _empty_figure(title, "no epochs to plot: this detector is fitted in one pass" if name in bank.reports else "no evaluation report")
    epochs = [h["epoch"] for h in history]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for col, key in ((1, "loss"), (2, "accuracy")):
        for split, dash in (("train", None), ("val", "dash")):
            values = [h.get(f"{split}_{key}") for h in history]
            fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", line=dict(dash=dash, color=COLOURS[0 if split == "train" else 1]),
                                     name="train" if split == "train" else "validation", legendgroup=split, showlegend=col == 1,
                                     hovertemplate=f"epoch %{{x}}: {split} {key} %{{y:.4f}}<extra></extra>"), row=1, col=col)
    # A checkpoint trained in stages (python -m train --init-from) restarts its schedule there.
    for before, after in zip(history, history[1:]):
        if after.get("stage", 1) != before.get("stage", 1):
            fig.add_vline(x=before["epoch"] + 0.5, line=dict(dash="dot", color="grey"),
                          annotation_text=f"stage {after['stage']}", annotation_position="top left")
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title, height=380, margin=dict(l=50, r=20, t=70, b=45))
    return fig


def robustness_figure(bank: Bank) -> go.Figure:
    """Accuracy against perturbation strength, one panel per family, every detector; each line
    starts at the detector's accuracy on the unchanged images of the same sample."""
    names = [n for n in bank.names if bank.reports.get(n, {}).get("robustness")]
    if not names:
        return _empty_figure("Accuracy on resized and re-saved images", "no report holds robustness figures: run python -m train.evaluate")
    families = list(FAMILIES)
    columns = 3
    fig = make_subplots(rows=-(-len(families) // columns), cols=columns, subplot_titles=families, vertical_spacing=0.16)
    for i, name in enumerate(names):
        robustness = bank.reports[name]["robustness"]
        for j, family in enumerate(families):
            scores = sorted((s["strength"], s["accuracy"]) for s in robustness["scores"] if s["family"] == family)
            points = sorted([(FAMILIES[family].unchanged, robustness["clean_accuracy"]), *scores])
            fig.add_trace(go.Scatter(
                x=[x for x, _ in points], y=[y for _, y in points], mode="lines+markers", name=bank.title(name),
                legendgroup=name, showlegend=j == 0, line=dict(color=COLOURS[i % len(COLOURS)]),
                hovertemplate=f"{bank.title(name)}: %{{y:.1%}} at {family} %{{x}}<extra></extra>"), row=j // columns + 1, col=j % columns + 1)
            fig.update_xaxes(title_text=FAMILIES[family].strength, title_font_size=11, row=j // columns + 1, col=j % columns + 1)
    n = robustness["n"]
    fig.update_yaxes(tickformat=".0%")
    fig.update_layout(title=f"Accuracy on test images changed as on the way to an upload ({n:,} balanced test images, each detector at its own threshold)",
                      height=620, margin=dict(l=50, r=20, t=80, b=50))
    return fig


def evaluation_plots(bank: Bank, name: str, split_label: str) -> tuple[go.Figure, ...]:
    split = SPLITS.get(split_label, "test")
    names = [n for n in bank.names if n in bank.reports]
    name = name if name in bank.names else (names[0] if names else bank.names[0])
    return (roc_figure(bank, names or [name], split), pr_figure(bank, names or [name], split),
            confusion_figure(bank, name, split), roc_figure(bank, [name], split), pr_figure(bank, [name], split),
            training_figure(bank, name))


# --------------------------------------------------------------------------- page


def _percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{100 * fraction:.1f}%"


def detectors_markdown(bank: Bank) -> str:
    rows = ["| Detector | Status | Initialisation | Threshold P(FAKE) | Accuracy on CIFAKE's test files "
            "| …resized or re-saved first: mean (worst) |", "|---|---|---|---|---:|---:|"]
    for name in bank.names:
        if name in bank.detectors:
            status, threshold = "✅ available", f"{bank.detectors[name].threshold:.3f}"
            if getattr(bank.detectors[name], "unavailable", None):  # a committee serving on fewer members
                status += f" without {', '.join(bank.detectors[name].unavailable)} (weights fitted for the members it has)"
        else:
            status, threshold = f"❌ unavailable: {bank.unavailable[name]}", ""
        report = bank.reports.get(name, {})
        robustness = report.get("robustness")
        robust = (f"{_percent(robustness['mean_accuracy'])} ({_percent(robustness['worst']['accuracy'])}, "
                  f"{robustness['worst']['perturbation']})") if robustness else ""
        rows.append(f"| {bank.title(name)} | {status.replace('|', '/')} | {bank.initialisation(name)} | {threshold} "
                    f"| {_percent((report.get('test') or {}).get('accuracy'))} | {robust} |")
    return "\n".join(rows)


def scope_statement(bank: Bank) -> str:
    """How accurate the detectors are on CIFAKE's own files and on resized or re-saved copies, from the reports."""
    reports = {n: r for n, r in bank.reports.items() if n in bank.detectors and r.get("robustness")}
    if not reports:
        return ""
    clean = [r["test"]["accuracy"] for r in reports.values()]
    mean = [r["robustness"]["mean_accuracy"] for r in reports.values()]
    worst_name, worst = min(((n, r["robustness"]["worst"]) for n, r in reports.items()), key=lambda item: item[1]["accuracy"])
    return (
        f"On CIFAKE's own test files the detectors are right {_percent(min(clean))} to {_percent(max(clean))} of the time. "
        f"Uploads are rarely those files: on the same test images resized, re-compressed, blurred, shifted or cropped "
        f"first, they are right {_percent(min(mean))} to {_percent(max(mean))} of the time on average, and "
        f"{bank.title(worst_name)} falls to {_percent(worst['accuracy'])} ({worst['perturbation']}); "
        "see *Detectors* below and the *Evaluation* tab."
    )


def scratch_statement(bank: Bank) -> str:
    inits = {n: bank.initialisation(n) for n in bank.detectors}
    if inits and all(v.lower().startswith("random") for v in inits.values()):
        return ("**Every detector here was trained from scratch on CIFAKE: ImageNet weights were not used** "
                "(the paper fine-tuned ImageNet-pretrained ResNet-50, VGG-16 and DenseNet-121, so its figures "
                "are not the same experiment).")
    scratch = [bank.title(n) for n, v in inits.items() if v.lower().startswith("random")]
    if scratch:
        return f"**Trained from scratch (ImageNet weights not used): {', '.join(scratch)}.** Other checkpoints' initialisation is listed below."
    return ""


def header_markdown(bank: Bank) -> str:
    n_ok, n_all = len(bank.detectors), len(bank.names)
    missing = f" **{n_all - n_ok} of {n_all} detectors are unavailable** (see *Detectors* below)." if n_ok < n_all else ""
    return (
        "# CIFAKE: real photo or AI-generated?\n"
        "The five detectors of *Harnessing Machine Learning for Discerning AI-Generated Synthetic Images*, "
        "a network of ours designed for 32x32 images and a committee of all of them, "
        "trained on CIFAKE (Bird & Lotfi, 2024): 32x32 CIFAR-10 photos (REAL) and Stable Diffusion 1.4 "
        "images (FAKE). Your image is brought to 32x32 RGB first (shorter side to 32, centre crop), as the "
        f"paper's test transform does, so fine detail is lost. {scope_statement(bank)}{missing}\n\n" + scratch_statement(bank)
    )


def example_files() -> list[str]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return [str(p) for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg")]


def build_demo(bank: Bank | None = None) -> gr.Blocks:
    """The whole app for ``bank`` (default: detectors from ``$CIFAKE_CHECKPOINTS`` or assets/)."""
    bank = bank or load_bank()
    examples = example_files()
    # Open the evaluation tab on a detector that has training curves to show, if any.
    with_history = [n for n in bank.names if bank.reports.get(n, {}).get("history")]
    first = (with_history or [n for n in bank.names if n in bank.reports] or bank.names)[0]
    first_plots = evaluation_plots(bank, first, next(iter(SPLITS)))

    def detect(files: list[str] | None) -> tuple:
        return detect_outputs(bank, list(files or []))

    def detect_pasted(image: str | None) -> tuple:
        return detect_outputs(bank, [image] if image else [])

    def detect_examples() -> tuple:
        return detect_outputs(bank, examples)

    def predict(image: str) -> dict:
        """One image file -> {detector name: {"REAL": p, "FAKE": p}} for every available detector."""
        try:
            return predict_file(bank, image)
        except UploadError as error:
            raise gr.Error(f"{os.path.basename(str(image or ''))}: {error}", print_exception=False) from None

    def predict_batch(images: list[str] | None) -> list[dict]:
        """Several image files -> one {"file", "error", "notes", "predictions"} per file, in order."""
        return predict_files(bank, list(images or []))

    def plots(name: str, split_label: str) -> tuple:
        return evaluation_plots(bank, name, split_label)

    with gr.Blocks(title="CIFAKE detectors", delete_cache=(CACHE_SECONDS, CACHE_SECONDS), analytics_enabled=False) as demo:
        gr.Markdown(header_markdown(bank), elem_id="header")
        with gr.Tabs():
            with gr.Tab("Detect", id="detect"):
                with gr.Row():
                    with gr.Column(scale=3):
                        files = gr.File(
                            file_count="multiple", type="filepath", elem_id="upload", height=170,
                            label=f"Drop or pick images: up to {MAX_BATCH_FILES} files, {MAX_UPLOAD_BYTES // 2**20} MB and {MAX_PIXELS // 10**6} Mpx each",
                        )
                    with gr.Column(scale=2):
                        pasted = gr.Image(type="filepath", image_mode=None, sources=["clipboard", "upload"], height=170,
                                          label="…or paste one image (Ctrl+V after clicking the clipboard icon)", elem_id="paste")
                if examples:
                    with gr.Row():
                        gr.Examples(examples=[[p] for p in examples], inputs=[pasted], label="Examples from CIFAKE's test split (click one)",
                                    example_labels=[Path(p).stem for p in examples], examples_per_page=len(examples))
                        run_all = gr.Button(f"Run all {len(examples)} examples as a batch", elem_id="run-examples", scale=0, min_width=200, size="md")
                cards = gr.HTML(results_html(bank, []), css_template=CARD_CSS, js_on_load=None, elem_id="results")
                table = gr.Dataframe(results_table(bank, []), label="All results: P(FAKE) per detector (the CSV also has P(REAL) and each verdict)", interactive=False,
                                     wrap=True, elem_id="results-table", pinned_columns=1, column_widths=results_widths(bank))
                download = gr.DownloadButton("Download results as CSV", visible=False, elem_id="csv")
                with gr.Accordion("Detectors", open=False):
                    gr.Markdown(detectors_markdown(bank), elem_id="detectors")
                outputs = [cards, table, download]
                files.change(detect, inputs=files, outputs=outputs, api_name="detect_files", api_visibility="undocumented",
                             concurrency_limit=2)
                pasted.change(detect_pasted, inputs=pasted, outputs=outputs, api_name="detect_pasted", api_visibility="undocumented",
                              concurrency_limit=2)
                if examples:
                    run_all.click(detect_examples, inputs=None, outputs=outputs, api_name="detect_examples", api_visibility="undocumented")

            with gr.Tab("Compare models", id="compare"):
                full = compare_table(bank)
                for i, (label, columns) in enumerate(COMPARE_GROUPS.items()):
                    widths = ["11%", "17%", "29%", "29%", "14%"] if "Our recipe" in columns else None
                    gr.Dataframe(full[columns], label=label, interactive=False, wrap=True, pinned_columns=1, column_widths=widths,
                                 elem_id="compare-table" if i == 0 else f"compare-table-{i}")
                gr.Markdown(compare_notes(bank))

            with gr.Tab("Evaluation", id="evaluation"):
                with gr.Row():
                    split = gr.Radio(list(SPLITS), value=next(iter(SPLITS)), label="Split", scale=2)
                    chosen = gr.Dropdown([(bank.title(n), n) for n in bank.names], value=first,
                                         label="Detector (for the plots below the first row)", scale=1)
                with gr.Row():
                    all_roc = gr.Plot(first_plots[0], label="ROC, all detectors")
                    all_pr = gr.Plot(first_plots[1], label="Precision-recall, all detectors")
                with gr.Row():
                    confusion = gr.Plot(first_plots[2], label="Confusion matrix")
                    one_roc = gr.Plot(first_plots[3], label="ROC")
                with gr.Row():
                    one_pr = gr.Plot(first_plots[4], label="Precision-recall")
                    curves = gr.Plot(first_plots[5], label="Training curves")
                gr.Plot(robustness_figure(bank), label="Robustness: accuracy on resized and re-saved test images", elem_id="robustness-plot")
                plot_outputs = [all_roc, all_pr, confusion, one_roc, one_pr, curves]
                for control in (split, chosen):
                    control.change(plots, inputs=[chosen, split], outputs=plot_outputs, api_name=f"plots_{'split' if control is split else 'detector'}",
                                   api_visibility="undocumented")

        # Named endpoints for programs (gradio_client); their components are never shown.
        api_file = gr.File(file_count="single", type="filepath", visible=False, label="image")
        api_files = gr.File(file_count="multiple", type="filepath", visible=False, label="images")
        api_json = gr.JSON(visible=False, label="probabilities")
        api_list = gr.JSON(visible=False, label="results")
        api_trigger = gr.Button(visible=False)  # never clicked: it only carries the two API events
        api_trigger.click(predict, inputs=api_file, outputs=api_json, api_name="predict", concurrency_limit=PREDICT_CONCURRENCY)
        api_trigger.click(predict_batch, inputs=api_files, outputs=api_list, api_name="predict_batch", concurrency_limit=2)
    demo.queue(max_size=64)
    demo.bank = bank  # for tests and scripts
    return demo


demo = build_demo()


def main() -> None:
    """``cifake-app`` (or ``python app.py``): serve the app."""
    # Files over SERVER_MAX_FILE_SIZE are refused by gradio itself; smaller ones over
    # MAX_UPLOAD_BYTES reach the app and get a per-file message.
    demo.launch(max_file_size=SERVER_MAX_FILE_SIZE)


if __name__ == "__main__":
    main()
