"""``cifake-evaluate FOLDER``: how every detector does on a folder of labelled images of one's own
(``FOLDER/REAL/...`` and ``FOLDER/FAKE/...``, any sizes and formats), with the figures the official
test split gets. ``cifake-evaluate --help`` says how.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .calibration import selective_curve, selective_figures
from .checkpoint import atomic_write, file_sha256, write_json
from .decision import DecisionRule
from .labels import CLASSES
from .metrics import classification_figures
from .page.folder_report import IN_SCOPE_SPLIT, REPORT_KIND, SPLIT, VERDICTS, report_html, report_text
from .paths import checkpoint_dir_or_default
from .registry import get_spec, list_detectors
from .scope import SCOPE_FILE
from .score import add_scoring_options, escaped, score_files, with_members

HELP = """How every detector does on your own labelled images: cifake-evaluate FOLDER.

FOLDER holds a REAL/ and a FAKE/ subfolder (any letter case; subfolders inside them are read
too), of images of any size and format the app accepts. Each image goes through the app's own
upload path (decoded, brought to 32x32) and every detector, and OUT gets:

  scores.jsonl   every file's answers (cifake-score's JSON Lines): the run is resumable, the
                 same command again scores only the files not in it yet, or changed since
  scored.json    the checkpoints that scored them (others are refused: --overwrite) and each
                 file's size and time then
  report.json    per detector, what train.evaluate writes for the official test split: accuracy,
                 per-class precision/recall/F1, ROC-AUC, PR-AUC, confusion matrix, ROC and PR
                 curves, calibration (ECE, Brier, reliability) and accuracy against coverage; the
                 same on the in-scope images only; each verdict's share (FAKE, REAL, UNSURE,
                 OUT_OF_SCOPE) per true class; the in-scope share; the files that could not be read
  report.html    one self-contained page with the tables and the plotly figures

A file that cannot be read (corrupt, not an image, too large) is listed, with its reason, and
counted nowhere else. The app's Evaluation tab shows a report.json uploaded to it.

examples:
  cifake-evaluate my_pictures/ --out my_report
  cifake-evaluate my_pictures/ --detectors native32 committee --workers 1
"""  # the command's --help


@dataclass(frozen=True)
class LabelledFile:
    name: str  # path relative to FOLDER, as the scores name it
    path: Path
    label: int  # index into CLASSES


def labelled_files(folder: Path) -> tuple[list[LabelledFile], list[str]]:
    """Every file under ``folder``'s REAL/ and FAKE/ subfolders (hidden files apart), and the
    names of the files elsewhere in ``folder`` (not counted). ``SystemExit`` where there is neither."""
    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder")
    classes: dict[str, Path] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.upper() in CLASSES):
        if sub.name.upper() in classes:
            raise SystemExit(f"error: {folder} has both {classes[sub.name.upper()].name}/ and {sub.name}/: merge them")
        classes[sub.name.upper()] = sub
    if not classes:
        raise SystemExit(f"error: {folder} has no REAL/ or FAKE/ subfolder: put each image in the one it belongs to")
    name = lambda path: escaped(path.relative_to(folder).as_posix())  # noqa: E731  (as cifake-score names files)
    found = [
        LabelledFile(name(path), path, CLASSES.index(label))
        for label, sub in sorted(classes.items())
        for path in sorted(sub.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    ours = {sub.name for sub in classes.values()}
    elsewhere = [
        name(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).parts[0] not in ours
    ]
    return found, elsewhere


@dataclass
class FolderScores:
    """The scored files as arrays: one row per file that decoded, and the files that did not."""

    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    p_fake: dict[str, list[float]] = field(default_factory=dict)  # calibrated, as each detector answers
    verdicts: dict[str, list[str]] = field(default_factory=dict)
    rows: dict[str, list[int]] = field(default_factory=dict)  # which files each detector answered for
    in_scope: list[bool | None] = field(default_factory=list)
    scope_cut: float | None = None
    bad: dict[str, str] = field(default_factory=dict)  # file: why it could not be scored

    def add(self, record: dict, label: int, names: list[str]) -> None:
        if record["error"] is not None:
            self.bad[record["file"]] = record["error"]
            return
        for name in names:
            if record.get(f"{name}_p_fake") is not None:
                self.p_fake.setdefault(name, []).append(record[f"{name}_p_fake"])
                self.verdicts.setdefault(name, []).append(record[f"{name}_verdict"])
                self.rows.setdefault(name, []).append(len(self.files))
        self.files.append(record["file"])
        self.labels.append(label)
        self.in_scope.append(record["in_scope"])
        self.scope_cut = record["scope_cut"] if record["scope_cut"] is not None else self.scope_cut


def read_scores(scores: Path, files: list[LabelledFile], names: list[str]) -> FolderScores:
    """``files``' records in ``scores`` (cifake-score's JSON Lines), in ``files``' order; a record
    of a file no longer in the folder is left out."""
    records = {}
    for line in scores.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            records[record["file"]] = record
    out = FolderScores()
    for file in files:
        out.add(records[file.name], file.label, names)
    return out


def verdict_shares(labels: np.ndarray, verdicts: np.ndarray) -> dict[str, dict[str, float | int]]:
    """Per true class: how many images, and the share given each verdict."""
    return {
        CLASSES[c]: {"n": int((labels == c).sum()), **{v: float(np.mean(verdicts[labels == c] == v)) for v in VERDICTS}}
        for c in range(len(CLASSES))
        if (labels == c).any()
    }


def split_figures(labels: np.ndarray, p_fake: np.ndarray, threshold: float) -> dict | None:
    """train.evaluate's figures for one split: None where the split is empty."""
    if not len(labels):
        return None
    return {
        **classification_figures(labels, p_fake, threshold),
        "selective": selective_curve(labels, p_fake, threshold).to_dict(),
    }


