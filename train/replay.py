"""Re-run checkpoints' lineages from scratch: ``python -m train replay CHECKPOINT... --out DIR`` (or ``--all``).

Stages run in their lineage's order, teachers and members first, each in DIR/stages/DETECTOR-KEY with
the trainer's --resume (the same command again continues where it stopped); the replayed detectors are
then copied to DIR/checkpoints, the committee is fitted there, then the out-of-scope score on the replayed
native-32 (train.scope_fit, with the shipped score's recorded options), and train.evaluate writes DIR/reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cifake_models.checkpoint import CheckpointError, file_sha256, read_safetensors
from cifake_models.data import Split, default_data_dir
from cifake_models.paths import CHECKPOINT_DIR, LINEAGE_DIR
from cifake_models.preprocessing import Preprocessing
from cifake_models.recipes import PRECISIONS, CommitteeRecipe, SvmRecipe, TorchRecipe
from cifake_models.registry import REGISTRY, get_spec, list_detectors
from cifake_models.scope import FEATURES_OF, SCOPE_FILE

from . import evaluate, lineage, scope_fit
from .commands import THREADS_HELP, limit_threads
from .committee_fit import fit_committee
from .lineage import Lineage, Replayed, Stage
from .metadata import DataInfo, held_out_split
from .scope_fit import ScopeOptions
from .svm_fit import fit_svm
from .torch_fit import fit_torch

PROFILES = ("cpu", "gpu")


@dataclass(frozen=True)
class Smoke:
    """The sizes a smoke replay changes (recorded on each stage it trains): the same chain in seconds."""

    limit: int = 100  # training images (validation in proportion: 11), drawn as --limit draws them
    epochs: int = 1
    images_per_epoch: int = 8
    batch_size: int = 8
    precision: str = "fp32"  # bf16 is emulated, and slow, on a CPU without bf16 arithmetic
    svm_components: int = 32
    scope_fit_images: int = 100  # the scope score's train-split images (train.scope_fit)
    scope_val_images: int = 10  # and validation images (as many suite copies), as it draws them
    robustness_sample: int = 20  # test images per perturbation in the reports
    timing_repeats: int = 1  # timed calls per batch size in the reports' ms_per_image

    def overrides(self, stage: Stage) -> dict:
        """``recipe.FIELD`` (and ``data.limit``) -> the smoke's value, where it differs from ``stage``'s."""
        if stage.preprocessing is not None:
            wanted = {
                "epochs": self.epochs,
                "images_per_epoch": self.images_per_epoch,
                "batch_size": self.batch_size,
                "precision": self.precision,
            }
        else:
            wanted = {"n_components": self.svm_components} if "n_components" in stage.recipe else {}
        changed = {f"recipe.{k}": v for k, v in wanted.items() if stage.recipe.get(k) != v}
        return {**changed, "data.limit": self.limit}

    def scope_overrides(self, options: ScopeOptions) -> dict:
        """The scope fit's options the smoke changes -> its value."""
        wanted = {"fit_images": self.scope_fit_images, "val_images": self.scope_val_images}
        return {k: v for k, v in wanted.items() if getattr(options, k) != v}


def with_overrides(stage: Stage, overrides: dict) -> Stage:
    """``stage`` with the ``recipe.FIELD`` overrides applied (``data.limit`` acts on the data loaded)."""
    recipe = {**stage.recipe, **{k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("recipe.")}}
    return dataclasses.replace(stage, recipe=recipe)


def frozen(value):
    """JSON's lists as the tuples the recipe dataclasses hold."""
    return tuple(frozen(v) for v in value) if isinstance(value, list) else value


def recipe_of(stage: Stage) -> TorchRecipe | SvmRecipe | CommitteeRecipe:
    kind = type(get_spec(stage.detector).recipe)
    return kind(**{k: frozen(v) for k, v in stage.recipe.items()})


