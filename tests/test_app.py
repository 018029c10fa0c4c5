"""The Gradio app: handlers called directly, then the app launched and called with gradio_client."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from cifake_models import get_spec, list_detectors, results
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
def bank(app_module, tiny_assets):
    return app_module.load_bank(tiny_assets["checkpoints"], tiny_assets["reports"])


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
        assert set(p) == {"REAL", "FAKE"}
        assert 0.0 <= p["REAL"] <= 1.0 and 0.0 <= p["FAKE"] <= 1.0
        assert p["REAL"] + p["FAKE"] == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- loading


def test_module_level_demo_reads_the_environment(app_module, tiny_assets):
    assert app_module.demo.bank.checkpoint_dir == tiny_assets["checkpoints"]
    assert app_module.demo.bank.report_dir == tiny_assets["reports"]
    assert sorted(app_module.demo.bank.detectors) == sorted(list_detectors())


def test_directories_default_to_assets_and_follow_env(app_module, monkeypatch, tmp_path):
    monkeypatch.delenv("CIFAKE_CHECKPOINTS", raising=False)
    monkeypatch.delenv("CIFAKE_REPORTS", raising=False)
    assert app_module.resolve_dirs() == (REPO_ROOT / "assets" / "checkpoints", REPO_ROOT / "assets" / "reports")
    monkeypatch.setenv("CIFAKE_CHECKPOINTS", str(tmp_path / "c"))
    monkeypatch.setenv("CIFAKE_REPORTS", str(tmp_path / "r"))
    assert app_module.resolve_dirs() == (tmp_path / "c", tmp_path / "r")


def test_every_detector_loads_once_with_its_report(bank):
    assert sorted(bank.detectors) == sorted(list_detectors())
    assert bank.unavailable == {} and bank.report_errors == {}
    assert sorted(bank.reports) == sorted(list_detectors())


def test_missing_and_corrupt_checkpoints_make_detectors_unavailable(app_module, tiny_assets, tmp_path, images):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(tiny_assets["checkpoints"], checkpoints)
    (checkpoints / get_spec("cnn").checkpoint_file).unlink()
    (checkpoints / get_spec("hog_svm").checkpoint_file).write_bytes(b"garbage, not a checkpoint")
    partial = app_module.load_bank(checkpoints, tmp_path / "no-reports")
    assert sorted(partial.unavailable) == ["cnn", "hog_svm"]
    assert "does not exist" in partial.unavailable["cnn"]
    assert "not a valid checkpoint" in partial.unavailable["hog_svm"]
    assert sorted(partial.report_errors) == sorted(list_detectors())
    # The others keep working, and the page says which are missing and why.
    others = [n for n in list_detectors() if n not in ("cnn", "hog_svm")]
    assert_probabilities(app_module.predict_file(partial, images["good.png"]), others)
    result = app_module.analyse(partial, app_module.decode_many([images["good.png"]]))[0]
    card = app_module.result_card(partial, result)
    assert "unavailable: checkpoint" in card and "does not exist" in card
    # The vote counts the detectors still available, the committee (serving on its other members) apart.
    voters = len([n for n in others if not get_spec(n).is_committee])
    assert re.fullmatch(rf"(all {voters}|\d of {voters}) say (FAKE|REAL)", result.agreement), result.agreement
    assert "Committee (all detectors): " in card
    table = app_module.compare_table(partial).set_index("Detector")
    assert table.loc["CNN (paper)", "Status"].startswith("unavailable: checkpoint")
    assert table.loc["CNN (paper)", "Paper accuracy"] == get_spec("cnn").paper.accuracy
    assert "unavailable" in app_module.detectors_markdown(partial)
    assert "available without hog_svm, cnn" in app_module.detectors_markdown(partial)
    app_module.build_demo(partial)  # the page still builds without reports or two checkpoints


# --------------------------------------------------------------------------- handlers


def test_predict_file_gives_every_detector_real_and_fake(app_module, bank, images):
    result = app_module.predict_file(bank, images["good.png"])
    assert_probabilities(result, list_detectors())
    # The same probabilities as the detectors' own predict_proba (FAKE, REAL column order).
    pixels = np.array(Image.open(images["good.png"]).convert("RGB"))[None]
    for name, detector in bank.detectors.items():
        proba = detector.predict_proba_arrays(pixels)[0]
        assert result[name]["FAKE"] == pytest.approx(proba[0], abs=1e-6)


@pytest.mark.parametrize(("name", "message"), [("notes.txt", "not an image"), ("empty.jpg", "empty"), ("cut.jpg", "truncated")])
def test_predict_file_refuses_hostile_files(app_module, bank, images, name, message):
    with pytest.raises(UploadError, match=message):
        app_module.predict_file(bank, images[name])


def test_predict_files_one_bad_file_does_not_fail_the_batch(app_module, bank, images):
    order = ["good.png", "notes.txt", "photo.png", "empty.jpg", "cut.jpg"]
    results = app_module.predict_files(bank, [images[n] for n in order])
    assert [r["file"] for r in results] == order
    for r in results:
        assert set(r) == {"file", "error", "notes", "predictions"}
    assert_probabilities(results[0]["predictions"], list_detectors())
    assert_probabilities(results[2]["predictions"], list_detectors())
    assert results[0]["error"] is None and results[0]["notes"] == []
    assert results[2]["notes"] == ["resized from 120x90 to 32x32 (shorter side to 32, centre crop)"]
    assert "not an image" in results[1]["error"] and results[1]["predictions"] == {}
    assert "empty" in results[3]["error"]
    assert "truncated" in results[4]["error"]


def test_batch_limit_reports_skipped_files(app_module, bank, images, monkeypatch):
    monkeypatch.setattr(app_module, "MAX_BATCH_FILES", 2)
    results = app_module.predict_files(bank, [images["good.png"]] * 3)
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


def test_detect_outputs_cards_table_and_csv(app_module, bank, images):
    order = ["good.png", "notes.txt", "photo.png"]
    cards, table, download = app_module.detect_outputs(bank, [str(images[n]) for n in order])
    for name in list_detectors():
        assert get_spec(name).title in cards
    assert cards.count("data:image/png;base64,") == 2  # the 32x32 input of each good image
    assert "not an image this app can read" in cards
    assert "say" in cards and "%" in cards
    assert list(table["File"]) == order
    assert table.shape[0] == 3
    assert download["visible"] is True
    path = download["value"]
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert [r["file"] for r in rows] == order
    for name in list_detectors():
        p_real, p_fake = float(rows[0][f"{name}_p_real"]), float(rows[0][f"{name}_p_fake"])
        assert p_real + p_fake == pytest.approx(1.0, abs=1e-5)
        assert rows[0][f"{name}_verdict"] in ("FAKE", "REAL")
    assert "not an image" in rows[1]["error"] and rows[1][f"{list_detectors()[0]}_p_fake"] == ""


def test_nearest_neighbour_display_keeps_pixels(app_module):
    pixels = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    uri = app_module.pixels_data_uri(pixels)
    import base64

    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert shown.shape == (128, 128, 3)
    np.testing.assert_array_equal(shown[::4, ::4], pixels)


def test_scratch_statement_follows_metadata(app_module, bank):
    assert all(bank.initialisation(n).startswith("random") for n in list_detectors())
    assert "trained from scratch" in app_module.scratch_statement(bank)
    assert "ImageNet weights were not used" in app_module.header_markdown(bank)


def test_compare_table_has_every_detector_and_figure(app_module, bank):
    table = app_module.compare_table(bank)
    assert list(table["Detector"]) == [get_spec(n).title for n in list_detectors()]
    for column in ["Accuracy", "ROC-AUC", "PR-AUC", "Leak-free accuracy",
                   "FAKE precision", "FAKE recall", "FAKE F1", "REAL precision", "REAL recall", "REAL F1",
                   "Resized/re-saved: mean accuracy", "Resized/re-saved: worst accuracy", "Worst case",
                   "Initialisation", "Our recipe", "Paper recipe", "Checkpoint MB", "ms/image (1)"]:  # tiny test split: no batch of 64
        assert column in table.columns
        assert table[column].notna().all(), column
    for name, row in zip(list_detectors(), table.to_dict("records")):
        report, paper = bank.reports[name], get_spec(name).paper
        assert row["Accuracy"] == pytest.approx(report["test"]["accuracy"], abs=1e-4)
        assert row["Leak-free accuracy"] == pytest.approx(report["test_leak_free"]["accuracy"], abs=1e-4)
        assert row["Resized/re-saved: mean accuracy"] == pytest.approx(report["robustness"]["mean_accuracy"], abs=1e-4)
        if paper:
            assert row["Paper ROC-AUC"] == paper.roc_auc and row["Paper accuracy"] == paper.accuracy
        else:
            assert pd.isna(row["Paper ROC-AUC"]) and row["Paper recipe"] == "not in the paper"


def test_detect_tab_states_accuracy_on_resized_uploads_from_the_reports(app_module, bank):
    robustness = {n: bank.reports[n]["robustness"] for n in list_detectors()}
    worst_name = min(robustness, key=lambda n: robustness[n]["worst"]["accuracy"])
    worst = robustness[worst_name]["worst"]
    header = app_module.header_markdown(bank)
    assert f"{get_spec(worst_name).title} falls to {100 * worst['accuracy']:.1f}% ({worst['perturbation']})" in header
    means = [r["mean_accuracy"] for r in robustness.values()]
    assert f"{100 * min(means):.1f}% to {100 * max(means):.1f}% of the time on average" in header
    table = app_module.detectors_markdown(bank)
    for name in list_detectors():
        row = next(line for line in table.splitlines() if line.startswith(f"| {get_spec(name).title} |"))
        r = robustness[name]
        assert row.endswith(f"| {100 * r['mean_accuracy']:.1f}% ({100 * r['worst']['accuracy']:.1f}%, {r['worst']['perturbation']}) |")


def test_robustness_plot_draws_every_detector_from_its_clean_accuracy(app_module, bank):
    figure = app_module.robustness_figure(bank)
    traces = [t for t in figure.data if t.legendgroup == "cnn"]
    assert len(traces) == len(FAMILIES)
    robustness = bank.reports["cnn"]["robustness"]
    jpeg = next(t for t in traces if t.hovertemplate.endswith("at jpeg %{x}<extra></extra>"))
    expected = sorted([(100, robustness["clean_accuracy"])] + [(s["strength"], s["accuracy"]) for s in robustness["scores"] if s["family"] == "jpeg"])
    assert list(zip(jpeg.x, jpeg.y)) == expected
    assert {t.legendgroup for t in figure.data} == set(list_detectors())


def test_evaluation_plots(app_module, bank):
    figures = app_module.evaluation_plots(bank, "cnn", "Official test split")
    assert len(figures) == 6 and all(isinstance(f, go.Figure) for f in figures)
    all_roc, all_pr, confusion, one_roc, one_pr, curves = figures
    titles = {get_spec(n).title for n in list_detectors()}
    assert {t.name.split(" (AUC")[0] for t in all_roc.data if t.name != "chance"} == titles
    assert {t.name.split(" (AP")[0] for t in all_pr.data} == titles
    assert np.asarray(confusion.data[0].z).shape == (2, 2)
    assert len(curves.data) == 4  # train/val loss and accuracy
    leak_free = app_module.evaluation_plots(bank, "hog_svm", list(app_module.SPLITS)[1])
    assert "no epochs" in leak_free[5].layout.annotations[0].text


def test_training_curves_mark_where_a_second_stage_starts(app_module, bank, monkeypatch):
    history = [{"epoch": e, "train_loss": 0.5, "val_loss": 0.5, "train_accuracy": 0.8, "val_accuracy": 0.8} for e in (1, 2, 3)]
    history[2]["stage"] = 2
    monkeypatch.setitem(bank.reports, "cnn", {**bank.reports["cnn"], "history": history})
    figure = app_module.training_figure(bank, "cnn")
    markers = [shape.x0 for shape in figure.layout.shapes if shape.x0 == shape.x1]
    assert markers == [2.5, 2.5]  # on the loss and the accuracy plot
    assert [a.text for a in figure.layout.annotations].count("stage 2") == 2


def test_blocks_settings(app_module, bank):
    demo = app_module.build_demo(bank)
    assert demo.delete_cache == (app_module.CACHE_SECONDS, app_module.CACHE_SECONDS)
    api_names = {d.api_name for d in demo.fns.values()}
    assert {"predict", "predict_batch"} <= api_names


# --------------------------------------------------------------------------- served app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(app_module, bank):
    demo = app_module.build_demo(bank)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                            max_file_size=app_module.SERVER_MAX_FILE_SIZE)
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


def test_client_predict_bad_file_gets_its_message_and_server_keeps_serving(client, images):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="notes.txt: not an image this app can read"):
        client.predict(handle_file(str(images["notes.txt"])), api_name="/predict")
    assert_probabilities(client.predict(handle_file(str(images["photo.png"])), api_name="/predict"), list_detectors())
