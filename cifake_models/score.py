"""``cifake-score``: score a folder, a glob or a list of image files with every detector (or
chosen ones), into a resumable CSV or JSON Lines file. ``cifake-score --help`` says how.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .checkpoint import CheckpointError
from .committee import CommitteeDetector
from .decision import DecisionRule
from .paths import CHECKPOINT_DIR, checkpoint_dir_or_default
from .registry import get_spec, list_detectors
from .results import ImageResult, csv_header, from_spreadsheet, score, spreadsheet_safe
from .scope import try_load_scope
from .uploads import ALLOWED_FORMATS, Decoded, Failed, decode_bytes, decode_or_fail, decode_upload

HELP = """Score a folder, a glob or a list of image files with every detector (or chosen ones).

examples:
  cifake-score photos/ --out scores.csv                  every image under photos/, recursively
  cifake-score "shots/**/*.png" a.jpg --out scores.jsonl  a glob (quoted) and a file; JSON Lines
  cifake-score --list files.txt --detectors cnn resnet50 --out scores.csv
  find /data -name "*.jpg" | cifake-score --list - --out scores.csv

The output has the columns of the app's CSV download (file, error, notes, majority, agreement,
in_scope, scope_score, scope_cut, then P(REAL), P(FAKE) and the verdict of each detector), one row
per file; an image unlike CIFAKE is out of scope, and every verdict on it says OUT_OF_SCOPE. A file that cannot be
read gets a row with its reason in ``error``, and the run goes on. Rows are appended a batch at a
time, so after an interruption (Ctrl-C, a kill, a crash) the same command continues where it
stopped: files already in the output are not scored again. ``--overwrite`` starts afresh.

The work is split by batches, not by operators: ``--workers`` processes (default: one per core)
each load the detectors once and decode and score whole batches on their share of the cores, and
this process writes their rows in file order. At 32x32 the networks' operators are too small to
keep several threads busy (each thread waits for the others at every operator), so one thread
per batch scores more images per second than two threads on one batch; ``python -m
scripts.benchmarks.folder`` measures both, against the detectors in-process.

``file`` is the path relative to the folder given (for a folder), or the path as given (for a
glob, a file or a list), so it names each file once and the app's CSV, which names an upload by
its file name, matches a flat folder's rows. A file name that is not UTF-8 is written with
backslash escapes (``caf\\udce9.jpg``), so that the output stays UTF-8 (:func:`escaped`).
"""  # the command's --help

FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
# Files a folder contributes: the extensions Pillow registers for the formats the app accepts.
Image.init()
IMAGE_SUFFIXES = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in ALLOWED_FORMATS)


def with_members(names: Sequence[str]) -> list[str]:
    """``names`` and their committees' members, in the registry's order (members load first)."""
    needed = {*names, *(member for name in names for member in get_spec(name).members)}
    return [name for name in list_detectors() if name in needed]


class BatchScorer:
    """Detectors loaded once, then batches of images in, rows of results out.

    The folder command scores through it, and so can a distributed engine: it is a stateful
    callable for Ray Data's ``map_batches`` (each actor loads the detectors once), taking the
    ``bytes`` and ``path`` columns of ``ray.data.read_binary_files(..., include_paths=True)`` and
    returning the output's columns (see the README).
    """

    def __init__(self, detectors: Sequence[str] | None = None, checkpoint_dir: str | Path | None = None):
        self.names = list(dict.fromkeys(detectors or list_detectors()))  # the columns, each detector once
        # A committee combines its members' answers, so they are loaded too (once, and in the
        # registry's order, members first) and score unseen where they were not asked for.
        self.detectors, failed = {}, {}
        for name in with_members(self.names):
            try:
                self.detectors[name] = get_spec(name).load(checkpoint_dir, loaded=self.detectors).prepare_for_serving()
            except CheckpointError as error:
                failed[name] = str(error)
            except Exception as error:  # e.g. metadata of another shape: this detector is unavailable, the others score
                failed[name] = f"could not load {get_spec(name).checkpoint_file}: {type(error).__name__}: {error}"
        self.unavailable = {name: why for name, why in failed.items() if name in self.names}
        # Committees serving on fewer members (``{committee: {member: why}}``), each member with
        # its own reason where it failed to load here (the committee only knows it was absent).
        self.without = {
            name: {member: failed.get(member, why) for member, why in detector.unavailable.items()}
            for name, detector in self.detectors.items()
            if name in self.names and isinstance(detector, CommitteeDetector) and detector.unavailable
        }
        self.columns = csv_header(self.names)
        self.scope, self.scope_error = try_load_scope(checkpoint_dir_or_default(checkpoint_dir), self.detectors)

    def score(self, items: Sequence[Decoded | Failed]) -> list[ImageResult]:
        return score(self.detectors, items, self.unavailable, shown=self.names, scorer=self.scope)

    def records(self, items: Sequence[Decoded | Failed]) -> list[dict]:
        """One ``{column: value}`` per item; empty cells are ``None``."""
        return [
            {k: (None if v == "" else v) for k, v in zip(self.columns, r.row(self.names))} for r in self.score(items)
        ]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """Ray Data's batch format: ``{"bytes": [...], "path": [...]}`` in, ``{column: [...]}`` out."""
        items = [
            decode_or_fail(str(path), lambda data=data, path=path: decode_bytes(bytes(data), str(path)))
            for data, path in zip(batch["bytes"], batch["path"])
        ]
        records = self.records(items)
        return {column: [record[column] for record in records] for column in self.columns}


