"""cifake-score: folders, globs and lists scored into the app's CSV columns; bad files reported;
an interrupted run continues without scoring a file twice; the Ray Data callable."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifake_models import get_spec, list_detectors, score
from cifake_models.page.analysis import analyse_files
from cifake_models.page.state import load_state
from cifake_models.page.tables import write_csv
from cifake_models.results import COLUMNS, ImageResult, Prediction, csv_header

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Six good images of several sizes and formats, a text file named .png, and an empty .jpg."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for i, (size, fmt) in enumerate(
        [
            ((32, 32), "PNG"),
            ((48, 40), "JPEG"),
            ((32, 32), "JPEG"),
            ((90, 60), "PNG"),
            ((32, 32), "WEBP"),
            ((33, 31), "BMP"),
        ]
    ):
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(
            root / f"img{i}.{fmt.lower()}", format=fmt
        )
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
    state = load_state(tiny_assets["checkpoints"], tiny_assets["reports"])
    files = sorted(p for p in folder.iterdir() if p.suffix != ".txt")
    download = write_csv(state, analyse_files(state, [str(p) for p in files]))  # the app's Download button
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
    assert (
        run(
            [str(folder / "img[12].*"), "--list", str(listing), "--detectors", "cnn", "hog_svm", "--out", str(out)],
            tiny_assets["checkpoints"],
        )
        == 0
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["file"]).name for r in records] == ["img1.jpeg", "img2.jpeg", "img0.png", "missing.png"]
    assert all(list(r) == csv_header(["cnn", "hog_svm"]) for r in records)
    assert records[3]["error"] == f"no such file: {folder / 'missing.png'}" and records[3]["cnn_p_fake"] is None
    assert records[0]["error"] is None and records[0]["cnn_p_real"] + records[0]["cnn_p_fake"] == pytest.approx(
        1, abs=1e-5
    )


def test_a_committee_asked_for_alone_answers_as_beside_every_detector(tiny_assets, folder, tmp_path):
    """It combines its members' answers, so they score for it unseen; asked for before a member,
    and twice, it still gets one set of columns, in the order asked."""
    committee = next(name for name in list_detectors() if get_spec(name).is_committee)
    member = get_spec(committee).members[0]
    everything, chosen = tmp_path / "all.csv", tmp_path / "chosen.csv"
    assert run([str(folder), "--out", str(everything)], tiny_assets["checkpoints"], workers=1) == 0
    assert (
        run(
            [str(folder), "--detectors", committee, member, committee, "--out", str(chosen)],
            tiny_assets["checkpoints"],
            workers=1,
        )
        == 0
    )
    full, picked = rows(everything), rows(chosen)
    assert picked[0] == csv_header([committee, member])
    cells = [full[0].index(column) for column in picked[0][len(COLUMNS) :]]
    assert [[row[0]] + [row[i] for i in cells] for row in full[1:]] == [
        [row[0], *row[len(COLUMNS) :]] for row in picked[1:]
    ]
    assert sum(row[picked[0].index(f"{committee}_verdict")] != "" for row in picked[1:]) == 6  # every good image


def test_a_committee_without_some_members_says_so_and_counts_no_vote(tiny_assets, folder, tmp_path, capsys):
    """Asked for alone, with a member's checkpoint gone. The old command said nothing of the
    missing member, and its rows read "undecided" and "no detector available" beside the
    committee's verdict."""
    committee = next(name for name in list_detectors() if get_spec(name).is_committee)
    member = get_spec(committee).members[0]
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(tiny_assets["checkpoints"], checkpoints)
    (checkpoints / get_spec(member).checkpoint_file).unlink()
    out = tmp_path / "scores.csv"
    assert run([str(folder / "img0.png"), "--detectors", committee, "--out", str(out)], checkpoints) == 0
    err = capsys.readouterr().err
    assert f"{committee}: serving without {member} (weights fitted for the members it has): {member}: " in err
    assert get_spec(member).checkpoint_file in err  # the member's own reason, not only "not loaded"
    header, values = rows(out)
    row = dict(zip(header, values))
    assert row["majority"] == row["agreement"] == "" and row[f"{committee}_verdict"] in ("FAKE", "REAL", "UNSURE")


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
    monkeypatch.setattr(
        score.BatchScorer,
        "records",
        lambda self, items: (scored.extend(i.name for i in items), original(self, items))[1],
    )
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
    columns = scorer(
        {"bytes": np.array([p.read_bytes() for p in files], dtype=object), "path": np.array([p.name for p in files])}
    )
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
        scored = dataset.map_batches(
            score.BatchScorer,
            fn_constructor_kwargs={"checkpoint_dir": str(tiny_assets["checkpoints"])},
            concurrency=1,
            batch_size=4,
        ).take_all()
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


