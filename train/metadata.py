"""What a checkpoint records of its run (data, recipe, lineage, hardware), and the checks that
read it back: resuming, continuing a stage, the held-out split."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from cifake_models.checkpoint import FORMAT_VERSION, CheckpointError, hardware, library_versions
from cifake_models.data import SPLIT_SEED, VAL_FRACTION, Split
from cifake_models.labels import CLASSES
from cifake_models.registry import DetectorSpec

from . import distributed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataInfo:
    """What a checkpoint records of the data it was trained on (its ``data`` entry)."""

    source: str
    train_fingerprint: str
    val_fingerprint: str
    n_train: int
    n_val: int
    val_fraction: float  # the validation split held out of train (train_val_indices), before any --limit
    split_seed: int

    @classmethod
    def of(cls, source: str | Path, train: Split, val: Split, val_fraction: float, split_seed: int) -> DataInfo:
        return cls(str(source), train.fingerprint(), val.fingerprint(), len(train), len(val), val_fraction, split_seed)


def checkpoint_metadata(
    spec: DetectorSpec,
    recipe: dict,
    data_info: DataInfo,
    weights: str,
    history: list,
    wall_time_s: float,
    device: str,
    earlier_stages: list[dict] = (),
    processes: int = 1,
) -> dict:
    """``wall_time_s`` and ``history`` cover every stage; ``earlier_stages`` describe the stages
    before this one (oldest first), each with its checkpoint's SHA-256, recipe, and training
    record (hardware and that stage's own wall time). ``device``: where this stage ran (rank 0's
    under torchrun), ``processes`` of them."""
    initialisation = (
        "ImageNet (torchvision IMAGENET1K_V1), new 2-class head"
        if weights == "imagenet"
        else "random (from scratch): ImageNet weights were not used"
    )
    if earlier_stages:
        initialisation += (
            f"; trained in {len(earlier_stages) + 1} stages, each continuing the last (see earlier_stages)"
        )
    return {
        "format_version": FORMAT_VERSION,
        "detector": spec.name,
        "title": spec.title,
        # a network's builder, or how a detector that is no torch module is built, in words
        "architecture": spec.architecture.__name__ if spec.is_torch else spec.recipe.architecture,
        "classes": list(CLASSES),
        "recipe": recipe,
        "weights": weights,
        "initialisation": initialisation,
        "data": asdict(data_info),
        "history": history,
        "earlier_stages": list(earlier_stages),
        "training": {
            "hardware": hardware(device),
            "device": device,
            "processes": processes,
            "wall_time_s": round(wall_time_s, 1),
        },
        "versions": library_versions(),
        "notes": spec.notes,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def held_out_split(metadata: dict) -> tuple[float, int]:
    """The validation split a checkpoint held out, as ``train_val_indices``'s fraction and seed
    (the defaults for checkpoints from before they were recorded)."""
    data = metadata.get("data") or {}
    return data.get("val_fraction", VAL_FRACTION), data.get("split_seed", SPLIT_SEED)


def require_held_out_split(checkpoint: str, metadata: dict, data_info: DataInfo, advice: str = "") -> None:
    """Refuse a checkpoint that held out another validation split than this run: this run's
    validation images would include ones it trained on."""
    fraction, seed = held_out_split(metadata)
    if (fraction, seed) != (data_info.val_fraction, data_info.split_seed):
        raise CheckpointError(
            f"{checkpoint} held out another validation split (fraction {fraction}, seed {seed}) than this run "
            f"(fraction {data_info.val_fraction}, seed {data_info.split_seed}){advice}"
        )


def with_new_fields(record: dict, kind: type) -> dict:
    """A recipe or preprocessing as a checkpoint recorded it (JSON), each field added to ``kind``
    since then filled with its default: what the code that wrote it did without the field. So
    that a checkpoint is not called another run's for a field it could not record; a field no
    longer known stays, and shows as a difference."""
    return {**json.loads(json.dumps(asdict(kind()))), **record}


def differences(saved: dict, wanted: dict, prefix: str = "") -> str:
    """Where two records (JSON-like dicts) differ, as ``key: saved -> wanted``, nested keys dotted."""
    parts = []
    for key in sorted(saved.keys() | wanted.keys()):
        old, new = saved.get(key, "(none)"), wanted.get(key, "(none)")
        if isinstance(old, dict) and isinstance(new, dict):
            parts.append(differences(old, new, f"{prefix}{key}."))
        elif old != new:
            parts.append(f"{prefix}{key}: {old} -> {new}")
    return "; ".join(p for p in parts if p)


def already_trained(spec: DetectorSpec, out_dir: Path, run: dict, recorded: Callable[[dict], dict]) -> bool:
    """Under ``--resume``: whether ``spec``'s checkpoint in ``out_dir`` is finished, by a run like
    this one, so that it is kept rather than trained again. ``run`` is what identifies this run
    (recipe, data...), ``recorded`` reads the same from a checkpoint's metadata. A finished
    checkpoint of another run is neither overwritten nor silently kept: CheckpointError."""
    path = out_dir / spec.checkpoint_file
    if not path.is_file():
        return False
    metadata = spec.stored_metadata(out_dir)
    if "threshold" not in metadata:  # cut short in its validation (before the final file was written once): redo
        return False
    # Through JSON, as the metadata is stored (tuples become lists).
    saved, wanted = json.loads(json.dumps(recorded(metadata))), json.loads(json.dumps(run))
    if saved != wanted:
        raise CheckpointError(
            f"{path} is finished, but by another recipe or data than this run's ({differences(saved, wanted)}): "
            "delete it to train it again this way, or write this run elsewhere (--out)"
        )
    if distributed.current().main:
        log.info(f"{spec.name}: already trained: {path}; delete it to train again")
    return True
