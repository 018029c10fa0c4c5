"""The page's content (cifake_models.page, no Gradio) called directly, then the app: its
handlers, and the app launched and called with gradio_client."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from conftest import with_new_figures
from PIL import Image

from cifake_models import CLASSES, get_spec, list_detectors, results, stability
from cifake_models.page import analysis, figures, tables, texts
from cifake_models.page.analysis import analyse_files, predict_file, predict_files
from cifake_models.page.cards import pixels_data_uri, result_card
from cifake_models.page.state import load_state, resolve_dirs
from cifake_models.perturbations import FAMILIES
from cifake_models.uploads import UploadError

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# gradio's queue calls pandas options that pandas 3 deprecates; not this project's code.
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def state(tiny_assets):
    return load_state(tiny_assets["checkpoints"], tiny_assets["reports"])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """A few good and hostile files on disk, as uploads arrive."""
    root = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    files = {
        "good.png": png_bytes(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
        "photo.png": png_bytes(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)),
        "notes.txt": b"not an image at all",
        "empty.jpg": b"",
    }
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, format="JPEG")
    files["cut.jpg"] = jpeg.getvalue()[:400]
    for name, data in files.items():
        (root / name).write_bytes(data)
    return {name: root / name for name in files}


def assert_probabilities(mapping: dict, names: list[str]) -> None:
    assert sorted(mapping) == sorted(names)
    for name in names:
        p = mapping[name]
        assert set(p) == {"REAL", "FAKE", "verdict", "in_scope", "scope_score", "scope_cut"}
        assert p["verdict"] in ("FAKE", "REAL", "UNSURE", "OUT_OF_SCOPE")
        assert 0.0 <= p["REAL"] <= 1.0 and 0.0 <= p["FAKE"] <= 1.0
        assert p["REAL"] + p["FAKE"] == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- loading


def test_module_level_demo_reads_the_environment(app_module, tiny_assets):
    assert app_module.demo.app_state.checkpoint_dir == tiny_assets["checkpoints"]
    assert app_module.demo.app_state.report_dir == tiny_assets["reports"]
    assert sorted(app_module.demo.app_state.detectors) == sorted(list_detectors())


def test_directories_default_to_assets_and_follow_env(monkeypatch, tmp_path):
    monkeypatch.delenv("CIFAKE_CHECKPOINTS", raising=False)
    monkeypatch.delenv("CIFAKE_REPORTS", raising=False)
    assert resolve_dirs() == (REPO_ROOT / "assets" / "checkpoints", REPO_ROOT / "assets" / "reports")
    monkeypatch.setenv("CIFAKE_CHECKPOINTS", str(tmp_path / "c"))
    monkeypatch.setenv("CIFAKE_REPORTS", str(tmp_path / "r"))
    assert resolve_dirs() == (tmp_path / "c", tmp_path / "r")


def test_the_pages_content_is_made_without_gradio():
    """Scripts and tests use the page's content without a web framework: importing every module
    of cifake_models.page loads no gradio (a fresh interpreter, so nothing imported it before)."""
    modules = "analysis, state, cards, figures, tables, texts"
    code = f"import sys; from cifake_models.page import {modules}; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_every_detector_loads_once_with_its_report(state):
    assert sorted(state.detectors) == sorted(list_detectors())
    assert state.unavailable == {} and state.report_errors == {}
    assert sorted(state.reports) == sorted(list_detectors())


def test_missing_and_corrupt_checkpoints_make_detectors_unavailable(app_module, tiny_assets, tmp_path, images):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(tiny_assets["checkpoints"], checkpoints)
    (checkpoints / get_spec("cnn").checkpoint_file).unlink()
    (checkpoints / get_spec("hog_svm").checkpoint_file).write_bytes(b"garbage, not a checkpoint")
    partial = load_state(checkpoints, tmp_path / "no-reports")
    assert sorted(partial.unavailable) == ["cnn", "hog_svm"]
    assert "does not exist" in partial.unavailable["cnn"]
    assert "not a valid checkpoint" in partial.unavailable["hog_svm"]
    assert sorted(partial.report_errors) == sorted(list_detectors())
    # The others keep working, and the page says which are missing and why.
    others = [n for n in list_detectors() if n not in ("cnn", "hog_svm")]
    assert_probabilities(predict_file(partial, images["good.png"]), others)
    result = analyse_files(partial, [images["good.png"]])[0]
    card = result_card(partial, result)
    assert "unavailable: checkpoint" in card and "does not exist" in card
    # The vote counts the detectors still available, the committee (serving on its other members) apart.
    voters = len([n for n in others if not get_spec(n).is_committee])
    assert re.fullmatch(rf"(all {voters}|\d of {voters}) say (FAKE|REAL)", result.agreement), result.agreement
    assert "Committee (all detectors): " in card
    table = tables.compare_table(partial).set_index("Detector")
    assert table.loc["CNN (paper)", "Status"].startswith("unavailable: checkpoint")
    assert table.loc["CNN (paper)", "Paper accuracy"] == get_spec("cnn").paper.accuracy
    assert "unavailable" in texts.detectors_markdown(partial)
    assert "available without hog_svm, cnn" in texts.detectors_markdown(partial)
    app_module.build_demo(partial)  # the page still builds without reports or two checkpoints


def test_reasons_a_client_reads_name_files_relative_to_their_folders(tmp_path):
    """The old messages gave the server's absolute paths, in the Detectors table, the Compare tab
    and /predict_batch's errors."""
    bank = load_state(tmp_path / "checkpoints", tmp_path / "reports")
    reasons = [*bank.unavailable.values(), *bank.report_errors.values()]
    assert reasons and not any(str(tmp_path) in reason for reason in reasons), reasons
    assert f"checkpoint {get_spec('cnn').checkpoint_file} does not exist" in bank.unavailable["cnn"]