# Fast checks of the command's own rules: no detector is loaded.

COLUMNS_CNN = csv_header(["cnn"])


def our_csv(*names: str) -> bytes:
    return score.encode([dict.fromkeys(COLUMNS_CNN) | {"file": name} for name in names], "csv", COLUMNS_CNN)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name,size\nholiday.jpg,3\nlast.jpg,4", "other columns"),  # someone else's CSV, no final newline
        (b"\xff\xfeh\x00i\x00\n", "not UTF-8"),  # UTF-16, say
        (b"name,size", "no complete line"),
    ],
    ids=["other-csv-without-final-newline", "not-utf8", "one-partial-line"],
)
def test_an_output_this_command_did_not_write_is_refused_untouched(tmp_path, content, message):
    """The old finished() cut the last line before looking at the columns (the other CSV lost
    "last.jpg,4", then the command refused it), and raised UnicodeDecodeError on the second."""
    out = tmp_path / "scores.csv"
    out.write_bytes(content)
    with pytest.raises(SystemExit, match=message):
        score.finished(out, "csv", COLUMNS_CNN)
    assert out.read_bytes() == content


def test_other_json_lines_are_refused_untouched(tmp_path):
    out = tmp_path / "scores.jsonl"
    content = b'{"file": "a.jpg", "size": 3}\n{"file": "b.jpg", "si'
    out.write_bytes(content)
    with pytest.raises(SystemExit, match="other columns"):
        score.finished(out, "jsonl", COLUMNS_CNN)
    assert out.read_bytes() == content


def test_blank_lines_name_no_file_and_a_cut_last_line_of_our_own_output_goes(tmp_path):
    """The old finished() raised IndexError on the blank line (row[0] of an empty row)."""
    out = tmp_path / "scores.csv"
    whole = our_csv("a.png") + b"\n" + our_csv("b.png").split(b"\n", 1)[1]
    out.write_bytes(whole + b"c.png,,,RE")
    assert score.finished(out, "csv", COLUMNS_CNN) == {"a.png", "b.png"}
    assert out.read_bytes() == whole


def test_a_file_name_that_is_not_utf8_is_written_escaped_and_found_again(tmp_path):
    """rglob gives such a name with lone surrogates; the old encode() raised UnicodeEncodeError on
    it, losing the batch, and a rerun raised again."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / os.fsdecode(b"caf\xe9.png")).write_bytes(b"not read here")
    [(name, path)] = score.collect([str(folder)])
    out = tmp_path / "scores.csv"
    out.write_bytes(our_csv(name))
    assert name == "caf\\udce9.png" and path.is_file()
    assert score.finished(out, "csv", COLUMNS_CNN) == {name}


def test_an_existing_file_with_glob_characters_is_a_file(tmp_path):
    """The old collect() took "shot[1].jpg" for a pattern (matching shot1.jpg) and skipped it."""
    shot = tmp_path / "shot[1].jpg"
    shot.write_bytes(b"")
    assert score.collect([str(shot)]) == [(str(shot), shot)]


def test_a_missing_path_on_the_command_line_is_called_so(tmp_path):
    """The old command answered with the app's "the file did not arrive (not found on the server)"."""
    missing = tmp_path / "typo.png"
    failed = score._decode([("typo.png", str(missing)), ("folder", str(tmp_path))])
    assert [f.error for f in failed] == [f"no such file: {missing}", f"no such file: {tmp_path}"]


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--batch-size", "-4"], ["--workers", "0"]])
def test_batch_size_and_workers_below_one_are_refused(option, tmp_path, capsys):
    """The old command scored nothing at -4 (and said "scored 9 files"); 0 raised ValueError."""
    with pytest.raises(SystemExit):
        score.parse_args([str(tmp_path), "--out", str(tmp_path / "s.csv"), *option])
    assert f"argument {option[0]}: must be at least 1" in capsys.readouterr().err