def escaped(text: str) -> str:
    """``text`` as the output holds it: a file name that is not UTF-8, which Python keeps as lone
    surrogates, gets backslash escapes (``\\udce9``), so that the output stays UTF-8 and a rerun
    finds the same name in it. Names are escaped as they are collected, everything else as it
    is written (:func:`encode`)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def collect(inputs: Sequence[str], list_file: str | None = None) -> list[tuple[str, Path]]:
    """``(name, path)`` for every file the inputs give, in order, each once; a folder or glob
    that gives none is reported on standard error."""
    found: list[tuple[str, Path]] = []
    for spec in inputs:
        path = Path(spec)
        before = len(found)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found += [(p.relative_to(path).as_posix(), p) for p in files]
        elif path.is_file() or not glob.has_magic(spec):  # an existing shot[1].jpg is a file, not a pattern
            found.append((spec, path))  # a missing file gets its row and its reason, like any bad file
        else:
            found += [(p, Path(p)) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()]
        if len(found) == before:
            problem = "no image files in this folder" if path.is_dir() else "no files match this pattern"
            print(f"warning: {spec}: {problem}", file=sys.stderr)
    if list_file:
        # Bytes, decoded as the file system's names are (os.fsdecode), so that a listed name that
        # is not UTF-8 (find prints names as they are) still opens.
        handle = sys.stdin.buffer if list_file == "-" else open(list_file, "rb")
        with handle:
            found += [(line, Path(line)) for line in (os.fsdecode(raw.strip()) for raw in handle) if line]
    seen: dict[str, Path] = {}
    for name, path in found:
        name = escaped(name)
        if name in seen and seen[name] != path:
            raise SystemExit(
                f"error: two inputs both give the name {name!r} ({seen[name]} and {path});"
                " score them into separate outputs"
            )
        seen.setdefault(name, path)
    return list(seen.items())


def finished(out: Path, fmt: str, columns: list[str]) -> set[str]:
    """Names already in ``out``. An output that is not one this command wrote with these
    columns (other detectors, another file altogether) is refused, untouched, rather than mixed;
    in one that is, a last line cut short by a kill is removed."""
    if not out.is_file() or out.stat().st_size == 0:
        return set()
    data = out.read_bytes()
    complete = data.rfind(b"\n") + 1  # what follows, a line without its end, is a kill's cut
    refuse = f"choose another --out, or pass --overwrite to replace {out}"
    try:
        text = data[:complete].decode("utf-8")
    except UnicodeDecodeError as error:
        raise SystemExit(f"error: {out} is not UTF-8 text, so not this command's output ({error}); {refuse}") from None
    if not text:
        raise SystemExit(f"error: {out} holds no complete line, so its columns cannot be checked; {refuse}")
    if fmt == "csv":
        try:
            rows, end = complete_records(text)
        except ValueError as error:
            raise SystemExit(f"error: {out} is not CSV as this command writes it ({error}); {refuse}") from None
        rows = [row for row in rows if row]  # a blank line names no file
        ours, names = bool(rows) and rows[0] == columns, {from_spreadsheet(row[0]) for row in rows[1:]}
        complete = len(text[:end].encode("utf-8"))
    else:
        try:
            records = [json.loads(line) for line in text.split("\n") if line.strip()]
        except json.JSONDecodeError as error:
            raise SystemExit(f"error: {out} is not JSON Lines ({error}); {refuse}") from None
        ours = bool(records) and all(isinstance(record, dict) and list(record) == columns for record in records)
        names = {record["file"] for record in records} if ours else set()
    if not ours:
        raise SystemExit(
            f"error: {out} has other columns than this run writes ({', '.join(columns[:8])}, ...); {refuse}"
        )
    if complete < len(data):
        with open(out, "r+b") as handle:
            handle.truncate(complete)
    return names


def complete_records(text: str) -> tuple[list[list[str]], int]:
    """The CSV records of ``text`` up to the last one a kill may have cut (even inside a quoted
    name holding a newline), and how many characters the complete ones take."""
    pieces = re.split(r"(?<=\n)", text)
    read = 0  # pieces the reader has taken

    def feed() -> Iterator[str]:
        nonlocal read
        for piece in pieces:
            read += 1
            yield piece

    rows, taken, end = [], 0, 0
    reader = csv.reader(feed(), strict=True)  # strict: a quoted field open at the end is an error, not a record
    try:
        for row in reader:
            if not pieces[read - 1].endswith("\n"):
                break
            end += sum(len(piece) for piece in pieces[taken:read])
            taken = read
            rows.append(row)
    except csv.Error as error:
        if read < len(pieces):  # not at the end, so not a kill's cut: not this command's CSV
            raise ValueError(f"line {reader.line_num}: {error}") from None
    return rows, end


def encode(records: list[dict], fmt: str, header: list[str] | None) -> bytes:
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buffer)
        if header:
            writer.writerow(header)
        writer.writerows([("" if v is None else spreadsheet_safe(v)) for v in record.values()] for record in records)
    else:
        buffer.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return escaped(buffer.getvalue()).encode("utf-8")


def _exit_with(parent: int) -> None:
    """Worker processes leave when the command goes: a kill (SIGKILL) reaches only the command."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _decode(chunk: list[tuple[str, str]]) -> list[Decoded | Failed]:
    # The app's decoding, but a path that is no file was typed or listed here: say so in those terms.
    return [
        decode_or_fail(name, lambda name=name, path=path: decode_upload(path, name, missing=f"no such file: {path}"))
        for name, path in chunk
    ]