def test_a_report_of_an_earlier_checkpoint_is_flagged_as_such(tiny_assets, tmp_path):
    # As after `train.revalidate` or `train.choose --ship` without a new evaluation: the
    # checkpoint's threshold moved, the report's figures did not.
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(tiny_assets["checkpoints"], checkpoints)
    assert not load_state(checkpoints, tiny_assets["reports"]).stale_reports
    cnn = get_spec("cnn").load(checkpoints)
    cnn.metadata["threshold"] = {**cnn.metadata["threshold"], "value": 0.25}
    cnn.save(checkpoints / get_spec("cnn").checkpoint_file)
    state = load_state(checkpoints, tiny_assets["reports"])
    assert (
        list(state.stale_reports) == ["cnn"]
        and "earlier cnn.safetensors: run python -m train.evaluate" in state.stale_reports["cnn"]
    )
    row = next(
        line for line in texts.detectors_markdown(state).splitlines() if line.startswith(f"| {get_spec('cnn').title} |")
    )
    assert state.stale_reports["cnn"] in row
    assert (
        state.stale_reports["cnn"]
        in tables.compare_table(state).set_index("Detector").loc[get_spec("cnn").title, "Status"]
    )


# --------------------------------------------------------------------------- handlers


def test_predict_file_gives_every_detector_real_and_fake(state, images):
    result = predict_file(state, images["good.png"])
    assert_probabilities(result, list_detectors())
    # The same probabilities as the detectors' own predict_proba (FAKE, REAL column order).
    pixels = np.array(Image.open(images["good.png"]).convert("RGB"))[None]
    for name, detector in state.detectors.items():
        proba = detector.probabilities(pixels)[0]
        assert result[name]["FAKE"] == pytest.approx(proba[0], abs=1e-6)


@pytest.mark.parametrize(
    ("name", "message"), [("notes.txt", "not an image"), ("empty.jpg", "empty"), ("cut.jpg", "truncated")]
)
def test_predict_file_refuses_hostile_files(state, images, name, message):
    with pytest.raises(UploadError, match=message):
        predict_file(state, images[name])


