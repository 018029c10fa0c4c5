"""CIFAKE detectors in a browser: ``python app.py``, then http://127.0.0.1:7860.

The page (Detect, Compare models, Evaluation) and two endpoints for programs, ``/predict`` and
``/predict_batch`` (``gr.api``); this file is the layout and thin handlers, ``cifake_models.page``
makes everything shown. Checkpoints and reports are read once at start-up from
``$CIFAKE_CHECKPOINTS`` and ``$CIFAKE_REPORTS`` (default ``assets/``); docs/layout.md says more.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from gradio import FileData
from gradio.utils import get_upload_folder, is_in_or_equal

from cifake_models.fair import launch
from cifake_models.feedback import flag_image
from cifake_models.labels import CLASSES
from cifake_models.page.analysis import MAX_BATCH_FILES, MAX_HEATMAPS, analyse_files, predict_file, predict_files
from cifake_models.page.cards import CARD_CSS, results_html
from cifake_models.page.figures import (
    SPLITS,
    ReportView,
    chosen_detector,
    evaluation_plots,
    robustness_figure,
    scope_figures,
    starting_threshold,
    threshold_explorer,
)
from cifake_models.page.folder_report import ReportError, folder_plots, read_report, report_markdown
from cifake_models.page.state import AppState, example_files, load_state
from cifake_models.page.tables import (
    CACHE_SECONDS,
    COMPARE_GROUPS,
    compare_table,
    results_table,
    results_widths,
    write_csv,
)
from cifake_models.page.texts import (
    compare_notes,
    detectors_markdown,
    header_markdown,
    judging_markdown,
    threshold_markdown,
)
from cifake_models.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES, UploadError

# /predict requests decoded at once; they then wait for a shared forward pass (cifake_models.serving),
# so more of them at a time means larger, cheaper passes, not more work in parallel.
PREDICT_CONCURRENCY = 16
SERVER_MAX_FILE_SIZE = 2 * MAX_UPLOAD_BYTES  # gradio refuses bigger uploads outright
FOLDER_REPORT_HELP = (
    "How do the detectors do on your images? Put them in a folder with `REAL/` and `FAKE/` subfolders, run "
    "`cifake-evaluate FOLDER` on your machine, and upload the `report.json` it writes: its figures appear here "
    "as the test split's do above (its `report.html` holds the same, self-contained)."
)


def detect_outputs(state: AppState, paths: list) -> tuple[str, pd.DataFrame, dict]:
    """The Detect tab for some uploaded files: cards, table, and the CSV download (hidden without files)."""
    answers = analyse_files(state, paths, check_stability=True, heatmaps=MAX_HEATMAPS)
    download = (
        gr.update(value=write_csv(state, answers), visible=True) if answers else gr.update(value=None, visible=False)
    )
    return results_html(state, answers), results_table(state, answers), download


def uploaded_path(file: FileData | None) -> str | None:
    """The server path of a file a client sent with ``handle_file``. ``gr.api`` skips
    preprocessing, so it hands the file over as FileData's fields in a plain dict. Gradio checks
    that the path lies in its upload cache only for a dict that carries FileData's ``meta``, so it
    is checked here for every dict: anything else (a bare path, or a dict naming a path outside
    the cache) would let a caller have any file on the server read, and is refused."""
    if file is None:
        return None
    path = file.get("path") if isinstance(file, dict) else None
    if not isinstance(path, str) or "\0" in path or not is_in_or_equal(path, get_upload_folder()):
        raise gr.Error("send each image as a file: gradio_client.handle_file(path)", print_exception=False)
    return path


def upload_inputs(examples: list[str]) -> tuple[gr.File, gr.Image, gr.Button | None]:
    """The Detect tab's inputs: the file drop, the paste box, and the examples with their batch button."""
    run_all = None
    with gr.Row():
        with gr.Column(scale=3):
            files = gr.File(
                file_count="multiple",
                type="filepath",
                elem_id="upload",
                height=170,
                label=f"Drop or pick images: up to {MAX_BATCH_FILES} files, {MAX_UPLOAD_BYTES // 2**20} MB "
                f"and {MAX_PIXELS // 10**6} Mpx each",
            )
        with gr.Column(scale=2):
            pasted = gr.Image(
                type="filepath",
                image_mode=None,
                sources=["clipboard", "upload"],
                height=170,
                label="…or paste one image (Ctrl+V after clicking the clipboard icon)",
                elem_id="paste",
            )
    if examples:
        with gr.Row():
            gr.Examples(
                examples=[[p] for p in examples],
                inputs=[pasted],
                label="Examples from CIFAKE's test split (click one)",
                example_labels=[Path(p).stem for p in examples],
                examples_per_page=len(examples),
            )
            run_all = gr.Button(
                f"Run all {len(examples)} examples as a batch",
                elem_id="run-examples",
                scale=0,
                min_width=200,
                size="md",
            )
    return files, pasted, run_all