_worker_scorer: BatchScorer | None = None  # each worker process's own detectors


def _start_worker(
    parent: int, threads: int, detectors: Sequence[str] | None, checkpoint_dir: str | Path | None
) -> None:
    global _worker_scorer
    _exit_with(parent)
    torch.set_num_threads(threads)  # the served networks' ONNX Runtime sessions take torch's count
    threadpool_limits(threads)  # the SVM's BLAS
    _worker_scorer = BatchScorer(detectors, checkpoint_dir)


@dataclass(frozen=True)
class Loaded:
    """What a scorer loaded: the detectors that did not load and why, committees serving without
    members, why the scope score did not load, and the decision rule of each detector that did."""

    unavailable: dict[str, str]
    without: dict[str, dict[str, str]]
    scope_error: str | None
    rules: dict[str, DecisionRule]

    @classmethod
    def of(cls, scorer: BatchScorer) -> Loaded:
        rules = {name: d.rule for name, d in scorer.detectors.items() if name in scorer.names}
        return cls(scorer.unavailable, scorer.without, scorer.scope_error, rules)


def _worker_loaded() -> Loaded:
    return Loaded.of(_worker_scorer)


def _worker_records(chunk: list[tuple[str, str]]) -> list[dict]:
    return _worker_scorer.records(_decode(chunk))


