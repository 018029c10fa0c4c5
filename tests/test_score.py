"""cifake-score: folders, globs and lists scored into the app's CSV columns; bad files reported;
an interrupted run continues without scoring a file twice; the Ray Data callable."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifake_models import get_spec, list_detectors, score
from cifake_models.page.analysis import analyse_files
from cifake_models.page.bank import load_bank
from cifake_models.page.tables import write_csv
from cifake_models.results import COLUMNS, csv_header

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Six good images of several sizes and formats, a text file named .png, and an empty .jpg."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for i, (size, fmt) in enumerate([((32, 32), "PNG"), ((48, 40), "JPEG"), ((32, 32), "JPEG"), ((90, 60), "PNG"),
                                      ((32, 32), "WEBP"), ((33, 31), "BMP")]):
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(root / f"img{i}.{fmt.lower()}", format=fmt)
    (root / "notes.png").write_text("not an image at all")
    (root / "empty.jpg").write_bytes(b"")
    (root / "readme.txt").write_text("a folder contributes only image files")
    return root


def run(args: list[str], checkpoints: Path, workers: int = 2) -> int:
    return score.main([*args, "--checkpoints", str(checkpoints), "--workers", str(workers), "--batch-size", "3"])


def rows(path: Path) -> list[list[str]]:
    return list(csv.reader(open(path, encoding="utf-8", newline="")))


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "two-worker-processes"])
def test_folder_csv_equals_the_apps_csv_for_the_same_files(tiny_assets, folder, tmp_path, workers):
    out = tmp_path / "scores.csv"
    assert run([str(folder), "--out", str(out)], tiny_assets["checkpoints"], workers) == 0
    bank = load_bank(tiny_assets["checkpoints"], tiny_assets["reports"])
    files = sorted(p for p in folder.iterdir() if p.suffix != ".txt")
    download = write_csv(bank, analyse_files(bank, [str(p) for p in files]))  # the app's Download button
    assert out.read_bytes() == Path(download).read_bytes()
    table = rows(out)
    assert table[0] == csv_header(list_detectors()) and len(table) == 1 + 8
    errors = {row[0]: row[1] for row in table[1:]}
    assert "not an image" in errors["notes.png"] and "empty" in errors["empty.jpg"]
    assert sum(not e for e in errors.values()) == 6


def test_chosen_detectors_glob_list_and_json_lines(tiny_assets, folder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'img0.png'}\n\n{folder / 'missing.png'}\n")
    out = tmp_path / "scores.jsonl"
    assert run([str(folder / "img[12].*"), "--list", str(listing), "--detectors", "cnn", "hog_svm", "--out", str(out)],
               tiny_assets["checkpoints"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["file"]).name for r in records] == ["img1.jpeg", "img2.jpeg", "img0.png", "missing.png"]
    assert all(list(r) == csv_header(["cnn", "hog_svm"]) for r in records)
    assert "not found" in records[3]["error"] and records[3]["cnn_p_fake"] is None
    assert records[0]["error"] is None and records[0]["cnn_p_real"] + records[0]["cnn_p_fake"] == pytest.approx(1, abs=1e-5)


def test_a_committee_asked_for_alone_answers_as_beside_every_detector(tiny_assets, folder, tmp_path):
    """It combines its members' answers, so they score for it unseen; asked for before a member,
    and twice, it still gets one set of columns, in the order asked."""
    committee = next(name for name in list_detectors() if get_spec(name).is_committee)
    member = get_spec(committee).members[0]
    everything, chosen = tmp_path / "all.csv", tmp_path / "chosen.csv"
    assert run([str(folder), "--out", str(everything)], tiny_assets["checkpoints"], workers=1) == 0
    assert run([str(folder), "--detectors", committee, member, committee, "--out", str(chosen)], tiny_assets["checkpoints"], workers=1) == 0
    full, picked = rows(everything), rows(chosen)
    assert picked[0] == csv_header([committee, member])
    cells = [full[0].index(column) for column in picked[0][len(COLUMNS):]]
    assert [[row[0]] + [row[i] for i in cells] for row in full[1:]] == [[row[0]] + row[len(COLUMNS):] for row in picked[1:]]
    assert sum(row[picked[0].index(f"{committee}_verdict")] != "" for row in picked[1:]) == 6  # every good image


class Killed(BaseException):
    """Stands for a kill arriving while a batch is being scored."""


def test_an_interrupted_run_continues_without_scoring_a_file_twice(tiny_assets, folder, tmp_path, monkeypatch, capsys):
    """In-process (``--workers 1``), where the stand-in kill can be planted; the benchmark kills
    the worker-process run for real (SIGKILL) and checks the resumed output."""
    whole = tmp_path / "whole.csv"
    assert run([str(folder), "--out", str(whole)], tiny_assets["checkpoints"]) == 0

    scored: list[str] = []
    original = score.BatchScorer.records

    def records(self, items):
        if len(scored) >= 6:
            raise Killed  # the third batch (of three images) never finishes
        scored.extend(item.name for item in items)
        return original(self, items)

    monkeypatch.setattr(score.BatchScorer, "records", records)
    out = tmp_path / "cut.csv"
    with pytest.raises(Killed):
        run([str(folder), "--out", str(out)], tiny_assets["checkpoints"], workers=1)
    assert len(rows(out)) == 1 + 6
    with open(out, "ab") as handle:  # and a line cut short, as a kill in the middle of a write leaves
        handle.write(b"img9.png,,,REAL,all 5 s")
    scored.clear()
    monkeypatch.setattr(score.BatchScorer, "records", lambda self, items: (scored.extend(i.name for i in items), original(self, items))[1])
    assert run([str(folder), "--out", str(out)], tiny_assets["checkpoints"], workers=1) == 0
    assert "6 of 8 files already scored" in capsys.readouterr().err
    assert len(scored) == 2  # only the files the interrupted run had not written
    assert out.read_bytes() == whole.read_bytes()


def test_an_output_with_other_columns_is_refused(tiny_assets, folder, tmp_path):
    out = tmp_path / "scores.csv"
    assert run([str(folder / "img0.png"), "--detectors", "cnn", "--out", str(out)], tiny_assets["checkpoints"]) == 0
    with pytest.raises(SystemExit, match="other columns"):
        run([str(folder / "img0.png"), "--out", str(out)], tiny_assets["checkpoints"])
    assert run([str(folder / "img0.png"), "--out", str(out), "--overwrite"], tiny_assets["checkpoints"]) == 0
    assert rows(out)[0] == csv_header(list_detectors())


def test_two_inputs_giving_one_name_are_refused(folder, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(folder, twin)
    with pytest.raises(SystemExit, match="both give the name"):
        score.collect([str(folder), str(twin)])


def test_the_ray_data_callable_gives_the_commands_rows(tiny_assets, folder, tmp_path):
    """``BatchScorer`` as Ray Data's ``map_batches`` calls it: a dict of columns in and out."""
    out = tmp_path / "scores.csv"
    assert run([str(folder), "--out", str(out)], tiny_assets["checkpoints"]) == 0
    files = sorted(p for p in folder.iterdir() if p.suffix != ".txt")
    scorer = score.BatchScorer(checkpoint_dir=tiny_assets["checkpoints"])
    columns = scorer({"bytes": np.array([p.read_bytes() for p in files], dtype=object), "path": np.array([p.name for p in files])})
    assert list(columns) == csv_header(list_detectors())
    table = rows(out)[1:]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([("" if v is None else v) for v in row] for row in zip(*columns.values()))
    assert list(csv.reader(io.StringIO(buffer.getvalue()))) == table


def test_ray_data_runs_the_scorer_locally(tiny_assets, folder, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install -e .[ray]")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        dataset = ray.data.read_binary_files(str(folder), include_paths=True)
        scored = dataset.map_batches(score.BatchScorer, fn_constructor_kwargs={"checkpoint_dir": str(tiny_assets["checkpoints"])},
                                     concurrency=1, batch_size=4).take_all()
    finally:
        ray.shutdown()
    out = tmp_path / "scores.csv"
    assert run([str(folder), "--out", str(out)], tiny_assets["checkpoints"]) == 0
    expected = {row[0]: row for row in rows(out)[1:]}
    assert len(scored) == 9  # every file of the folder, readme.txt included, which gets its reason
    for record in scored:
        name = Path(record["file"]).name
        if name == "readme.txt":
            assert "not an image" in record["error"]
            continue
        assert [("" if v is None else str(v)) for v in list(record.values())[1:]] == expected[name][1:]