def test_no_files_to_score_is_an_error_and_writes_nothing(tmp_path, capsys):
    """The old command wrote a 0-byte CSV and said "scored 0 files"."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "scores.csv"
    assert (
        score.main(
            [
                str(empty),
                str(tmp_path / "*.png"),
                "--out",
                str(out),
                "--checkpoints",
                str(tmp_path / "none"),
                "--workers",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{empty}: no image files in this folder" in err and "*.png: no files match this pattern" in err
    assert "error: no files to score" in err and not out.exists()


def test_a_vote_of_no_detector_is_left_empty():
    """Only committees asked for: nothing to count. The old rows said "undecided" and "no detector
    available" beside the committee's verdict."""
    result = ImageResult(
        "a.png", predictions={"committee": Prediction(0.1, 0.9, "FAKE")}, array=np.zeros((32, 32, 3), np.uint8)
    )
    assert result.row(["committee"]) == ["a.png", "", "", "", "", "", "", "", 0.1, 0.9, "FAKE"]  # no scope: empty


def test_a_kill_just_after_a_newline_inside_a_quoted_name_is_cut_by_parsing(tmp_path):
    """The old finished() kept everything up to the last newline: here the start of a record whose
    quoted name holds a newline, which became a bogus row and a file never scored."""
    out = tmp_path / "scores.csv"
    whole = our_csv("a.png", "b.png")
    out.write_bytes(whole + b'"new\n')  # the kill landed right after the newline in "new\nline.png"
    assert score.finished(out, "csv", COLUMNS_CNN) == {"a.png", "b.png"}
    assert out.read_bytes() == whole
    out.write_bytes(our_csv("a.png", "new\nline.png"))  # whole, such a name is found again
    assert score.finished(out, "csv", COLUMNS_CNN) == {"a.png", "new\nline.png"}


def test_metadata_that_is_not_an_object_makes_that_detector_unavailable_not_the_run(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, tmp_path / get_spec("cnn").checkpoint_file, metadata={"cifake": "[]"})
    scorer = score.BatchScorer(["cnn", "hog_svm"], tmp_path)
    assert set(scorer.unavailable) == {"cnn", "hog_svm"}
    assert "not a JSON object" in scorer.unavailable["cnn"]


def test_an_out_that_is_a_folder_is_refused_before_loading(tmp_path, capsys):
    (tmp_path / "in.png").write_bytes(b"")
    with pytest.raises(SystemExit):
        score.main([str(tmp_path / "in.png"), "--out", str(tmp_path)])
    assert "is a folder: name a results file in it" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name", ['=HYPERLINK("http://x").jpg', "+1.png", "-2.png", "@SUM(A1).png", "\tx.png", "'=quoted.png"]
)
def test_formula_cells_are_neutralised_and_their_names_found_again(tmp_path, name):
    """OWASP's CSV injection guidance: a cell starting with = + - @ (or tab, CR) gets a leading quote."""
    out = tmp_path / "scores.csv"
    out.write_bytes(our_csv(name, "plain.png"))
    cell = rows(out)[1][0]
    assert cell == "'" + name and cell[1:] == name
    assert score.finished(out, "csv", COLUMNS_CNN) == {name, "plain.png"}


def test_the_page_download_neutralises_formula_cells_too():
    from types import SimpleNamespace

    from cifake_models.results import results
    from cifake_models.uploads import Failed

    answers = results([Failed("=cmd|' /C calc'!A0.png", "not an image")], ({}, {}, {}), {})
    path = write_csv(SimpleNamespace(names=["cnn"]), answers)
    assert rows(Path(path))[1][:2] == ["'=cmd|' /C calc'!A0.png", "not an image"]