def scored_batches(
    todo: list[tuple[str, Path]],
    batch_size: int,
    scorer: BatchScorer | None,
    pool: ProcessPoolExecutor | None = None,
    ahead_max: int = 4,
) -> Iterator[list[dict]]:
    """Each batch's records, in file order: scored by ``scorer`` in this process, or by the
    ``pool``'s workers (each batch whole by one worker, up to ``ahead_max`` batches queued)."""
    chunks = [[(name, str(path)) for name, path in todo[i : i + batch_size]] for i in range(0, len(todo), batch_size)]
    if pool is None:
        yield from (scorer.records(_decode(chunk)) for chunk in chunks)
        return
    ahead: deque[Future] = deque()
    for chunk in chunks:
        ahead.append(pool.submit(_worker_records, chunk))
        if len(ahead) > ahead_max:
            yield ahead.popleft().result()
    while ahead:
        yield ahead.popleft().result()


def append(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """--detectors, --checkpoints, --batch-size and --workers: how files are scored (here and in cifake-evaluate)."""
    parser.add_argument(
        "--detectors",
        nargs="+",
        metavar="NAME",
        choices=list_detectors(),
        help=f"default: all ({', '.join(list_detectors())})",
    )
    parser.add_argument(
        "--checkpoints", type=Path, default=None, help=f"default: $CIFAKE_CHECKPOINTS or {CHECKPOINT_DIR}"
    )
    parser.add_argument(
        "--batch-size", type=at_least_one, default=256, help="images per forward pass (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=at_least_one,
        default=os.cpu_count() or 1,
        help="processes that decode and score batches, each with its share of the cores"
        " (default: one per core, %(default)s); 1: all in this process",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cifake-score", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="PATH", help="folders (scanned recursively), files, or quoted globs (** allowed)"
    )
    parser.add_argument("--list", metavar="FILE", help="a file of paths, one per line (- reads standard input)")
    parser.add_argument("--out", type=Path, required=True, help="results file: .csv or .jsonl (JSON Lines)")
    parser.add_argument("--format", choices=sorted(set(FORMATS.values())), help="default: from --out's extension")
    add_scoring_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="start afresh instead of continuing an existing --out")
    args = parser.parse_args(argv)
    if not args.inputs and not args.list:
        parser.error("give folders, files or globs, or --list FILE")
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a folder: name a results file in it (.csv or .jsonl)")
    args.format = args.format or FORMATS.get(args.out.suffix.lower())
    if args.format is None:
        parser.error(f"cannot tell the format from {args.out.name}: name it .csv or .jsonl, or pass --format")
    return args


@dataclass(frozen=True)
class ScoreRun:
    """What one run of :func:`score_files` did: files scored now, already in the output, failed now."""

    scored: int
    already: int
    failed: int
    detectors: list[str]  # those that loaded and answered
    rules: dict[str, DecisionRule]  # their decision rules, as the scorer applied them


