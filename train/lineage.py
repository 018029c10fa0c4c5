"""The whole chain that made a checkpoint: every stage, teacher and committee member, in training order.

Each checkpoint written by ``python -m train`` records it (its ``lineage`` entry); for the shipped files,
written before that, ``python -m train.lineage --write`` rebuilds it from their metadata and the git history
of assets/checkpoints into assets/lineage/NAME.json. ``python -m train replay`` re-runs it (train.replay).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cifake_models.checkpoint import file_sha256, write_json
from cifake_models.paths import CHECKPOINT_DIR, LINEAGE_DIR, REPO_ROOT
from cifake_models.preprocessing import Preprocessing
from cifake_models.registry import get_spec, list_detectors

from .metadata import held_out_split, with_new_fields

DATA_DEFAULTS = dict(zip(("val_fraction", "split_seed"), held_out_split({}), strict=True))  # before they were recorded
KEY_DATA = ("train_fingerprint", "val_fingerprint", "n_train", "n_val", "val_fraction", "split_seed")
Resolve = Callable[[str], "dict | None"]  # SHA-256 of a checkpoint file -> its metadata, or None where unknown


@dataclass(frozen=True)
class Replayed:
    """What a replay changed in the stage it repeats: ``overrides`` maps ``recipe.FIELD`` or
    ``data.limit`` to the value used (a smoke run's sizes); ``profile``: cpu (the recorded chain) or gpu."""

    of: str | None  # the key of the stage repeated; None for a profile's own stage
    overrides: dict = field(default_factory=dict)
    profile: str = "cpu"


@dataclass(frozen=True)
class Stage:
    """One training run. ``parent``, ``teacher`` and ``members`` index earlier stages of the same Lineage."""

    detector: str
    recipe: dict
    preprocessing: dict | None
    weights: str
    data: dict
    parent: int | None = None
    teacher: int | None = None
    members: tuple[int, ...] = ()
    processes: int = 1
    epochs: int | None = None
    wall_time_s: float | None = None
    hardware: str | None = None
    created: str | None = None
    files: tuple[str, ...] = ()  # SHA-256 of each file known to hold this stage's result; () for the file itself
    assumed: tuple[str, ...] = ()  # fields its file did not record, filled with today's defaults
    replayed: Replayed | None = None

    @property
    def seed(self) -> int | None:
        return self.recipe.get("seed")

    def content(self) -> dict:
        """What decides the run (not when, where or how long it ran): the basis of its key. A replayed
        stage is told apart by the stage it repeats (two stages may differ only in what a smoke run changes)."""
        replayed = {"replayed": asdict(self.replayed)} if self.replayed else {}
        return {
            "detector": self.detector,
            "recipe": self.recipe,
            "preprocessing": self.preprocessing,
            **replayed,
            "weights": self.weights,
            "data": {k: self.data.get(k) for k in KEY_DATA},
            "processes": self.processes,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Stage:
        replayed = data.get("replayed")
        tuples = {k: tuple(data.get(k) or ()) for k in ("members", "files", "assumed")}
        return cls(**{**data, **tuples, "replayed": Replayed(**replayed) if replayed else None})


@dataclass(frozen=True)
class Lineage:
    """Every stage behind one checkpoint, teachers and members before their students, its own last."""

    stages: tuple[Stage, ...]
    gaps: tuple[str, ...] = ()  # where the chain could not be recovered exactly

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def keys(self) -> list[str]:
        """Each stage's key: a hash of its content and of its parent's, teacher's and members' keys."""
        keys: list[str] = []
        for stage in self.stages:
            refs = {"parent": stage.parent, "teacher": stage.teacher}
            linked = {k: keys[i] if i is not None else None for k, i in refs.items()}
            linked["members"] = [keys[i] for i in stage.members]
            text = json.dumps({**stage.content(), **linked}, sort_keys=True)
            keys.append(hashlib.sha256(text.encode()).hexdigest()[:16])
        return keys

    def final_stages(self) -> dict[str, int]:
        """Each detector's last stage here that no later stage of it continues: what it ships as."""
        continued = {s.parent for s in self.stages if s.parent is not None}
        return {s.detector: i for i, s in enumerate(self.stages) if i not in continued}

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> Lineage:
        return cls(tuple(Stage.from_dict(s) for s in data["stages"]), tuple(data.get("gaps", ())))


def filled(record: dict | None, kind: type) -> tuple[dict, tuple[str, ...]]:
    """A recorded recipe or preprocessing with today's defaults for the fields it lacks, and those fields."""
    record = record or {}
    full = with_new_fields(record, kind)
    return full, tuple(sorted(set(full) - set(record)))


class Builder:
    """Collects stages in training order, each once (by key); a file's stages are added after its sources'.
    ``replayed``: what the file being written (the one without a SHA-256 yet) records of its replay."""

    def __init__(self, resolve: Resolve, replayed: Replayed | None = None):
        self.resolve, self.replayed = resolve, replayed
        self.stages: list[Stage] = []
        self.gaps: list[str] = []

    def lineage(self) -> Lineage:
        return Lineage(tuple(self.stages), tuple(dict.fromkeys(self.gaps)))

    def put(self, stage: Stage) -> int:
        """``stage``'s index, added unless a stage of the same key is here (its files then joined)."""
        keys = Lineage((*self.stages, stage)).keys()
        if keys[-1] in keys[:-1]:
            i = keys.index(keys[-1])
            files = tuple(dict.fromkeys((*self.stages[i].files, *stage.files)))
            self.stages[i] = dataclasses.replace(self.stages[i], files=files)
            return i
        self.stages.append(stage)
        return len(self.stages) - 1

    def merge(self, lineage: Lineage, sha: str | None) -> int:
        """Add a recorded lineage's stages (re-indexed); returns its final stage's index."""
        where: list[int] = []
        for stage in lineage.stages:
            moved = {k: None if getattr(stage, k) is None else where[getattr(stage, k)] for k in ("parent", "teacher")}
            where.append(self.put(dataclasses.replace(stage, **moved, members=tuple(where[i] for i in stage.members))))
        self.gaps.extend(lineage.gaps)
        if sha:
            self.put(dataclasses.replace(self.stages[where[-1]], files=(sha,)))
        return where[-1]

    def known(self, sha: str) -> int | None:
        return next((i for i, s in enumerate(self.stages) if sha in s.files), None)

    def ref(self, sha: str | None, role: str) -> int | None:
        """The index of the stage that wrote the file ``sha``, its chain added first; None (a gap) if unknown."""
        if not sha:
            return None
        if (i := self.known(sha)) is not None:
            return i
        metadata = self.resolve(sha)
        if metadata is None:
            self.gaps.append(f"{role} {sha[:12]}: no file with this SHA-256 was found, so its chain is unknown")
            return None
        return self.add(metadata, sha)

    def add(self, metadata: dict, sha: str | None) -> int:
        """Add the checkpoint ``metadata`` (the file ``sha``; None: the one being written) and its sources."""
        if "lineage" in metadata:
            return self.merge(Lineage.from_dict(metadata["lineage"]), sha)
        name = metadata["detector"]
        earlier = metadata.get("earlier_stages") or []
        # The newest earlier stage whose file carries a lineage of its own stands for the stages before it.
        start, parent = 0, None
        for j in reversed(range(len(earlier))):
            if self.known(earlier[j]["sha256"]) is not None or "lineage" in (self.resolve(earlier[j]["sha256"]) or {}):
                start, parent = j + 1, self.ref(earlier[j]["sha256"], f"{name} stage {j + 1}")
                break
        records = [*earlier, {**metadata, "sha256": sha}]
        own = metadata["training"]["wall_time_s"] - sum(s["training"]["wall_time_s"] for s in earlier)
        for j in range(start, len(records)):
            wall = round(own, 1) if j == len(earlier) else records[j]["training"]["wall_time_s"]
            parent = self.put(self.stage(metadata, records[j], j + 1, parent, wall))
        return parent

    def stage(self, metadata: dict, record: dict, number: int, parent: int | None, wall: float) -> Stage:
        """Stage ``number`` of the checkpoint ``metadata``, from its record (the metadata itself for the last)."""
        spec = get_spec(metadata["detector"])
        recipe, assumed = filled(record.get("recipe"), type(spec.recipe))
        assumed = tuple(f"recipe.{k}" for k in assumed)
        preprocessing = None
        if spec.is_torch:
            preprocessing, missing = filled(record.get("preprocessing"), Preprocessing)
            assumed += tuple(f"preprocessing.{k}" for k in missing)
        data = {**DATA_DEFAULTS, **record["data"]}
        assumed += tuple(f"data.{k}" for k in DATA_DEFAULTS if k not in record["data"])
        training = record["training"]
        if "processes" not in training:
            assumed += ("processes",)
        role = f"{spec.name} stage {number}"
        teacher = self.ref((record.get("teacher") or {}).get("sha256"), f"the teacher of {role}")
        members = metadata.get("member_checkpoints") or {}
        return Stage(
            detector=spec.name,
            recipe=recipe,
            preprocessing=preprocessing,
            weights=metadata.get("weights", "none"),
            data=data,
            parent=parent,
            teacher=teacher,
            members=tuple(self.ref(m["sha256"], f"the member {n} of {role}") for n, m in members.items()),
            processes=training.get("processes", 1),
            epochs=recipe.get("epochs"),
            wall_time_s=wall,
            hardware=training.get("hardware"),
            created=record.get("created"),
            files=(record["sha256"],) if record.get("sha256") else (),
            assumed=assumed,
            replayed=None if record.get("sha256") else self.replayed,
        )


_REPLAY: contextvars.ContextVar[Replayed | None] = contextvars.ContextVar("replay", default=None)


@contextlib.contextmanager
def replaying(replayed: Replayed) -> Iterator[None]:
    """Within this block, a checkpoint the trainer writes records ``replayed`` on its own stage."""
    token = _REPLAY.set(replayed)
    try:
        yield
    finally:
        _REPLAY.reset(token)


def of_metadata(
    metadata: dict, resolve: Resolve = lambda sha: None, sha: str | None = None, replayed: Replayed | None = None
) -> Lineage:
    """The lineage of the checkpoint ``metadata`` (the file ``sha``), its sources read through ``resolve``."""
    builder = Builder(resolve, replayed)
    builder.add(metadata, sha)
    return builder.lineage()


def record(metadata: dict, sources: dict[str, dict]) -> dict:
    """What the trainer stores as a new checkpoint's ``lineage``: its chain from ``metadata`` and the
    metadata of the files it read (parent, teacher, members: ``{sha256: metadata}``), or else their
    shipped lineage files. The stage being written records the replay it belongs to, if any."""
    shipped = shipped_resolver()

    def resolve(sha: str) -> dict | None:  # a recorded chain first
        metadata = sources.get(sha)
        return metadata if metadata and "lineage" in metadata else shipped(sha) or metadata

    return of_metadata(metadata, resolve, replayed=_REPLAY.get()).to_dict()


def sidecar_path(name: str, lineage_dir: Path = LINEAGE_DIR) -> Path:
    return lineage_dir / f"{name}.json"


def read_sidecars(lineage_dir: Path = LINEAGE_DIR) -> dict[str, dict]:
    """The shipped lineage files, by the SHA-256 of the checkpoint each describes."""
    found = {}
    for path in sorted(lineage_dir.glob("*.json")):
        data = json.loads(path.read_text())
        found[data["sha256"]] = data
    return found


def shipped_resolver(lineage_dir: Path = LINEAGE_DIR) -> Resolve:
    """Resolve a shipped file's SHA-256 to pseudo-metadata holding its lineage file's chain."""
    sidecars = read_sidecars(lineage_dir) if lineage_dir.is_dir() else {}
    return lambda sha: {"lineage": sidecars[sha]["lineage"]} if sha in sidecars else None


def of_checkpoint(path: Path, lineage_dir: Path = LINEAGE_DIR) -> Lineage:
    """The lineage a checkpoint records, else its shipped lineage file's, else what its metadata alone tells."""
    name = path.name.split(".")[0]
    metadata = get_spec(name).stored_metadata(path.parent)
    sha = file_sha256(path)
    sidecar = read_sidecars(lineage_dir).get(sha) if lineage_dir.is_dir() and "lineage" not in metadata else None
    if sidecar:
        return Lineage.from_dict(sidecar["lineage"])
    return of_metadata(metadata, shipped_resolver(lineage_dir), sha)


class GitHistory:
    """Every version of the checkpoints in assets/checkpoints that git holds, found by SHA-256:
    where (commit, path), its metadata, and a hash of its tensors alone."""

    def __init__(self, root: Path = REPO_ROOT, folder: str = "assets/checkpoints"):
        self.root = root
        self.found: dict[str, tuple[str, str, dict, str]] = {}
        blobs: set[str] = set()
        # Oldest first: each file is found where it first shipped.
        for rev in self.git("log", "--reverse", "--format=%H", "--", folder).decode().split():
            for line in self.git("ls-tree", rev, folder + "/").decode().splitlines():
                _, _, blob, path = line.split(None, 3)
                if path.endswith(".safetensors") and blob not in blobs:
                    blobs.add(blob)
                    content = self.git("cat-file", "blob", blob)
                    self.found.setdefault(hashlib.sha256(content).hexdigest(), (rev, path, *read_header(content)))

    def git(self, *args: str) -> bytes:
        return subprocess.run(["git", "-C", str(self.root), *args], check=True, capture_output=True).stdout

    def resolve(self, sha: str) -> dict | None:
        return self.found[sha][2] if sha in self.found else None

    def weights_digest(self, sha: str) -> str | None:
        return self.found[sha][3] if sha in self.found else None

    def where(self, sha: str) -> str | None:
        return f"{self.found[sha][0][:10]}:{self.found[sha][1]}" if sha in self.found else None


def read_header(content: bytes) -> tuple[dict, str]:
    """A safetensors file's metadata, and a hash of its tensors alone (whether two files hold the same weights)."""
    size = int.from_bytes(content[:8], "little")
    header = json.loads(content[8 : 8 + size])
    metadata = json.loads(header.pop("__metadata__")["cifake"])
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    digest.update(content[8 + size :])
    return metadata, digest.hexdigest()


def same_weights_gaps(lineage: Lineage, history: GitHistory) -> list[str]:
    """A gap for each stage whose files, one recipe, hold different weights (a rerun, not a revalidation)."""
    gaps = []
    for stage in lineage.stages:
        digests = {history.weights_digest(sha) for sha in stage.files} - {None}
        if len(digests) > 1:
            gaps.append(
                f"{stage.detector}: the files {', '.join(s[:12] for s in stage.files)} record one recipe "
                f"but hold different weights: a rerun of it, and replay makes one"
            )
    return gaps


def describe(lineage: Lineage, i: int) -> str:
    """``NAME stage N (file SHA)``: stage ``i`` by its place in its own detector's chain."""
    stage, number, j = lineage.stages[i], 1, i
    while (j := lineage.stages[j].parent) is not None:
        number += 1
    file = f" (file {stage.files[0][:12]})" if stage.files else ""
    return f"{stage.detector} stage {number}{file}"


def assumed_gaps(lineage: Lineage) -> list[str]:
    """A gap for each stage whose file did not record every field it is replayed with."""
    return [
        f"{describe(lineage, i)} recorded no {', '.join(s.assumed)}: replayed with today's defaults"
        for i, s in enumerate(lineage.stages)
        if s.assumed
    ]


def rebuild(history: GitHistory, checkpoint_dir: Path = CHECKPOINT_DIR) -> dict[str, dict]:
    """Each shipped detector's lineage file, from its metadata and git's versions of its sources
    (the committee last, from its members' lineages)."""
    built: dict[str, dict] = {}
    for name in list_detectors():
        spec = get_spec(name)
        path = checkpoint_dir / spec.checkpoint_file
        sha = file_sha256(path)

        def resolve(ref: str) -> dict | None:
            done = next((b for b in built.values() if b["sha256"] == ref), None)
            return {"lineage": done["lineage"]} if done else history.resolve(ref)

        lineage = of_metadata(spec.stored_metadata(checkpoint_dir), resolve, sha)
        gaps = [*lineage.gaps, *same_weights_gaps(lineage, history), *assumed_gaps(lineage)]
        lineage = Lineage(lineage.stages, tuple(dict.fromkeys(gaps)))
        files = sorted({f for s in lineage.stages for f in s.files} - {sha})
        built[name] = {
            "detector": name,
            "file": spec.checkpoint_file,
            "sha256": sha,
            "found_in_git": {f: history.where(f) for f in files},
            "lineage": lineage.to_dict(),
        }
    return built


def own_chain(target: Lineage) -> list[int]:
    """The indices of the last stage's own chain (parent links only), first stage first."""
    chain, i = [], len(target.stages) - 1
    while i is not None:
        chain.append(i)
        i = target.stages[i].parent
    return chain[::-1]


def chain_table(lineage_dir: Path = LINEAGE_DIR) -> str:
    """A markdown table of each shipped detector's own chain, from its lineage file (docs/reproduce.md)."""
    columns = (
        "detector",
        "stages",
        "epochs",
        "images seen",
        "wall time",
        "hardware",
        "teachers",
        "stages with fields not recorded",
    )
    rows = ["| " + " | ".join(columns) + " |", "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
    for name in list_detectors():
        target = Lineage.from_dict(json.loads(sidecar_path(name, lineage_dir).read_text())["lineage"])
        chain = [target.stages[i] for i in own_chain(target)]
        epochs = sum(s.epochs or 0 for s in chain)
        seen = sum((s.epochs or 0) * (s.recipe.get("images_per_epoch") or s.data["n_train"]) for s in chain)
        hours = sum(s.wall_time_s or 0 for s in chain) / 3600
        cpus = sorted({(s.hardware or "?").split(",")[0].removeprefix("CPU: ") for s in chain})
        teachers = sorted(
            {
                f"{target.stages[s.teacher].detector} ({target.stages[s.teacher].files[0][:8]})"
                for s in chain
                if s.teacher is not None
            }
        )
        cells = (
            name,
            len(chain),
            epochs or "",
            f"{seen / 1e6:.2f} M" if seen and epochs else "",
            f"{hours:.1f} h",
            "; ".join(cpus),
            ", ".join(teachers),
            sum(bool(s.assumed) for s in chain),
        )
        rows.append("| " + " | ".join(map(str, cells)) + " |")
    every = Lineage.from_dict(json.loads(sidecar_path(list_detectors()[-1], lineage_dir).read_text())["lineage"])
    hours = sum(s.wall_time_s or 0 for s in every.stages) / 3600
    epochs = sum(s.epochs or 0 for s in every.stages)
    assumed = sum(bool(s.assumed) for s in every.stages)
    cells = ("all (replay --all)", len(every.stages), epochs, "", f"{hours:.1f} h", "", "", assumed)
    rows.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.lineage", description=__doc__)
    parser.add_argument(
        "--write", action="store_true", help="write assets/lineage/NAME.json for every shipped checkpoint"
    )
    parser.add_argument("--checkpoints", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("--out", type=Path, default=LINEAGE_DIR)
    parser.add_argument(
        "--table", action="store_true", help="print the table of the shipped chains (docs/reproduce.md) and exit"
    )
    args = parser.parse_args(argv)
    if args.table:
        print(chain_table(args.out))
        return 0
    built = rebuild(GitHistory(), args.checkpoints)
    for name, data in built.items():
        stages = data["lineage"]["stages"]
        print(f"{name}: {len(stages)} stages in its chain, {len(data['lineage']['gaps'])} gaps")
        if args.write:
            write_json(sidecar_path(name, args.out), data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