def detect_tab(state: AppState, examples: list[str]) -> None:
    """The Detect tab: upload, paste or run the examples; cards, table and CSV for what was sent."""

    def detect(files: list[str] | None) -> tuple:
        return detect_outputs(state, list(files or []))

    def detect_pasted(image: dict | None) -> tuple:
        # Unpreprocessed (see pasted.change): gr.Image's fields, which gradio checks only where they
        # carry FileData's meta, so the path is checked here; the app's own decoder reads the file.
        return detect_outputs(state, [uploaded_path(image)] if image else [])

    def detect_examples() -> tuple:
        return detect_outputs(state, examples)

    files, pasted, run_all = upload_inputs(examples)
    cards = gr.HTML(results_html(state, []), css_template=CARD_CSS, js_on_load=None, elem_id="results")
    table = gr.Dataframe(
        results_table(state, []),
        interactive=False,
        wrap=True,
        elem_id="results-table",
        pinned_columns=1,
        label="All results: P(FAKE) per detector (the CSV also has P(REAL) and each verdict)",
        column_widths=results_widths(state),
    )
    download = gr.DownloadButton("Download results as CSV", visible=False, elem_id="csv")
    shown, flag_which = flag_box(state)
    with gr.Accordion("Detectors", open=False):
        gr.Markdown(detectors_markdown(state), elem_id="detectors")
    outputs = [cards, table, download]
    remembered = [shown, flag_which]
    files.change(
        detect,
        inputs=files,
        outputs=outputs,
        api_name="detect_files",
        api_visibility="undocumented",
        concurrency_limit=2,
    ).then(remember, files, remembered, api_visibility="private")
    # preprocess=False: gr.Image's own preprocessing opens the file with Pillow, and a file
    # that fails there would get a bare "Error" instead of the app's message for it.
    pasted.change(
        detect_pasted,
        inputs=pasted,
        outputs=outputs,
        api_name="detect_pasted",
        api_visibility="undocumented",
        concurrency_limit=2,
        preprocess=False,
    ).then(remember_pasted, pasted, remembered, api_visibility="private", preprocess=False)
    if examples:
        run_all.click(
            detect_examples, inputs=None, outputs=outputs, api_name="detect_examples", api_visibility="undocumented"
        ).then(lambda: remember(examples), None, remembered, api_visibility="private")


def remember(paths: list[str] | None) -> tuple:
    """The images now on the page, for the flag control: the paths stay on the server (``gr.State``);
    the page only picks one of them by its place."""
    paths = list(paths or [])
    return paths, gr.update(choices=[(Path(p).name, i) for i, p in enumerate(paths)], value=0 if paths else None)


def remember_pasted(image: dict | None) -> tuple:
    """``remember`` for the paste box, whose unpreprocessed value is checked like /predict's."""
    return remember([uploaded_path(image)] if image else [])