def score_files(
    files: list[tuple[str, Path]],
    out: Path,
    fmt: str = "jsonl",
    detectors: Sequence[str] | None = None,
    checkpoints: str | Path | None = None,
    batch_size: int = 256,
    workers: int = 1,
    overwrite: bool = False,
) -> ScoreRun:
    """Score ``(name, path)`` files into ``out``, continuing it where a run stopped; ``SystemExit``
    with the reason where the output is not this command's or no detector loads."""
    names = list(dict.fromkeys(detectors or list_detectors()))  # each once, as BatchScorer's columns
    columns = csv_header(names)
    # Before the detectors load: an output this run must not touch is refused at once.
    done = set() if overwrite else finished(out, fmt, columns)
    scorer, pool = _scorers(names, checkpoint_dir_or_default(checkpoints), workers)
    try:
        loaded = pool.submit(_worker_loaded).result() if pool else Loaded.of(scorer)
        _say_missing(loaded, names)
        if overwrite:
            out.unlink(missing_ok=True)
        todo = [(name, path) for name, path in files if name not in done]
        if done:
            print(
                f"{out}: {len(files) - len(todo)} of {len(files)} files already scored; continuing with {len(todo)}",
                file=sys.stderr,
            )
        failed = _append_scores(todo, out, fmt, columns, batch_size, scorer, pool, ahead_max=2 * workers)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    answered = [n for n in names if n not in loaded.unavailable]
    return ScoreRun(len(todo), len(files) - len(todo), failed, answered, loaded.rules)


def _scorers(
    names: list[str], checkpoints: Path, workers: int
) -> tuple[BatchScorer | None, ProcessPoolExecutor | None]:
    """The detectors in this process (one worker), or a pool of ``workers`` processes each with its own."""
    if workers == 1:
        return BatchScorer(names, checkpoints), None
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(os.getpid(), threads, names, checkpoints))
    return None, pool


def _say_missing(loaded: Loaded, names: list[str]) -> None:
    """Report on standard error what will not score (detectors, committee members, the scope score);
    ``SystemExit`` where no detector loaded."""
    if loaded.scope_error:
        print(f"in_scope, scope_score and scope_cut stay empty: {loaded.scope_error}", file=sys.stderr)
    for name, reason in loaded.unavailable.items():
        print(f"{name}: unavailable, its columns stay empty: {reason}", file=sys.stderr)
    for name, members in loaded.without.items():
        print(
            f"{name}: serving without {', '.join(members)} (weights fitted for the members it has): "
            + "; ".join(f"{member}: {reason}" for member, reason in members.items()),
            file=sys.stderr,
        )
    if len(loaded.unavailable) == len(names):
        raise SystemExit("error: no detector could be loaded")


def _append_scores(
    todo: list[tuple[str, Path]],
    out: Path,
    fmt: str,
    columns: list[str],
    batch_size: int,
    scorer: BatchScorer | None,
    pool: ProcessPoolExecutor | None,
    ahead_max: int,
) -> int:
    """Score ``todo`` into ``out`` a batch at a time, with a progress bar; how many failed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = 0
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        header = columns if os.fstat(fd).st_size == 0 and fmt == "csv" else None
        with tqdm(total=len(todo), unit="img", desc="scoring") as bar:
            for records in scored_batches(todo, batch_size, scorer, pool, ahead_max=ahead_max):
                # One write per batch, appended: a kill leaves whole batches, at worst one cut line,
                # which the next run removes (finished()).
                append(fd, encode(records, fmt, header))
                header = None
                failed += sum(record["error"] is not None for record in records)
                bar.update(len(records))
    finally:
        os.close(fd)
    return failed


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    files = collect(args.inputs, args.list)
    if not files:
        print("error: no files to score: the folders, globs and lists given hold no image files", file=sys.stderr)
        return 2
    run = score_files(
        files, args.out, args.format, args.detectors, args.checkpoints, args.batch_size, args.workers, args.overwrite
    )
    seconds = time.perf_counter() - started
    print(
        f"{args.out}: scored {run.scored} files ({run.failed} with an error, given in the error column)"
        f" with {', '.join(run.detectors)} in {seconds:.1f} s ({run.scored / max(seconds, 1e-9):.1f} files/s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