def test_predict_file_says_when_an_image_needs_more_memory_than_the_server_has(state, images, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(analysis, "decode_upload", out_of_memory)
    with pytest.raises(UploadError, match="needs more memory to decode than this server has"):
        predict_file(state, images["good.png"])


def test_predict_files_one_bad_file_does_not_fail_the_batch(state, images):
    order = ["good.png", "notes.txt", "photo.png", "empty.jpg", "cut.jpg"]
    results = predict_files(state, [images[n] for n in order])
    assert [r["file"] for r in results] == order
    for r in results:
        assert set(r) == {"file", "error", "notes", "in_scope", "scope_score", "scope_cut", "predictions"}
    assert_probabilities(results[0]["predictions"], list_detectors())
    assert_probabilities(results[2]["predictions"], list_detectors())
    assert results[0]["error"] is None and results[0]["notes"] == []
    assert results[2]["notes"] == ["resized from 120x90 to 32x32 (shorter side to 32, centre crop)"]
    assert "not an image" in results[1]["error"] and results[1]["predictions"] == {}
    assert "empty" in results[3]["error"]
    assert "truncated" in results[4]["error"]


def test_batch_limit_reports_skipped_files(state, images, monkeypatch):
    monkeypatch.setattr(analysis, "MAX_BATCH_FILES", 2)
    results = predict_files(state, [images["good.png"]] * 3)
    assert [r["error"] for r in results[:2]] == [None, None]
    assert "at most 2 files" in results[2]["error"]


@pytest.mark.parametrize(
    ("verdicts", "text", "majority"),
    [
        (["FAKE"] * 4 + ["REAL"], "4 of 5 say FAKE", "FAKE"),
        (["REAL"] * 5, "all 5 say REAL", "REAL"),
        (["REAL", "REAL", "FAKE"], "2 of 3 say REAL", "REAL"),
        (["REAL", "FAKE"], "split: 1 FAKE, 1 REAL", "undecided"),
        (["FAKE"], "1 of 1 says FAKE", "FAKE"),
    ],
)
def test_agreement(verdicts, text, majority):
    verdicts = {f"d{i}": v for i, v in enumerate(verdicts)}
    assert results.agreement(verdicts) == text
    assert results.majority(verdicts) == majority


def test_predict_file_checks_stability_on_request(state, images):
    plain, checked = (
        predict_file(state, images["good.png"]),
        predict_file(state, images["good.png"], check_stability=True),
    )
    pixels = np.array(Image.open(images["good.png"]).convert("RGB"))[None]
    expected = stability.check(state.detectors, pixels)[0].detectors
    for name in list_detectors():
        assert "stability" not in plain[name]
        assert (
            checked[name]["stable"] == expected[name].stable and checked[name]["stability"] == expected[name].sentence
        )
        assert {k: checked[name][k] for k in plain[name]} == plain[name]


def test_a_detector_whose_copies_could_not_be_scored_says_why(state, images, monkeypatch):
    passes = []

    def predict(batch):  # the second pass scores the changed copies: the CNN fails on it
        probas, verdicts, errors = type(state).predict(state, batch)
        passes.append(len(batch))
        if len(passes) == 2:
            probas, verdicts = ({k: v for k, v in d.items() if k != "cnn"} for d in (probas, verdicts))
            errors = {**errors, "cnn": "MemoryError: out of memory"}
        return probas, verdicts, errors

    monkeypatch.setattr(state, "predict", predict)
    result = analyse_files(state, [images["good.png"]], check_stability=True)[0]
    assert len(passes) == 2 and "cnn" in result.predictions and "cnn" not in result.stability
    assert '<td class="stability">not checked: MemoryError: out of memory</td>' in result_card(state, result)
    expected = {
        **result.predictions["cnn"].mapping(),
        **result.scope_mapping(),
        "stable": None,
        "stability": "not checked: MemoryError: out of memory",
    }
    assert result.probabilities()["cnn"] == expected


def test_only_the_first_images_get_heatmaps(app_module, state, images, monkeypatch):
    monkeypatch.setattr(app_module, "MAX_HEATMAPS", 1)
    cards, _, _ = app_module.detect_outputs(state, [str(images["good.png"]), str(images["photo.png"])])
    first, second = cards.split('<div class="card">')[1:]
    networks = [get_spec(n).title for n in list_detectors() if not get_spec(n).is_committee]
    assert all(f'alt="{title} heatmap"' in first for title in networks) and "heatmap" not in second
    assert "Integrated Gradients" in first and "committee has no map" in first


def test_detect_outputs_cards_table_and_csv(app_module, state, images):
    order = ["good.png", "notes.txt", "photo.png"]
    cards, table, download = app_module.detect_outputs(state, [str(images[n]) for n in order])
    for name in list_detectors():
        assert get_spec(name).title in cards
    # The 32x32 input of each good image, and each one's heatmaps: every detector but the committee.
    assert cards.count("data:image/png;base64,") == 2 * len(list_detectors())
    assert cards.count("Holds up?") == 2
    assert "not an image this app can read" in cards
    assert list(table["File"]) == order
    assert download["visible"] is True
    path = download["value"]
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert [r["file"] for r in rows] == order
    for name in list_detectors():
        p_real, p_fake = float(rows[0][f"{name}_p_real"]), float(rows[0][f"{name}_p_fake"])
        assert p_real + p_fake == pytest.approx(1.0, abs=1e-5)
        assert rows[0][f"{name}_verdict"] in ("FAKE", "REAL", "UNSURE")
        # The card shows the same P(FAKE) (to 0.1%), the table the same to 4 decimals.
        assert f"{100 * p_fake:.1f}%</span>" in cards
        assert table.loc[0, get_spec(name).title] == pytest.approx(p_fake, abs=5e-5)
    for row in (rows[0], rows[2]):
        assert (
            f"{row['agreement']}</span>" in cards
            and table.loc[table["File"] == row["file"], "Agreement"].item() == row["agreement"]
        )
    assert "not an image" in rows[1]["error"] and rows[1][f"{list_detectors()[0]}_p_fake"] == ""
    # Nothing uploaded: no cards, no rows, no CSV to download.
    cards, table, download = app_module.detect_outputs(state, [])
    assert "card" not in cards and table.empty and download["visible"] is False


def test_csv_downloads_older_than_the_cache_time_are_pruned(state, images, monkeypatch, tmp_path):
    monkeypatch.setattr(tables, "RESULTS_DIR", tmp_path)
    answers = analyse_files(state, [images["good.png"]])
    old, recent = Path(tables.write_csv(state, answers)), Path(tables.write_csv(state, answers))
    an_hour_ago = time.time() - tables.CACHE_SECONDS - 1
    os.utime(old, (an_hour_ago, an_hour_ago))
    newest = Path(tables.write_csv(state, answers))
    assert not old.exists() and not old.parent.exists()
    assert recent.exists() and newest.exists()


def test_nearest_neighbour_display_keeps_pixels():
    pixels = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    uri = pixels_data_uri(pixels)
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert shown.shape == (128, 128, 3)
    np.testing.assert_array_equal(shown[::4, ::4], pixels)


def test_scratch_statement_follows_metadata(state):
    assert all(state.initialisation(n).startswith("random") for n in list_detectors())
    assert "trained from scratch" in texts.scratch_statement(state)
    assert "ImageNet weights were not used" in texts.header_markdown(state)
    # Which detectors the paper fine-tuned from ImageNet, and which are the paper's, come from the registry.
    specs = [get_spec(n) for n in list_detectors()]
    assert all((s.title in texts.scratch_statement(state)) == s.imagenet_weights for s in specs)
    papers = [s.title for s in specs if s.paper]
    assert f"Synthetic Images* ({', '.join(papers[:-1])} and {papers[-1]}), then " in texts.header_markdown(state)


def test_compare_table_has_every_detector_and_figure(state):
    table = tables.compare_table(state)
    assert list(table["Detector"]) == [get_spec(n).title for n in list_detectors()]
    for column in [
        "Accuracy",
        "ROC-AUC",
        "PR-AUC",
        "Leak-free accuracy",
        "FAKE precision",
        "FAKE recall",
        "FAKE F1",
        "REAL precision",
        "REAL recall",
        "REAL F1",
        "Resized/re-saved: mean accuracy",
        "Resized/re-saved: worst accuracy",
        "Worst case",
        "Initialisation",
        "Our recipe",
        "Paper recipe",
        "Checkpoint MB",
        "ms/image (1)",
    ]:  # tiny test split: no batch of 64
        assert column in table.columns
        assert table[column].notna().all(), column
    for name, row in zip(list_detectors(), table.to_dict("records")):
        report, paper = state.reports[name], get_spec(name).paper
        assert row["Accuracy"] == pytest.approx(report["test"]["accuracy"], abs=1e-4)
        assert row["Leak-free accuracy"] == pytest.approx(report["test_leak_free"]["accuracy"], abs=1e-4)
        assert row["Resized/re-saved: mean accuracy"] == pytest.approx(report["robustness"]["mean_accuracy"], abs=1e-4)
        if paper:
            assert row["Paper ROC-AUC"] == paper.roc_auc and row["Paper accuracy"] == paper.accuracy
        else:
            assert pd.isna(row["Paper ROC-AUC"]) and row["Paper recipe"] == "not in the paper"


def test_detect_tab_states_accuracy_on_resized_uploads_from_the_reports(state):
    robustness = {n: state.reports[n]["robustness"] for n in list_detectors()}
    worst_name = min(robustness, key=lambda n: robustness[n]["worst"]["accuracy"])
    worst = robustness[worst_name]["worst"]
    header = texts.header_markdown(state)
    assert f"{get_spec(worst_name).title} falls to {100 * worst['accuracy']:.1f}% ({worst['perturbation']})" in header
    means = [r["mean_accuracy"] for r in robustness.values()]
    assert f"{100 * min(means):.1f}% to {100 * max(means):.1f}% of the time on average" in header
    table = texts.detectors_markdown(state)
    for name in list_detectors():
        row = next(line for line in table.splitlines() if line.startswith(f"| {get_spec(name).title} |"))
        r = robustness[name]
        assert row.endswith(
            f"| {100 * r['mean_accuracy']:.1f}% ({100 * r['worst']['accuracy']:.1f}%, {r['worst']['perturbation']}) |"
        )


def test_the_detectors_table_states_the_rule_each_detector_decides_by(state):
    # The page must not say "FAKE at the threshold" where the detector answers UNSURE: each row
    # gives the band that Detector.decide uses.
    table = texts.detectors_markdown(state)
    assert "UNSURE" in texts.compare_notes(state)
    for name in list_detectors():
        detector = state.detectors[name]
        band = detector.rule.unsure
        row = next(line for line in table.splitlines() if line.startswith(f"| {get_spec(name).title} |"))
        assert f"| {detector.rule.threshold:.3f} | FAKE ≥ {band.high:.3f}, REAL &lt; {band.low:.3f} |" in row
        p = np.array([band.high, (band.high + band.low) / 2, np.nextafter(band.low, 0)])
        assert list(detector.decide(np.stack([p, 1 - p], axis=1))) == [
            "FAKE",
            "UNSURE" if band.low < band.high else "FAKE",
            "REAL",
        ]


def test_robustness_plot_draws_every_detector_from_its_clean_accuracy(state):
    figure = figures.robustness_figure(state)
    traces = [t for t in figure.data if t.legendgroup == "cnn"]
    assert len(traces) == len(FAMILIES)
    robustness = state.reports["cnn"]["robustness"]
    jpeg = next(t for t in traces if t.hovertemplate.endswith("at jpeg %{x}<extra></extra>"))
    expected = sorted(
        [(100, robustness["clean_accuracy"])]
        + [(s["strength"], s["accuracy"]) for s in robustness["scores"] if s["family"] == "jpeg"]
    )
    assert list(zip(jpeg.x, jpeg.y)) == expected
    assert {t.legendgroup for t in figure.data} == set(list_detectors())


@pytest.fixture(scope="module")
def cnn_plots(state):
    return figures.evaluation_plots(state, "cnn", "test")


def test_every_evaluation_plot_is_a_figure(cnn_plots):
    assert all(isinstance(f, go.Figure) for f in cnn_plots.figures())


def test_the_roc_and_pr_plots_hold_every_detector(cnn_plots):
    titles = {get_spec(n).title for n in list_detectors()}
    assert {t.name.split(" (AUC")[0] for t in cnn_plots.all_roc.data if t.name != "chance"} == titles
    assert {t.name.split(" (AP")[0] for t in cnn_plots.all_pr.data} == titles


def test_the_confusion_matrix_is_the_reports_normalised_by_row(state, cnn_plots):
    matrix = np.asarray(state.reports["cnn"]["test"]["confusion_matrix"])
    assert np.asarray(cnn_plots.confusion.data[0].z) == pytest.approx(matrix / matrix.sum(axis=1, keepdims=True))


def test_the_training_curves_show_loss_and_accuracy_or_say_there_are_no_epochs(state, cnn_plots):
    assert len(cnn_plots.training.data) == 4  # train/val loss and accuracy
    assert "no epochs" in figures.evaluation_plots(state, "hog_svm", "test").training.layout.annotations[0].text


@pytest.mark.parametrize("split", ["test", "test_leak_free"])
def test_the_reliability_diagram_shows_both_sides_of_calibration(state, split):
    report, plots = state.reports["cnn"], figures.evaluation_plots(state, "cnn", split)
    assert [t.name for t in plots.reliability.data] == [
        "perfectly calibrated",
        "before calibration",
        "after calibration",
    ]
    _, before, after = plots.reliability.data
    assert list(after.y) == report[split]["reliability"]["fake_share"]
    assert list(before.x) == report["calibration"][split]["reliability_before"]["p_fake_mean"]


@pytest.mark.parametrize("split", ["test", "test_leak_free"])
def test_the_coverage_plot_marks_the_unsure_bands_point(state, split):
    report, plots = state.reports["cnn"], figures.evaluation_plots(state, "cnn", split)
    curve, band = plots.selective.data
    assert list(curve.x) == report[split]["selective"]["coverage"] and band.x[0] == report["unsure"][split]["coverage"]


def test_an_older_report_without_calibration_figures_says_what_is_missing(state):
    report = state.reports["cnn"]
    old = {k: v for k, v in report.items() if k not in ("calibration", "unsure")}
    old["test"] = {k: v for k, v in report["test"].items() if k not in ("reliability", "selective")}
    assert (
        "no reliability diagram: run python -m train.evaluate"
        in figures.reliability_figure(old, "test", "CNN").layout.annotations[0].text
    )
    assert "no accuracy/coverage curve" in figures.selective_figure(old, "test", "CNN").layout.annotations[0].text


def test_a_report_without_a_figure_or_a_detector_without_a_report_leaves_the_other_plots(state, monkeypatch):
    # A report lacking its curves and confusion matrix: the all-detector plots draw the others,
    # its own plots say what is missing; a detector without a report says so in every plot.
    cut = {
        k: v for k, v in state.reports["cnn"]["test"].items() if k not in ("roc_curve", "pr_curve", "confusion_matrix")
    }
    monkeypatch.setitem(state.reports, "cnn", {**state.reports["cnn"], "test": cut})
    plots = figures.evaluation_plots(state, "cnn", "test")
    drawn = {t.name.split(" (AUC")[0] for t in plots.all_roc.data if t.name != "chance"}
    assert drawn == {get_spec(n).title for n in list_detectors()} - {get_spec("cnn").title}
    for figure, what in (
        (plots.roc, "no ROC curve"),
        (plots.pr, "no precision-recall curve"),
        (plots.confusion, "no confusion matrix"),
    ):
        assert not figure.data and what in figure.layout.annotations[0].text
    monkeypatch.delitem(state.reports, "cnn")
    plots = figures.evaluation_plots(state, "cnn", "test")
    for figure in (plots.roc, plots.pr, plots.confusion):
        assert not figure.data and figure.layout.annotations[0].text == "no evaluation report"


def test_the_leak_free_split_draws_its_own_numbers(state, monkeypatch):
    monkeypatch.setitem(state.reports, "cnn", with_new_figures(state.reports["cnn"]))
    official, leak_free = (figures.evaluation_plots(state, "cnn", split) for split in ("test", "test_leak_free"))
    assert "n=16" in official.confusion.layout.title.text
    assert (
        "n=14" in leak_free.confusion.layout.title.text and "accuracy 0.7857" in leak_free.confusion.layout.title.text
    )
    np.testing.assert_allclose(leak_free.confusion.data[0].z, [[6 / 8, 2 / 8], [1 / 6, 5 / 6]])
    roc = next(t for t in leak_free.roc.data if t.name.startswith("CNN (paper)"))
    assert list(roc.x) == [0.0, 0.2, 1.0] and roc.name == "CNN (paper) (AUC 0.800)"


def test_training_curves_mark_where_a_second_stage_starts(state, monkeypatch):
    history = [
        {"epoch": e, "train_loss": 0.5, "val_loss": 0.5, "train_accuracy": 0.8, "val_accuracy": 0.8} for e in (1, 2, 3)
    ]
    history[2]["stage"] = 2
    monkeypatch.setitem(state.reports, "cnn", {**state.reports["cnn"], "history": history})
    figure = figures.training_figure(state, "cnn")
    markers = [shape.x0 for shape in figure.layout.shapes if shape.x0 == shape.x1]
    assert markers == [2.5, 2.5]  # on the loss and the accuracy plot
    assert [a.text for a in figure.layout.annotations].count("stage 2") == 2


# --------------------------------------------------------------------------- one detector's trust

# A report as train.evaluate is coming to write them, with hand-made figures (see conftest).
NEW = with_new_figures({"test": {"n": 16}, "test_leak_free": {"n": 16}, "threshold": {"value": 0.5}})


@pytest.mark.parametrize(
    ("asked", "used", "caught", "false_alarms"),
    [(0.6, 0.5, 7, 1), (0.65, 0.75, 4, 0), (-1.0, 0.0, 8, 8), (0.2, 0.25, 8, 3)],
)
def test_threshold_explorer_counts_at_the_nearest_stored_threshold(asked, used, caught, false_alarms):
    figure, point = figures.threshold_explorer(NEW["test"], asked, "CNN (paper)")
    assert (point.threshold, point.fake_called_fake, point.real_called_fake) == (used, caught, false_alarms)
    fake, real = CLASSES.index("FAKE"), CLASSES.index("REAL")
    matrix = np.zeros((2, 2))  # rows true, columns called, in CLASSES order as the reports store it
    matrix[fake, fake], matrix[fake, real], matrix[real, fake], matrix[real, real] = (
        caught,
        8 - caught,
        false_alarms,
        8 - false_alarms,
    )
    np.testing.assert_array_equal(point.confusion_matrix(), matrix)
    assert np.asarray(figure.data[0].z) == pytest.approx(matrix / 8)
    assert f"P(FAKE) ≥ {used:.3f}" in figure.layout.title.text
    assert point.recall == caught / 8 and point.false_positive_rate == false_alarms / 8
    assert point.precision == caught / (caught + false_alarms)


def test_threshold_summary_states_precision_recall_and_false_positives():
    _, point = figures.threshold_explorer(NEW["test"], 0.5, "CNN (paper)")
    summary = texts.threshold_markdown(point)
    assert "P(FAKE) ≥ 0.500" in summary and "**precision 87.5%**" in summary and "**recall 87.5%**" in summary
    assert "**false-positive rate 12.5%** (1 of 8 REAL images called FAKE); accuracy 87.5% on 16 images" in summary
    _, nothing_called = figures.threshold_explorer(NEW["test"], 1.0, "CNN (paper)")
    assert (
        nothing_called.precision is None
        and "precision undefined (no image called FAKE)" in texts.threshold_markdown(nothing_called)
    )


def test_trust_figures_say_what_a_report_lacks():
    """Today's reports hold none of the new figures: each plot says so instead of failing."""
    for figure in (
        figures.threshold_explorer({"n": 16}, 0.5, "CNN")[0],
        figures.reliability_figure({"test": {}}, "test", "CNN"),
        figures.selective_figure({"test": {}}, "test", "CNN"),
    ):
        assert not figure.data and "run python -m train.evaluate" in figure.layout.annotations[0].text
    assert figures.threshold_explorer({"n": 16}, 0.5, "CNN")[1] is None and texts.threshold_markdown(None) == ""
    for figure in (
        figures.threshold_explorer(None, 0.5, "CNN")[0],
        figures.reliability_figure({}, "test", "CNN"),
        figures.selective_figure({}, "test", "CNN"),
    ):
        assert figure.layout.annotations[0].text == "no evaluation report"


def test_reliability_diagram_draws_the_bins_before_and_after_calibration():
    figure = figures.reliability_figure(NEW, "test", "CNN (paper)")
    curves = {t.name: t for t in figure.data}
    assert list(curves) == ["perfectly calibrated", "before calibration", "after calibration"]
    after, before = NEW["test"]["reliability"], NEW["calibration"]["test"]["reliability_before"]
    assert (
        list(curves["after calibration"].x) == after["p_fake_mean"]
        and list(curves["after calibration"].y) == after["fake_share"]
    )
    assert (
        list(curves["before calibration"].x) == before["p_fake_mean"]
        and list(curves["before calibration"].y) == before["fake_share"]
    )
    assert list(curves["perfectly calibrated"].x) == list(curves["perfectly calibrated"].y) == [0, 1]
    uncalibrated = figures.reliability_figure({"test": NEW["test"]}, "test", "CNN (paper)")
    assert [t.name for t in uncalibrated.data] == ["perfectly calibrated", "CNN (paper)"]


def test_accuracy_against_coverage_marks_the_detectors_band():
    figure = figures.selective_figure(NEW, "test", "CNN (paper)")
    curve, band = figure.data
    assert list(curve.x) == [1.0, 0.75, 0.5] and list(curve.y) == [0.875, 0.95, None]
    assert (band.x[0], band.y[0]) == (0.75, 0.95)
    without_band = figures.selective_figure({"test": NEW["test"]}, "test", "CNN (paper)")
    assert len(without_band.data) == 1


# --------------------------------------------------------------------------- the page's events


def event(demo, api_name: str):
    return next(f for f in demo.fns.values() if f.api_name == api_name)


def test_evaluation_tab_follows_the_split_the_detector_and_the_slider(app_module, state, monkeypatch):
    monkeypatch.setitem(state.reports, "cnn", with_new_figures(state.reports["cnn"]))
    demo = app_module.build_demo(state)  # opens on cnn: the first detector with training curves
    slider = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "threshold")
    assert slider.value == pytest.approx(state.reports["cnn"]["threshold"]["value"])

    # Each output plot gets its own figure: the figure's title starts as the plot's label.
    on_split = event(demo, "plots_split")
    drawn = on_split.fn("cnn", "test_leak_free", 0.5)
    plots = [(c.label, f) for c, f in zip(on_split.outputs, drawn) if isinstance(f, go.Figure)]
    assert len(plots) == 9
    for label, figure in plots:
        assert re.match(r"[\w-]+", label)[0] == re.match(r"[\w-]+", figure.layout.title.text)[0], (
            label,
            figure.layout.title.text,
        )
    # The leak-free split redraws with the leak-free split's numbers, the explorer too.
    confusion = dict(plots)["Confusion matrix"]
    assert "n=14" in confusion.layout.title.text
    assert "6 of 8 FAKE images caught" in drawn[-1] and "1 of 6 REAL images called FAKE" in drawn[-1]

    # Another detector: the slider goes back to that detector's own threshold, and the explorer with it.
    *_, threshold, explorer, summary = event(demo, "plots_detector").fn("hog_svm", "test")
    assert threshold == state.reports["hog_svm"]["threshold"]["value"]
    assert f"P(FAKE) ≥ {threshold:.3f}" in explorer.layout.title.text and "recall" in summary

    # Moving the slider moves the explorer.
    explorer, summary = event(demo, "threshold").fn("cnn", "test", 0.7)
    assert "P(FAKE) ≥ 0.750" in explorer.layout.title.text and "**recall 50.0%**" in summary