def flag_box(state: AppState) -> tuple[gr.State, gr.Dropdown]:
    """The "This verdict is wrong" control: pick an image on the page, say what it is, record it
    (``cifake_models.feedback``). Returns the state holding the page's images and the image picker."""

    def flag(shown: list[str], index: int | None, said: str | None, share: bool) -> str:
        if index is None or not 0 <= index < len(shown or []) or said not in CLASSES:
            raise gr.Error("pick the image and say what it is", print_exception=False)
        try:
            flag_image(state, shown[index], said, share)
        except UploadError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except FileNotFoundError:  # the upload cache is emptied after CACHE_SECONDS
            raise gr.Error("that image is no longer on the server: upload it again", print_exception=False) from None
        stored = "the image and " if share else ""
        return f"Thank you: {stored}what every detector said about **{Path(shown[index]).name}** is recorded as {said}."

    shown = gr.State([])
    with gr.Accordion("This verdict is wrong", open=False, elem_id="flag-box"):
        with gr.Row():
            which = gr.Dropdown([], label="Image", elem_id="flag-image", scale=2)
            said = gr.Radio(list(CLASSES), label="It is actually", elem_id="flag-said", scale=1)
            share = gr.Checkbox(
                label="Share the image itself (otherwise only its SHA-256 is kept)", elem_id="flag-share", scale=2
            )
            button = gr.Button("This verdict is wrong", elem_id="flag", scale=1)
        status = gr.Markdown(elem_id="flag-status")
    button.click(flag, inputs=[shown, which, said, share], outputs=status, api_visibility="private")
    return shown, which


def compare_tab(state: AppState) -> None:
    """The Compare models tab: every detector's test figures beside the paper's, in groups of columns."""
    full = compare_table(state)
    for i, (label, columns) in enumerate(COMPARE_GROUPS.items()):
        widths = ["11%", "17%", "29%", "29%", "14%"] if "Our recipe" in columns else None
        gr.Dataframe(
            full[columns],
            label=label,
            interactive=False,
            wrap=True,
            pinned_columns=1,
            column_widths=widths,
            elem_id="compare-table" if i == 0 else f"compare-table-{i}",
        )
    gr.Markdown(compare_notes(state))


def evaluation_tab(state: AppState) -> None:
    """The Evaluation tab: one detector's plots on one split, the threshold explorer, robustness."""
    # Open on a detector that has training curves to show, if any.
    with_history = [n for n in state.names if state.reports.get(n, {}).get("history")]
    first = chosen_detector(state, (with_history or [None])[0])
    first_split = next(iter(SPLITS))

    def explore(name: str, split: str, threshold: float) -> tuple[go.Figure, str]:
        name = chosen_detector(state, name)
        figure, point = threshold_explorer(state.reports.get(name, {}).get(split), threshold, state.title(name))
        return figure, threshold_markdown(point)

    def show_split(name: str, split: str, threshold: float) -> tuple:
        return *evaluation_plots(state, name, split).figures(), *explore(name, split, threshold)

    def show_detector(name: str, split: str) -> tuple:
        # Another detector: the explorer starts again at that detector's own threshold.
        threshold = starting_threshold(state.reports.get(chosen_detector(state, name), {}))
        return *evaluation_plots(state, name, split).figures(), threshold, *explore(name, split, threshold)

    plots = evaluation_plots(state, first, first_split)
    threshold = starting_threshold(state.reports.get(first, {}))
    first_explorer, first_summary = explore(first, first_split, threshold)
    with gr.Row():
        split = gr.Radio([(label, key) for key, label in SPLITS.items()], value=first_split, label="Split", scale=2)
        chosen = gr.Dropdown(
            [(state.title(n), n) for n in state.names],
            value=first,
            label="Detector (for the plots below the first row)",
            scale=1,
        )
    plot_outputs = evaluation_plot_rows(plots)
    with gr.Row():
        with gr.Column():
            slider = gr.Slider(
                0,
                1,
                value=threshold,
                step=0.001,
                elem_id="threshold",
                label="Threshold on P(FAKE): at or above it, the detector says FAKE "
                "(starts at its own, chosen on validation)",
            )
            summary = gr.Markdown(first_summary, elem_id="threshold-summary")
        explorer = gr.Plot(first_explorer, label="Threshold explorer", elem_id="threshold-plot")
    gr.Plot(
        robustness_figure(state),
        label="Robustness: accuracy on resized and re-saved test images",
        elem_id="robustness-plot",
    )
    split.change(
        show_split,
        inputs=[chosen, split, slider],
        outputs=[*plot_outputs, explorer, summary],
        api_name="plots_split",
        api_visibility="undocumented",
    )
    chosen.change(
        show_detector,
        inputs=[chosen, split],
        outputs=[*plot_outputs, slider, explorer, summary],
        api_name="plots_detector",
        api_visibility="undocumented",
    )
    slider.change(
        explore,
        inputs=[chosen, split, slider],
        outputs=[explorer, summary],
        api_name="threshold",
        api_visibility="undocumented",
    )


