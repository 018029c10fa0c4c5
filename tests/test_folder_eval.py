"""``cifake-evaluate FOLDER``: a labelled folder of one's own images gets the figures the official
test split gets, resumably, with unreadable files listed; the page shows the report it writes."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cifake_models import folder_eval
from cifake_models.labels import CLASSES, FAKE, FAKE_LABEL, OUT_OF_SCOPE, REAL_LABEL, UNSURE
from cifake_models.metrics import classification_figures
from cifake_models.page.folder_report import (
    IN_SCOPE_SPLIT,
    SPLIT,
    ReportError,
    folder_plots,
    read_report,
    report_markdown,
)
from cifake_models.registry import get_spec, list_detectors, load_detector


def run(folder, out, tiny_assets, *extra) -> dict:
    arguments = [str(folder), "--out", str(out), "--checkpoints", str(tiny_assets["checkpoints"]), *extra]
    assert folder_eval.main(arguments) == 0
    return json.loads((out / "report.json").read_text())


def test_the_folder_gets_train_evaluates_figures_and_a_self_contained_page(tiny_folder_report):
    # scripts.folder_agreement (the fixture) compared the figures with train.evaluate's (docs/scope.md).
    report = read_report(tiny_folder_report / "report" / "report.json")
    assert report["images"] == {FAKE_LABEL: 8, REAL_LABEL: 8}
    assert {b["file"] for b in report["bad_files"]} == {"REAL/broken.jpg", "FAKE/notes.txt"}
    assert "not an image" in " ".join(b["error"] for b in report["bad_files"])
    assert list(report["detectors"]) == list_detectors()
    page = (tiny_folder_report / "report" / "report.html").read_text()
    assert "<script src=" not in page and page.count("Plotly.newPlot") == 2 + 3 * len(list_detectors())
    assert "REAL/broken.jpg" in page


def test_a_second_run_scores_only_new_files_and_drops_removed_ones(tiny_folder_report, tiny_assets, tmp_path, capsys):
    folder = shutil.copytree(tiny_folder_report / "folder", tmp_path / "mine")
    out = shutil.copytree(tiny_folder_report / "report", tmp_path / "out")
    Image.fromarray(np.full((300, 200, 3), 90, np.uint8)).save(folder / "REAL" / "big.webp")
    (folder / "FAKE" / "notes.txt").unlink()
    report = run(folder, out, tiny_assets)
    assert "17 of 18 files already scored; continuing with 1" in capsys.readouterr().err
    assert report["images"] == {FAKE_LABEL: 8, REAL_LABEL: 9}  # the WebP of another size counts
    assert [b["file"] for b in report["bad_files"]] == ["REAL/broken.jpg"]


def test_a_changed_file_is_scored_again_and_other_checkpoints_are_refused(
    tiny_folder_report, tiny_assets, tmp_path, capsys
):
    folder = shutil.copytree(tiny_folder_report / "folder", tmp_path / "mine")
    out = shutil.copytree(tiny_folder_report / "report", tmp_path / "out")
    first = next((folder / "FAKE").glob("*.jpg"))
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(first, format="JPEG")  # same name, other image
    with open(out / "scores.jsonl", "a") as scores:
        scores.write('{"file": "REAL/cut by a ki')  # a kill's last, unfinished line
    run(folder, out, tiny_assets)
    assert "17 of 18 files already scored; continuing with 1" in capsys.readouterr().err
    record = json.loads((out / folder_eval.SCORED_WITH).read_text())
    record["checkpoints"]["cnn.safetensors"] = "0" * 64
    (out / folder_eval.SCORED_WITH).write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="scored with other checkpoints"):
        run(folder, out, tiny_assets)


def test_a_detector_that_does_not_load_is_left_out_and_an_unreadable_folder_still_reports(
    tiny_folder_report, tiny_assets, tmp_path
):
    checkpoints = shutil.copytree(tiny_assets["checkpoints"], tmp_path / "checkpoints")
    (checkpoints / get_spec("vgg16_bn").checkpoint_file).unlink()
    folder = tiny_folder_report / "folder"
    arguments = [str(folder), "--out", str(tmp_path / "out"), "--checkpoints", str(checkpoints), "--workers", "1"]
    assert folder_eval.main(arguments) == 0
    report = read_report(tmp_path / "out" / "report.json")
    assert "vgg16_bn" not in report["detectors"] and "committee" in report["detectors"]
    (tmp_path / "junk" / "REAL").mkdir(parents=True)
    (tmp_path / "junk" / "REAL" / "a.txt").write_text("no image here")
    report = run(tmp_path / "junk", tmp_path / "junk-out", tiny_assets)
    assert report["detectors"] == {} and len(report["bad_files"]) == 1
    assert "no detector answered" in (tmp_path / "junk-out" / "report.html").read_text()
    assert read_report(tmp_path / "junk-out" / "report.json")["bad_files"][0]["file"] == "REAL/a.txt"


def test_a_folder_without_real_or_fake_is_refused_and_stray_files_are_named(tiny_assets, tmp_path):
    with pytest.raises(SystemExit, match="no REAL/ or FAKE/ subfolder"):
        folder_eval.main([str(tmp_path), "--out", str(tmp_path / "out")])
    (tmp_path / "real").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "real" / "a.png")
    (tmp_path / "readme.md").write_text("hello")
    files, elsewhere = folder_eval.labelled_files(tmp_path)
    assert [(f.name, CLASSES[f.label]) for f in files] == [("real/a.png", REAL_LABEL)] and elsewhere == ["readme.md"]


def test_two_folders_of_one_class_in_other_letter_cases_are_refused(tmp_path):
    (tmp_path / "REAL").mkdir()
    (tmp_path / "real").mkdir()
    with pytest.raises(SystemExit, match="has both REAL/ and real/"):
        folder_eval.labelled_files(tmp_path)


def test_in_scope_figures_and_verdict_shares(tiny_assets):
    rule = load_detector("cnn", tiny_assets["checkpoints"]).rule
    labels = [FAKE, FAKE, FAKE, 1 - FAKE, 1 - FAKE, 1 - FAKE]
    p_fake = [0.9, 0.2, 0.8, 0.1, 0.7, 0.3]
    scores = folder_eval.FolderScores(
        files=[f"{i}.png" for i in range(6)],
        labels=labels,
        p_fake={"cnn": p_fake},
        verdicts={"cnn": [FAKE_LABEL, REAL_LABEL, OUT_OF_SCOPE, REAL_LABEL, UNSURE, OUT_OF_SCOPE]},
        in_scope=[True, True, False, True, True, False],
        scope_cut=1.5,
        rows={"cnn": list(range(6))},
    )
    block = folder_eval.detector_report("cnn", rule, scores)
    kept = [0, 1, 3, 4]
    expected = classification_figures(np.take(labels, kept), np.take(p_fake, kept), rule.threshold)
    assert block[IN_SCOPE_SPLIT]["n"] == 4 and block[IN_SCOPE_SPLIT]["accuracy"] == expected["accuracy"]
    assert block[SPLIT]["n"] == 6
    assert block["verdicts"][FAKE_LABEL] == {
        "n": 3,
        FAKE_LABEL: 1 / 3,
        REAL_LABEL: 1 / 3,
        UNSURE: 0,
        OUT_OF_SCOPE: 1 / 3,
    }
    assert block["verdicts"][REAL_LABEL][UNSURE] == 1 / 3
    assert folder_eval.scope_summary(scores) == {
        "cut": 1.5,
        "in_scope_share": 4 / 6,
        "per_class": {FAKE_LABEL: 2 / 3, REAL_LABEL: 2 / 3},
    }


def test_the_page_reads_a_report_and_refuses_other_files(tiny_folder_report, tmp_path):
    report = read_report(tiny_folder_report / "report" / "report.json")
    text = report_markdown(report)
    assert "8 FAKE, 8 REAL images" in text and "`REAL/broken.jpg`" in text
    assert "| Native-32 CNN (ours) |" in text
    plots = folder_plots(report, "hog_svm")
    assert (
        "Confusion matrix: HOG + SVM" in plots.confusion.layout.title.text
        and "n=16" in plots.confusion.layout.title.text
    )
    assert len(plots.all_roc.data) == 1 + len(list_detectors())  # chance, then every detector
    (tmp_path / "x.json").write_text("{not json")
    (tmp_path / "y.json").write_text(json.dumps({"detector": "cnn", "test": {}}))  # an official report
    broken = {**report, "detectors": {"cnn": {**report["detectors"]["cnn"], SPLIT: {"n": 3}}}}
    (tmp_path / "z.json").write_text(json.dumps(broken))  # the right kind, a figure missing
    huge = copy.deepcopy(report)
    huge["detectors"]["cnn"]["verdicts"][FAKE_LABEL].update(n=3_000_000_000, UNSURE=[0] * 10)
    (tmp_path / "w.json").write_text(json.dumps(huge))  # would multiply a list by three billion
    (tmp_path / "v.json").write_text("[" * 100_000 + "]" * 100_000)
    for name, message in (
        ("x.json", "not JSON"),
        ("y.json", "not a report of cifake-evaluate"),
        ("z.json", "malformed report .KeyError: 'accuracy'"),
        ("w.json", "verdict shares that are not numbers"),
        ("v.json", "nested too deeply"),
    ):
        with pytest.raises(ReportError, match=message):
            read_report(tmp_path / name)