def test_programs_are_served_by_gr_api(app_module, state):
    demo = app_module.build_demo(state)
    for api_name, limit in (("predict", app_module.PREDICT_CONCURRENCY), ("predict_batch", 2)):
        endpoint = event(demo, api_name)
        assert endpoint.concurrency_limit == limit
        assert {type(c).__name__ for c in endpoint.inputs + endpoint.outputs} == {"Api"}  # no component behind them
    assert not [
        b
        for b in demo.blocks.values()
        if type(b).__name__ in ("File", "JSON", "Button") and not getattr(b, "visible", True)
    ]


def test_an_upload_inside_gradios_cache_is_accepted(app_module):
    uploaded = os.path.join(app_module.get_upload_folder(), "x", "cat.png")
    assert app_module.uploaded_path({"path": uploaded, "meta": {"_type": "gradio.FileData"}}) == uploaded
    assert app_module.uploaded_path({"path": uploaded}) == uploaded
    assert app_module.uploaded_path(None) is None


HOSTILE_PATHS = {
    "bare path": "/etc/passwd",
    "dict outside the cache": {"path": "/etc/passwd"},
    "with FileData's meta": {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}},
    "climbing out of the cache": {"path": os.path.join("{cache}", "..", "..", "etc", "passwd")},
    "NUL byte": {"path": os.path.join("{cache}", "x", "cat.png\0")},
    "not a string": {"path": 7},
}