def shipped(target: Lineage, named: dict[str, int]) -> dict[str, int]:
    """The detectors a replay ships (by the index of their stage): those named, and a named committee's members."""
    members = {target.stages[m].detector: m for i in named.values() for m in target.stages[i].members}
    return {**members, **named}


def profile_lineage(names: list[str], lineage_dir: Path = LINEAGE_DIR) -> tuple[Lineage, dict[str, int]]:
    """The GPU profile of ``names`` as a lineage: one stage per network (its teacher's first), the
    SVM's recorded stage, and the committee over them all; and the index of each named detector's stage."""
    builder = lineage.Builder(lambda sha: None)
    done: dict[str, int] = {}

    def add(name: str) -> int:
        if name in done:
            return done[name]
        spec = get_spec(name)
        if spec.is_committee:
            members = tuple(add(m) for m in spec.members)
            stage = Stage(name, spec.recipe.to_dict(), None, "none", {}, members=members)
        elif spec.gpu is None:  # no network: its recorded (CPU) stage
            stage = lineage.of_checkpoint(CHECKPOINT_DIR / spec.checkpoint_file, lineage_dir).final
        else:
            teacher = add(spec.gpu.teacher) if spec.gpu.teacher else None
            stage = Stage(
                name, spec.gpu.recipe.to_dict(), spec.gpu.preprocessing.to_dict(), "none", {}, teacher=teacher
            )
        done[name] = builder.put(dataclasses.replace(stage, parent=None, files=(), replayed=Replayed(None, {}, "gpu")))
        return done[name]

    named = {name: add(name) for name in names}
    return builder.lineage(), named


def recorded_lineage(targets: list[Path], lineage_dir: Path = LINEAGE_DIR) -> tuple[Lineage, dict[str, int]]:
    """The recorded lineages of ``targets`` as one (stages shared between them once), and the index
    of each target's own last stage."""
    builder = lineage.Builder(lambda sha: None)
    finals = [builder.merge(lineage.of_checkpoint(path, lineage_dir), None) for path in targets]
    target = builder.lineage()
    return target, {target.stages[i].detector: i for i in finals}