def detector_report(name: str, rule: DecisionRule, scores: FolderScores) -> dict:
    """One detector's block, shaped as its official report (``report[split]``), so that the page's
    figures draw it as they draw the test split's; ``rule``: the one it scored with."""
    answered = np.asarray(scores.rows[name])
    labels = np.asarray(scores.labels)[answered]
    p_fake = np.asarray(scores.p_fake[name], dtype=np.float64)
    scope = [scores.in_scope[i] for i in answered]
    in_scope = np.asarray([bool(s) for s in scope]) if None not in scope else None
    band = rule.unsure
    parts = {SPLIT: np.arange(len(labels))} | ({} if in_scope is None else {IN_SCOPE_SPLIT: np.flatnonzero(in_scope)})
    return {
        "detector": name,
        "title": get_spec(name).title,
        "threshold": {"value": rule.threshold},
        **{split: split_figures(labels[rows], p_fake[rows], rule.threshold) for split, rows in parts.items()},
        "unsure": None
        if band is None
        else {
            split: selective_figures(labels[rows], p_fake[rows], band, rule.threshold) for split, rows in parts.items()
        },
        "verdicts": verdict_shares(labels, np.asarray(scores.verdicts[name])),
    }


def scope_summary(scores: FolderScores) -> dict | None:
    """The in-scope share, overall and per true class (one score for every detector); None without a scope score."""
    if not scores.in_scope or None in scores.in_scope:
        return None
    labels, in_scope = np.asarray(scores.labels), np.asarray(scores.in_scope, dtype=bool)
    return {
        "cut": scores.scope_cut,
        "in_scope_share": float(in_scope.mean()),
        "per_class": {
            CLASSES[c]: float(in_scope[labels == c].mean()) for c in range(len(CLASSES)) if (labels == c).any()
        },
    }


def folder_report(
    folder: Path,
    scores: FolderScores,
    rules: dict[str, DecisionRule],
    scored_with: dict[str, str],
    elsewhere: list[str],
) -> dict:
    labels = np.asarray(scores.labels)
    return {
        "kind": REPORT_KIND,
        "folder": folder.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "images": {CLASSES[c]: int((labels == c).sum()) for c in range(len(CLASSES))},
        "bad_files": [{"file": f, "error": e} for f, e in scores.bad.items()],
        "not_counted": elsewhere,  # files outside REAL/ and FAKE/
        "scope": scope_summary(scores),
        "checkpoints": scored_with,  # file: SHA-256, of the detectors and the scope score that scored
        "detectors": {
            name: detector_report(name, rule, scores) for name, rule in rules.items() if name in scores.p_fake
        },
    }