@pytest.mark.parametrize("hostile", HOSTILE_PATHS.values(), ids=HOSTILE_PATHS)
def test_a_path_outside_gradios_upload_cache_is_refused(app_module, hostile):
    """gr.api hands a file over as a dict of FileData's fields: a path outside gradio's upload
    cache would have any file on the server read, with or without FileData's meta."""
    if isinstance(hostile, dict) and isinstance(hostile["path"], str):
        hostile = {**hostile, "path": hostile["path"].replace("{cache}", app_module.get_upload_folder())}
    with pytest.raises(app_module.gr.Error, match="handle_file"):
        app_module.uploaded_path(hostile)


# --------------------------------------------------------------------------- served app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(app_module, state):
    demo = app_module.build_demo(state)
    _, url, _ = demo.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=free_port(),
        quiet=True,
        max_file_size=app_module.SERVER_MAX_FILE_SIZE,
    )
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from gradio_client import Client

    return Client(server, verbose=False, download_files=str(tmp_path_factory.mktemp("client")))


def test_client_sees_both_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/predict", "/predict_batch"} <= set(endpoints)


def test_client_predict_one_image(client, images):
    from gradio_client import handle_file

    result = client.predict(handle_file(str(images["good.png"])), api_name="/predict")
    assert_probabilities(result, list_detectors())