class Replay:
    """One replay into ``out``: the data, loaded once per split, and each finished stage's file."""

    def __init__(
        self,
        out: Path,
        data_dir: Path,
        smoke: Smoke | None,
        device: str | None,
        profile: str,
        precision: str | None = None,
        reuse: Path | None = None,
    ):
        self.out, self.data_dir, self.smoke, self.device, self.profile = out, data_dir, smoke, device, profile
        self.precision = precision  # every network stage's arithmetic, where asked (recorded as an override)
        self.reuse = reuse  # a folder whose checkpoints may stand for the stages they record
        self._reuse_hashes: dict[Path, str] = {}  # SHA-256 of the files looked up there
        self._data: dict[tuple, tuple[Split, Split, DataInfo]] = {}

    def data(self, stage: Stage) -> tuple[Split, Split, DataInfo]:
        """The splits ``stage`` trains and validates on; refused if they are not the ones it recorded."""
        from .__main__ import training_data

        split = held_out_split({"data": stage.data})
        if split not in self._data:
            self._data[split] = training_data(self.data_dir, *split, limit=self.smoke.limit if self.smoke else None)
        train, val, info = self._data[split]
        recorded = stage.data.get("train_fingerprint")
        if not self.smoke and recorded and recorded != info.train_fingerprint:
            raise CheckpointError(
                f"{self.data_dir} is not the data {stage.detector} trained on (fingerprint "
                f"{info.train_fingerprint}, recorded {recorded}): "
                "pass the CIFAKE it recorded with --data"
            )
        return train, val, info

    def run(self, target: Lineage, named: dict[str, int] | None = None) -> dict[str, Path]:
        """Train every stage of ``target`` in order; returns each stage's file by index. With ``--reuse``,
        a stage other than the named ones whose recorded file is there is taken as it is."""
        keys, files, final = target.keys(), {}, set((named or {}).values())
        for i, stage in enumerate(target.stages):
            reused = None if i in final else self.reused(stage)
            if reused:
                print(f"replay: stage {i + 1}/{len(target.stages)}: {stage.detector} taken from {reused}", flush=True)
                files[i] = reused
                continue
            folder = self.out / "stages" / f"{stage.detector}-{keys[i]}"
            overrides = {**(self.smoke.overrides(stage) if self.smoke else {}), **self.precision_override(stage)}
            started = time.perf_counter()
            print(f"replay: stage {i + 1}/{len(target.stages)}: {stage.detector} ({keys[i]}) in {folder}", flush=True)
            note = Replayed(None if stage.replayed else keys[i], overrides, self.profile)
            with lineage.replaying(note):
                files[i] = self.train(with_overrides(stage, overrides), folder, files, target.stages)
            print(f"replay: {stage.detector} ({keys[i]}) done in {time.perf_counter() - started:.0f}s", flush=True)
        return files

    def reused(self, stage: Stage) -> Path | None:
        """``--reuse``: the stage's detector's checkpoint in that folder, if it is a file the stage recorded."""
        path = self.reuse / get_spec(stage.detector).checkpoint_file if self.reuse else None
        if not (path and path.is_file()):
            return None
        if path not in self._reuse_hashes:  # a chain holds many stages of one detector: hash its file once
            self._reuse_hashes[path] = file_sha256(path)
        return path if self._reuse_hashes[path] in stage.files else None

    def precision_override(self, stage: Stage) -> dict:
        """``--precision``: a network stage's arithmetic, where it differs from the recorded (bf16 is
        emulated, and many times slower, on a CPU without bf16 instructions)."""
        if self.precision is None or stage.preprocessing is None or stage.recipe.get("precision") == self.precision:
            return {}
        return {"recipe.precision": self.precision}

    def train(self, stage: Stage, folder: Path, files: dict[int, Path], stages: tuple[Stage, ...]) -> Path:
        spec = get_spec(stage.detector)
        train, val, info = self.data(stage)
        if spec.is_committee:
            for m in stage.members:
                copy(files[m], folder / get_spec(stages[m].detector).checkpoint_file)
            fit_committee(spec, val, recipe_of(stage), folder, info, resume=True)
        elif spec.is_torch:
            if stage.recipe.get("distill_weight") and stage.teacher is None:
                raise CheckpointError(
                    f"{stage.detector}: a distillation stage whose teacher's chain is unknown cannot be replayed"
                )
            spec = dataclasses.replace(spec, preprocessing=Preprocessing.from_dict(stage.preprocessing))
            fit_torch(
                spec,
                train,
                val,
                recipe_of(stage),
                folder,
                info,
                stage.weights,
                self.device,
                resume=True,
                init_from=files.get(stage.parent),
                teacher=files.get(stage.teacher),
            )
        else:
            fit_svm(spec, train, val, recipe_of(stage), folder, info, resume=True)
        return folder / spec.checkpoint_file

    def ship(self, target: Lineage, named: dict[str, int], files: dict[int, Path]) -> list[str]:
        """Copy the replayed detectors to OUT/checkpoints; returns their names."""
        names = shipped(target, named)
        for name, i in names.items():
            copy(files[i], self.out / "checkpoints" / get_spec(name).checkpoint_file)
        return [name for name in list_detectors() if name in names]

    def scope(self, names: list[str]) -> Path | None:
        """The out-of-scope score on the replayed native-32 in OUT/checkpoints, where it ships, with the
        options the shipped score records (a smoke's sizes instead of its own); a score fitted so on
        that very native-32 is kept. Fitted after the committee, as the shipped one was."""
        if FEATURES_OF not in names:
            return None
        checkpoints, shipped_file = self.out / "checkpoints", CHECKPOINT_DIR / SCOPE_FILE
        recorded = ScopeOptions.recorded(read_safetensors(shipped_file)[1])
        overrides = self.smoke.scope_overrides(recorded) if self.smoke else {}
        options, path = dataclasses.replace(recorded, **overrides), checkpoints / SCOPE_FILE
        if scope_fit.already_fitted(path, checkpoints, options):
            print(f"replay: {path} already fitted on {FEATURES_OF} there, with {options}", flush=True)
            return path
        print(f"replay: scope score on {checkpoints / get_spec(FEATURES_OF).checkpoint_file} ({options})", flush=True)
        started = time.perf_counter()
        replayed = {"of": file_sha256(shipped_file), "overrides": overrides, "profile": self.profile}
        scope_fit.fit(checkpoints, self.data_dir, options, record={"replayed": replayed})
        print(f"replay: scope score done in {time.perf_counter() - started:.0f}s", flush=True)
        return path