SCORED_WITH = "scored.json"  # beside scores.jsonl: what scored it (checkpoints) and the files' state then


def file_states(files: list[LabelledFile]) -> dict[str, list[int]]:
    """Each file's size and modification time: a file whose state changed is scored again."""
    states = {}
    for file in files:
        try:
            stat = file.path.stat()
            states[file.name] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            states[file.name] = [-1, -1]
    return states


def scoring_files(names: list[str], checkpoints: Path) -> dict[str, str]:
    """``{file: SHA-256}`` of every checkpoint the detectors (and their members) and the scope score read."""
    paths = [checkpoints / get_spec(n).checkpoint_file for n in with_members(names)] + [checkpoints / SCOPE_FILE]
    return {p.name: file_sha256(p) for p in paths if p.is_file()}


def keep_valid_scores(out: Path, files: list[LabelledFile], scored_with: dict[str, str], overwrite: bool) -> None:
    """Before scoring: refuse scores made with other checkpoints, forget those of files changed
    since, and record what this run scores with (so that a kill at any point leaves a true record)."""
    scores, record = out / "scores.jsonl", out / SCORED_WITH
    states = file_states(files)
    if overwrite:
        scores.unlink(missing_ok=True)
    elif scores.is_file():
        before = json.loads(record.read_text()) if record.is_file() else {}
        if before.get("checkpoints") != scored_with:
            raise SystemExit(
                f"error: {scores} was scored with other checkpoints (or by another command): "
                "pass --overwrite to score every file again, or choose another --out"
            )
        changed = {name for name, state in states.items() if before["files"].get(name) != state}
        lines = scores.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _file_of(line) not in changed]  # a kill's cut line: score_files's
        if len(kept) < len(lines):
            atomic_write(scores, lambda tmp: Path(tmp).write_text("".join(kept), encoding="utf-8"))
    write_json(record, {"checkpoints": scored_with, "files": states})


def _file_of(line: str) -> str | None:
    """The file a scores line names; None for a line that is not a whole record."""
    try:
        return json.loads(line)["file"]
    except (ValueError, KeyError, TypeError):
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cifake-evaluate", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="a folder with REAL/ and FAKE/ subfolders")
    parser.add_argument(
        "--out",
        type=Path,
        help="where the report goes (default: FOLDER-report beside this folder's name, in the current folder)",
    )
    add_scoring_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="score every file again instead of continuing")
    args = parser.parse_args(argv)
    args.out = args.out or Path(f"{args.folder.resolve().name}-report")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    files, elsewhere = labelled_files(args.folder)
    if elsewhere:
        print(f"not counted: {len(elsewhere)} files outside REAL/ and FAKE/ (listed in the report)", file=sys.stderr)
    names = list(dict.fromkeys(args.detectors or list_detectors()))
    checkpoints = checkpoint_dir_or_default(args.checkpoints)
    scores_file = args.out / "scores.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    scored_with = scoring_files(names, checkpoints)
    keep_valid_scores(args.out, files, scored_with, args.overwrite)
    run = score_files(
        [(f.name, f.path) for f in files], scores_file, "jsonl", names, checkpoints, args.batch_size, args.workers
    )
    scores = read_scores(scores_file, files, run.detectors)
    report = folder_report(args.folder.resolve(), scores, run.rules, scored_with, elsewhere)
    write_json(args.out / "report.json", report)
    (args.out / "report.html").write_text(report_html(report), encoding="utf-8")
    print(report_text(report))
    print(
        f"{len(scores.files)} images scored, {len(scores.bad)} could not be read (listed in the report);"
        f" {args.out / 'report.json'} and {args.out / 'report.html'} in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