def test_client_predict_batch_with_hostile_files(client, images):
    from gradio_client import handle_file

    order = ["good.png", "notes.txt", "empty.jpg", "photo.png", "cut.jpg"]
    results = client.predict([handle_file(str(images[n])) for n in order], api_name="/predict_batch")
    assert [r["file"] for r in results] == order
    assert_probabilities(results[0]["predictions"], list_detectors())
    assert_probabilities(results[3]["predictions"], list_detectors())
    assert "not an image" in results[1]["error"]
    assert "empty" in results[2]["error"]
    assert "truncated" in results[4]["error"]


def test_client_cannot_have_a_server_file_read_by_naming_its_path(client, images):
    # A dict without FileData's meta skips gradio's own upload-cache check; the app refuses it.
    for api_name, payload in (
        ("/predict", {"path": str(images["good.png"])}),
        ("/predict_batch", [{"path": str(images["good.png"])}]),
        ("/detect_pasted", {"path": str(images["good.png"])}),
    ):
        with pytest.raises(Exception, match="handle_file"):
            client.predict(payload, api_name=api_name)


def test_a_pasted_file_that_is_no_image_gets_its_own_message(client, images):
    # gr.Image's preprocessing would open the file with Pillow first and answer a bare "Error".
    from gradio_client import handle_file

    for name, message in (("notes.txt", "not an image"), ("empty.jpg", "empty")):
        cards, _, _ = client.predict(handle_file(str(images[name])), api_name="/detect_pasted")
        assert message in cards
    cards, _, _ = client.predict(handle_file(str(images["good.png"])), api_name="/detect_pasted")
    assert all(get_spec(name).title in cards for name in list_detectors())


def test_client_predict_bad_file_gets_its_message_and_server_keeps_serving(client, images):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=re.escape("notes.txt: not an image this app can read")):
        client.predict(handle_file(str(images["notes.txt"])), api_name="/predict")
    assert_probabilities(client.predict(handle_file(str(images["photo.png"])), api_name="/predict"), list_detectors())