def scope_plots(state: AppState) -> None:
    """The scope score's distributions and the coverage trade-off, from the scope report."""
    histogram, tradeoff = scope_figures(state.scope_report)
    with gr.Row():
        gr.Plot(histogram, label="Out-of-scope score", elem_id="scope-plot")
        gr.Plot(tradeoff, label="Coverage trade-off", elem_id="scope-tradeoff-plot")


def folder_report_section() -> None:
    """Your own images: a report of ``cifake-evaluate FOLDER``, uploaded, drawn as the test split is."""
    with gr.Accordion("Your own images: show a report of cifake-evaluate", open=False, elem_id="folder-report"):
        gr.Markdown(FOLDER_REPORT_HELP)
        upload = gr.File(file_types=[".json"], label="report.json", elem_id="folder-report-file")
        summary = gr.Markdown(elem_id="folder-report-summary")
        chosen = gr.Dropdown([], label="Detector (for the plots below the first row)", elem_id="folder-report-detector")
        with gr.Row():
            plots = [gr.Plot(label="ROC, all detectors"), gr.Plot(label="Precision-recall, all detectors")]
        with gr.Row():
            plots += [
                gr.Plot(label=label)
                for label in ("Confusion matrix", "Reliability diagram", "Accuracy against coverage")
            ]
    report = gr.State(None)

    def show(path: str | None) -> tuple:
        if not path:
            return None, "", gr.Dropdown(choices=[], value=None), *[None] * len(plots)
        try:
            loaded = read_report(path)
        except ReportError as error:
            raise gr.Error(str(error), print_exception=False) from None
        view = ReportView(loaded["detectors"])
        choices = gr.Dropdown(choices=[(view.title(n), n) for n in view.names], value=view.names[0])
        return loaded, report_markdown(loaded), choices, *folder_plots(loaded).figures()

    def show_detector(loaded: dict | None, name: str | None) -> tuple:
        return folder_plots(loaded, name).figures()[2:] if loaded else (None,) * 3

    upload.change(show, upload, [report, summary, chosen, *plots], api_visibility="private")
    chosen.change(show_detector, [report, chosen], plots[2:], api_visibility="private")


def evaluation_plot_rows(plots) -> list[gr.Plot]:
    """The Evaluation tab's rows of plots, two a row; returned in ``EvaluationPlots.figures()``'s order."""
    with gr.Row():
        all_roc = gr.Plot(plots.all_roc, label="ROC, all detectors")
        all_pr = gr.Plot(plots.all_pr, label="Precision-recall, all detectors")
    with gr.Row():
        confusion = gr.Plot(plots.confusion, label="Confusion matrix")
        one_roc = gr.Plot(plots.roc, label="ROC")
    with gr.Row():
        one_pr = gr.Plot(plots.pr, label="Precision-recall")
        curves = gr.Plot(plots.training, label="Training curves")
    with gr.Row():
        reliability = gr.Plot(plots.reliability, label="Reliability diagram", elem_id="reliability-plot")
        selective = gr.Plot(plots.selective, label="Accuracy against coverage", elem_id="selective-plot")
    return [all_roc, all_pr, confusion, one_roc, one_pr, curves, reliability, selective]