def copy(source: Path, destination: Path) -> None:
    """Copy a checkpoint unless an identical one is there."""
    if destination.is_file() and file_sha256(destination) == file_sha256(source):
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination)


def targets_of(args: argparse.Namespace) -> list[Path]:
    """The checkpoints named (a path, or a detector's name for its shipped file), or all shipped ones."""
    named = list_detectors() if args.all else args.checkpoints
    return [CHECKPOINT_DIR / get_spec(t).checkpoint_file if t in REGISTRY else Path(t) for t in named]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train replay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "checkpoints",
        nargs="*",
        metavar="CHECKPOINT",
        help="a checkpoint file, or a detector's name for its shipped file",
    )
    parser.add_argument(
        "--all", action="store_true", help="every shipped detector (the committee's lineage holds them all)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder of the replay (stages/, checkpoints/, reports/)"
    )
    parser.add_argument("--data", type=Path, help="CIFAKE folder (default: as python -m train)")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="cpu",
        help="cpu: the recorded chains, stage by stage; gpu: the registry's single run per network (untested on a GPU)",
    )
    parser.add_argument("--smoke", action="store_true", help=f"the same chain on tiny sizes ({Smoke()})")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--threads", type=int, help=THREADS_HELP)
    parser.add_argument(
        "--precision",
        choices=[p for p in PRECISIONS if p != "auto"],
        help="every network stage in this arithmetic instead of the recorded one (e.g. fp32 on a CPU without "
        "bf16 instructions); each stage records it as an override",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        metavar="DIR",
        help="take a teacher, parent or member from DIR (e.g. assets/checkpoints) where its detector's checkpoint "
        "there is the very file its stage recorded (same SHA-256), instead of training it again; the named checkpoints "
        "are always trained",
    )
    parser.add_argument("--no-reports", action="store_true", help="stop after the checkpoints (no train.evaluate)")
    args = parser.parse_args(argv)
    if bool(args.all) == bool(args.checkpoints):
        parser.error("name the checkpoints to replay, or --all")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)
    targets = targets_of(args)
    try:
        if args.profile == "gpu":
            target, named = profile_lineage([get_spec(p.name.split(".")[0]).name for p in targets])
        else:
            target, named = recorded_lineage(targets)
        smoke = Smoke() if args.smoke else None
        data = args.data or default_data_dir()
        replay = Replay(args.out, data, smoke, args.device, args.profile, args.precision, args.reuse)
        started = time.perf_counter()
        names = replay.ship(target, named, replay.run(target, named))
        replay.scope(names)
    except (CheckpointError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"replay: {len(target.stages)} stages in {time.perf_counter() - started:.0f}s; "
        f"checkpoints in {args.out / 'checkpoints'}"
    )
    if args.no_reports:
        return 0
    sizes = ["--limit", str(smoke.limit), "--robustness-sample", str(smoke.robustness_sample)] if smoke else []
    sizes += ["--timing-repeats", str(smoke.timing_repeats)] if smoke else []
    return evaluate.main(
        [
            *names,
            "--data",
            str(replay.data_dir),
            "--checkpoints",
            str(args.out / "checkpoints"),
            "--reports",
            str(args.out / "reports"),
            *sizes,
        ]
    )