def api_endpoints(state: AppState) -> None:
    """The named endpoints for programs (gradio_client), typed by the functions' hints."""

    def predict(image: FileData, stability: bool = False) -> dict[str, dict]:
        """One image file -> {detector name: {"REAL": p, "FAKE": p, "verdict": "FAKE" | "REAL" | "UNSURE" |
        "OUT_OF_SCOPE", "in_scope": bool, "scope_score": s, "scope_cut": c}} for every available detector;
        the probabilities are calibrated, and an image unlike CIFAKE (scope_score above scope_cut) gets
        OUT_OF_SCOPE from every detector. With stability=True, each mapping also has "stable" (bool; None
        where the check failed) and "stability" (e.g. "flips to REAL when resized to 24 px and back")."""
        path = uploaded_path(image)
        try:
            return predict_file(state, path, stability)
        except UploadError as error:
            raise gr.Error(
                f"{os.path.basename(path)}: {error}" if path else str(error), print_exception=False
            ) from None

    def predict_batch(images: list[FileData], stability: bool = False) -> list[dict]:
        """Several image files -> one {"file", "error", "notes", "predictions"} per file, in order
        (predictions as /predict answers them)."""
        return predict_files(state, [uploaded_path(image) for image in images or []], stability)

    gr.api(predict, api_name="predict", concurrency_limit=PREDICT_CONCURRENCY)
    gr.api(predict_batch, api_name="predict_batch", concurrency_limit=2)


def build_demo(state: AppState | None = None) -> gr.Blocks:
    """The whole app for ``state`` (default: detectors from ``$CIFAKE_CHECKPOINTS`` or assets/)."""
    state = state or load_state()
    with gr.Blocks(
        title="CIFAKE detectors", delete_cache=(CACHE_SECONDS, CACHE_SECONDS), analytics_enabled=False
    ) as demo:
        gr.Markdown(header_markdown(state), elem_id="header")
        with gr.Tabs():
            with gr.Tab("Detect", id="detect"):
                gr.Markdown(judging_markdown(state), elem_id="judging")
                detect_tab(state, example_files())
            with gr.Tab("Compare models", id="compare"):
                compare_tab(state)
            with gr.Tab("Evaluation", id="evaluation"):
                evaluation_tab(state)
                scope_plots(state)
                folder_report_section()
        api_endpoints(state)
    demo.queue(max_size=64, api_open=False)  # no run past the queue (and its limits)
    demo.app_state = state  # for tests and scripts
    return demo


def __getattr__(name: str):
    """``app.demo``, the page on the detectors of ``$CIFAKE_CHECKPOINTS`` or assets/, built at its
    first use (``python app.py``, ``gradio app.py``), so that a script may import ``build_demo``
    and serve the page on another bank."""
    if name == "demo":
        globals()["demo"] = built = build_demo()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """``cifake-app`` (or ``python app.py``): serve the app."""
    demo = sys.modules[__name__].demo
    # Files over SERVER_MAX_FILE_SIZE are refused by gradio itself; smaller ones over
    # MAX_UPLOAD_BYTES reach the app and get a per-file message. cifake_models.fair limits each client.
    # mcp_server: /predict and /predict_batch are MCP tools too (gradio[mcp]; docs/deploy.md, "MCP").
    launch(demo, max_file_size=SERVER_MAX_FILE_SIZE, mcp_server=True)


if __name__ == "__main__":
    main()
