"""Training loop of the neural detectors: seeded, resumable, on the GPU when there is one.

Each epoch draws from a generator seeded by (seed, epoch) and the state is saved atomically after
it, so a resumed run replays the remaining epochs exactly. Under torchrun (``train.distributed``)
every process trains on its slice of each batch; rank 0 alone validates and writes.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from cifake_models.checkpoint import CheckpointError, atomic_write, cpu_computes_bf16, file_sha256, read_safetensors
from cifake_models.data import Split
from cifake_models.detector import TorchDetector
from cifake_models.preprocessing import Preprocessing
from cifake_models.recipes import OPTIMIZERS, TorchRecipe
from cifake_models.registry import DetectorSpec, get_spec

from . import distributed, lineage
from .metadata import (
    DataInfo,
    already_trained,
    checkpoint_metadata,
    differences,
    require_held_out_split,
    with_new_fields,
)
from .validation import record_validation

log = logging.getLogger(__name__)


def resume_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}.resume.pt"


def training_device(device: str | None = None) -> torch.device:
    """``device``, or the GPU where there is one, else the CPU: where networks train (and are timed)."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def recorded_identity(metadata: dict) -> dict:
    """What :func:`fit_torch` identifies a run by (the ``identity`` a resume must share), as a
    finished checkpoint records it."""
    earlier = metadata.get("earlier_stages") or []
    return {
        "recipe": with_new_fields(metadata["recipe"], TorchRecipe),
        "preprocessing": with_new_fields(metadata["preprocessing"], Preprocessing),
        "weights": metadata["weights"],
        "data": metadata["data"]["train_fingerprint"],
        "init_from": earlier[-1]["sha256"] if earlier else None,
        "teacher": (metadata.get("teacher") or {}).get("sha256"),
        "processes": metadata["training"].get("processes", 1),  # checkpoints from before it was recorded: one process
    }


def make_scheduler(
    optimizer: torch.optim.Optimizer, recipe: TorchRecipe, steps_per_epoch: int
) -> tuple[object | None, bool]:
    """The recipe's learning-rate schedule, and whether it steps after every batch (else every epoch)."""
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch
        ), True
    if recipe.step_size:
        return torch.optim.lr_scheduler.StepLR(optimizer, recipe.step_size, recipe.gamma), False
    return None, False


def training_loss(
    logits: torch.Tensor, labels: torch.Tensor, recipe: TorchRecipe, teacher_logits: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy (label-smoothed as the recipe says), mixed with the distillation term where a
    teacher answers: ``(1 - w) CE + w T^2 KL(teacher_T || student_T)``, the softened
    distributions at temperature T; the T^2 keeps the term's gradients on the scale of the
    cross-entropy's (Hinton et al. 2015, sec. 2)."""
    loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
    if teacher_logits is None:
        return loss
    t = recipe.distill_temperature
    soft = F.kl_div(
        F.log_softmax(logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    return (1 - recipe.distill_weight) * loss + recipe.distill_weight * t * t * soft


def load_teacher(
    path: Path, student: DetectorSpec, device: torch.device, data_info: DataInfo
) -> tuple[TorchDetector, dict]:
    """The teacher network of a distillation stage, and what the student's metadata records of it.
    It sees the student's own training views through its own encoding (a grayscale student can
    learn from a colour teacher), so it must take their size, and must have held out the
    student's validation split."""
    _, metadata = read_safetensors(path)
    teacher = TorchDetector.load(path, metadata.get("detector"), get_spec(metadata.get("detector")).build_module)
    # A teacher that trained on the student's validation images would leak them into its soft targets.
    require_held_out_split(f"the teacher {path}", teacher.metadata, data_info)
    teacher.module.to(device).eval().requires_grad_(False)
    # Refused here rather than by a shape error at the first batch (the CNN's dense layer takes 32x32 only).
    crop = student.preprocessing.crop
    try:
        teacher_logits(teacher, torch.zeros(2, 3, crop, crop, device=device), use_amp=False)
    except RuntimeError as error:
        raise CheckpointError(
            f"the teacher {path} ({teacher.name}) cannot take {student.name}'s {crop}x{crop} training views: {error}"
        ) from error
    record = {
        "detector": teacher.name,
        "title": teacher.metadata.get("title"),
        "sha256": file_sha256(path),
        "validation_accuracy": teacher.metadata.get("validation", {}).get("accuracy"),
    }
    return teacher, record


def teacher_logits(teacher: TorchDetector, views: torch.Tensor, use_amp: bool) -> torch.Tensor:
    """The teacher's logits for the student's training views (float RGB, see
    ``Preprocessing.train_views``), encoded the teacher's way."""
    x = teacher.preprocessing.encode(views).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        return teacher.module(x).float()


def uses_bf16(recipe: TorchRecipe, device: torch.device) -> bool:
    """Whether the recipe trains under bf16 autocast on ``device`` (``auto``: on a GPU only)."""
    return recipe.precision == "bf16" or (recipe.precision == "auto" and device.type == "cuda")


def training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TorchRecipe,
    use_amp: bool,
    memory_format: torch.memory_format = torch.channels_last,
    teacher_logits: torch.Tensor | None = None,
    loss_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on the augmented batch ``x`` (in ``memory_format``, under bf16 autocast
    when ``use_amp``); the gradient is that of ``loss_scale`` x the recipe's loss. Returns the
    loss and the logits."""
    x = x.contiguous(memory_format=memory_format)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits = model(x)
        loss = training_loss(logits.float(), y, recipe, teacher_logits)
    optimizer.zero_grad(set_to_none=True)
    (loss * loss_scale).backward()
    optimizer.step()
    return loss, logits


def training_speed(
    spec: DetectorSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: TorchRecipe,
    channels_last: bool = True,
    steps: int = 6,
) -> float:
    """Training images per second of ``spec``'s network on this CPU or GPU: augmentation, forward,
    backward and optimiser step on batches of ``recipe.batch_size`` cut from uint8 ``images``, in
    the recipe's precision (the first step warms the kernels up and is not counted). For
    choosing a design or a memory format by measurement (``scripts/training_speed.py``)."""
    device = images.device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = spec.build_module().to(device).to(memory_format=memory_format).train()
    optimizer = OPTIMIZERS[recipe.optimizer](module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    generator = torch.Generator(device).manual_seed(0)
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        batch = torch.randint(len(images), (recipe.batch_size,), generator=generator, device=device)
        training_step(
            module,
            optimizer,
            spec.preprocessing.train_transform(images[batch], generator),
            labels[batch],
            recipe,
            uses_bf16(recipe, device),
            memory_format,
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * recipe.batch_size / (time.perf_counter() - started)


@dataclass
class EarlierStages:
    """The stages before this one (``--init-from``): what the new checkpoint keeps on record."""

    weights: str
    stages: list[dict] = field(default_factory=list)  # oldest first, each with its file's SHA-256
    history: list[dict] = field(default_factory=list)  # the earlier epochs' records
    wall_time: float = 0.0  # of every earlier stage together
    module: torch.nn.Module | None = None  # the parent's weights, to continue from
    metadata: dict | None = None  # the parent's, for the recorded lineage (train.lineage)


def parent_stage(spec: DetectorSpec, init_from: Path | None, data_info: DataInfo, weights: str) -> EarlierStages:
    """The lineage of a stage continuing ``init_from`` (none for a first stage), checked to fit this run."""
    if not init_from:
        return EarlierStages(weights)
    parent = TorchDetector.load(init_from, spec.name, spec.build_module)
    # The crop may change between stages (the networks pool globally); the pixel encoding may not.
    if parent.preprocessing.encoding() != spec.preprocessing.encoding():
        raise CheckpointError(
            f"{init_from} encodes its input differently ({parent.preprocessing}) from this run ({spec.preprocessing})"
        )
    # Nor may the split: on another one, this stage would validate on images the parent trained on.
    require_held_out_split(
        str(init_from), parent.metadata, data_info, advice=": pass its --val-fraction and --split-seed"
    )
    wall_time = parent.metadata["training"]["wall_time_s"]  # all of the parent's stages
    # Each stage on record keeps its own wall time: the parent's total less its own earlier stages'.
    parent_stages = parent.metadata.get("earlier_stages", [])
    own_time = wall_time - sum(stage["training"]["wall_time_s"] for stage in parent_stages)
    kept = ("recipe", "preprocessing", "data", "created", "teacher")
    stage = {
        "sha256": file_sha256(init_from),
        **{k: parent.metadata.get(k) for k in kept if k in parent.metadata},
        "training": {**parent.metadata["training"], "wall_time_s": round(own_time, 1)},
    }
    # A first stage's records carry no "stage".
    history = [{"stage": 1, **r} for r in parent.metadata.get("history", [])]
    return EarlierStages(
        parent.metadata["weights"], [*parent_stages, stage], history, wall_time, parent.module, parent.metadata
    )


def run_identity(
    spec: DetectorSpec,
    recipe: TorchRecipe,
    data_info: DataInfo,
    earlier: EarlierStages,
    teacher: Path | None,
    processes: int,
) -> dict:
    """What a resumed run must share with the saved one; through JSON, as it is stored."""
    return json.loads(
        json.dumps(
            {
                "recipe": recipe.to_dict(),
                "preprocessing": spec.preprocessing.to_dict(),
                "weights": earlier.weights,
                "data": data_info.train_fingerprint,
                "init_from": earlier.stages[-1]["sha256"] if earlier.stages else None,
                "teacher": file_sha256(teacher) if teacher else None,
                # Batch norm normalises each process's slice of a batch on its own statistics, so another
                # process count would continue another run.
                "processes": processes,
            }
        )
    )


@dataclass
class Run:
    """What one training run holds between epochs: saved after each, restored on resume."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    per_batch: bool  # the scheduler steps after every batch (else every epoch)
    identity: dict
    state_file: Path
    average: AveragedModel | None = None  # the weights' moving average (recipe.ema), where there is one
    history: list[dict] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def shipped(self) -> torch.nn.Module:
        """The network that is validated and written: the moving average, where there is one."""
        return self.average.module if self.average is not None else self.module

    def save(self) -> None:
        state = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else {},
            "average": self.average.state_dict() if self.average is not None else {},
            "history": json.dumps(self.history),
            "identity": json.dumps(self.identity),
            "elapsed": self.elapsed,
        }
        atomic_write(self.state_file, lambda tmp: torch.save(state, tmp))

    def restore(self, device: torch.device, processes: int) -> None:
        """Continue from the state saved after the last finished epoch, refusing another run's."""
        state = torch.load(self.state_file, map_location=device, weights_only=True)
        saved = json.loads(state["identity"])
        # A state saved before a field was recorded: its recipe and preprocessing had the
        # defaults of the fields added since, and it ran as one process.
        saved = {
            **saved,
            "recipe": with_new_fields(saved["recipe"], TorchRecipe),
            "preprocessing": with_new_fields(saved["preprocessing"], Preprocessing),
            "processes": saved.get("processes", 1),
        }
        if saved["processes"] != processes:
            raise CheckpointError(
                f"{self.state_file} was saved by a run of {saved['processes']} processes, and this "
                f"one has {processes}: resume it with as many (torchrun --nproc_per_node "
                f"{saved['processes']} ...; 1: plain python -m train)"
            )
        if saved != self.identity:
            raise CheckpointError(
                f"{self.state_file} was made with another recipe or data ({differences(saved, self.identity)})"
            )
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        self.history, self.elapsed = json.loads(state["history"]), float(state["elapsed"])


def start_run(
    spec: DetectorSpec,
    recipe: TorchRecipe,
    earlier: EarlierStages,
    identity: dict,
    state_file: Path,
    per_epoch: int,
    device: torch.device,
) -> Run:
    """The network (the parent's, or new), its optimiser and schedule, in channels-last."""
    module = earlier.module if earlier.module is not None else spec.build_module(weights=earlier.weights)
    # Channels-last in every precision: measured no slower for any network, faster for some
    # (scripts/training_speed.py; docs/layout.md, design notes).
    module = module.to(device).to(memory_format=torch.channels_last)
    optimizer = OPTIMIZERS[recipe.optimizer](module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = len(range(0, per_epoch, recipe.batch_size))
    scheduler, per_batch = make_scheduler(optimizer, recipe, steps_per_epoch=steps)
    average = (
        AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=True) if recipe.ema else None
    )
    return Run(module, optimizer, scheduler, per_batch, identity, state_file, average)


def warn_if_bf16_is_emulated(use_amp: bool, device: torch.device) -> None:
    if use_amp and device.type == "cpu" and not cpu_computes_bf16():
        warnings.warn(
            f"--precision bf16 on a CPU without bf16 arithmetic ({torch.backends.cpu.get_cpu_capability()}, "
            "no AVX-512 BF16 or AMX): bf16 is emulated there and trains slower than --precision fp32",
            stacklevel=3,
        )


@dataclass
class Epoch:
    """One epoch's training totals over every process."""

    seen: int
    loss_sum: float
    correct: int
    lr: float  # the rate of its last step (under one-cycle, where the curve stands at the epoch's end)


def train_epoch(
    spec: DetectorSpec,
    recipe: TorchRecipe,
    run: Run,
    trained: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epoch: int,
    per_epoch: int,
    use_amp: bool,
    teacher: TorchDetector | None,
) -> Epoch:
    """One epoch, its shuffling and augmentation drawn from a generator seeded by (seed, epoch)."""
    device, ranks = images.device, distributed.current()
    generator = torch.Generator(device).manual_seed(recipe.seed * 100_003 + epoch)
    torch.manual_seed(recipe.seed * 100_003 + epoch)
    order = torch.randperm(len(images), generator=generator, device=device)[:per_epoch]
    trained.train()
    seen = correct = 0
    loss_sum = 0.0
    lr = run.optimizer.param_groups[0]["lr"]
    bar = tqdm(
        range(0, per_epoch, recipe.batch_size),
        desc=f"{spec.name} {epoch + 1}/{recipe.epochs}",
        leave=False,
        disable=not ranks.main,
    )
    for start in bar:
        batch = order[start : start + recipe.batch_size]
        if len(batch) < 2 * ranks.world:  # batch norm cannot train on a single image
            continue
        # Every process augments the whole batch, so the generator's draws are one process's,
        # then trains on its own slice.
        views = ranks.shard(spec.preprocessing.train_views(images[batch], generator))
        x, y = spec.preprocessing.encode(views), ranks.shard(labels[batch])
        lr = run.optimizer.param_groups[0]["lr"]
        # DDP averages the processes' gradients; weighting each slice's mean loss by its share
        # of the batch makes that the gradient of the whole batch's mean loss (x 1 in one process).
        loss, logits = training_step(
            trained,
            run.optimizer,
            x,
            y,
            recipe,
            use_amp,
            teacher_logits=teacher_logits(teacher, views, use_amp) if teacher else None,
            loss_scale=len(y) * ranks.world / len(batch),
        )
        if run.scheduler and run.per_batch:
            run.scheduler.step()
        if run.average is not None:
            run.average.update_parameters(run.module)
        seen += len(y)
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
    if run.scheduler and not run.per_batch:
        run.scheduler.step()
    seen, loss_sum, correct = ranks.sum([seen, loss_sum, correct], device)
    return Epoch(seen, loss_sum, correct, lr)


def epoch_record(detector: TorchDetector, val: Split, epoch: int, totals: Epoch, seconds: float) -> dict:
    """The history's line for an epoch: its training totals, and the network's validation loss and accuracy."""
    proba = detector.probabilities(val.images)
    return {
        "epoch": epoch + 1,
        "train_loss": totals.loss_sum / max(totals.seen, 1),
        "train_accuracy": totals.correct / max(totals.seen, 1),
        "val_loss": float(-np.mean(np.log(np.clip(proba[np.arange(len(val)), val.labels], 1e-12, None)))),
        "val_accuracy": float(np.mean(proba.argmax(1) == val.labels)),
        "lr": totals.lr,
        "seconds": seconds,
    }


def final_checkpoint(
    spec: DetectorSpec, detector: TorchDetector, val: Split, out_dir: Path, device: torch.device
) -> TorchDetector:
    """Validate the network as stored and write it, whole, with its validation choices."""
    detector.module = detector.module.cpu().to(memory_format=torch.contiguous_format)
    # Threshold and validation figures come from the weights as stored (half precision), so they
    # go through a file first; out_dir gets the checkpoint once, whole, with its validation
    # choices (a checkpoint without them is refused at load).
    with tempfile.TemporaryDirectory() as scratch:
        detector.save(Path(scratch) / spec.checkpoint_file)
        stored = spec.load(scratch, validated=False)
    stored.module.to(device)
    record_validation(stored, val)
    stored.module.cpu()
    stored.save(out_dir / spec.checkpoint_file)
    return stored


def stage_metadata(
    spec: DetectorSpec,
    recipe: TorchRecipe,
    data_info: DataInfo,
    earlier: EarlierStages,
    run: Run,
    device: torch.device,
    processes: int,
    teacher_net: TorchDetector | None,
    teacher_record: dict | None,
) -> dict:
    """What the finished stage's checkpoint records: recipe, data, the whole history, teacher and lineage."""
    # One history across stages, numbered on, so the training curves show the whole path.
    stage = len(earlier.stages) + 1
    history = earlier.history + [{**r, "epoch": r["epoch"] + len(earlier.history), "stage": stage} for r in run.history]
    metadata = checkpoint_metadata(
        spec,
        recipe.to_dict(),
        data_info,
        earlier.weights,
        history=history,
        wall_time_s=earlier.wall_time + run.elapsed,
        device=str(device),
        earlier_stages=earlier.stages,
        processes=processes,
    )
    if teacher_record:
        metadata["teacher"] = teacher_record
    sources = {
        **({earlier.stages[-1]["sha256"]: earlier.metadata} if earlier.metadata else {}),
        **({teacher_record["sha256"]: teacher_net.metadata} if teacher_record else {}),
    }
    # (the preprocessing enters the metadata when the file is written)
    written = {**metadata, "preprocessing": spec.preprocessing.to_dict()}
    metadata["lineage"] = lineage.record(written, sources)
    return metadata


def fit_torch(
    spec: DetectorSpec,
    train: Split,
    val: Split,
    recipe: TorchRecipe,
    out_dir: Path,
    data_info: DataInfo,
    weights: str = "none",
    device: str | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    init_from: Path | None = None,
    teacher: Path | None = None,
) -> TorchDetector | None:
    """Train ``spec``'s network and write ``out_dir/<name>.safetensors``; returns the detector
    (``None`` on the ranks other than 0 of a distributed run, which write nothing).

    ``init_from`` continues training from an earlier checkpoint of the same detector (a new stage
    with a fresh optimiser and schedule, the earlier stages kept on record); ``teacher`` is the
    checkpoint a distillation stage learns from; ``resume`` continues from the state saved after
    the last finished epoch, and keeps a checkpoint a run like this one finished (``already_trained``).
    """
    if (teacher is None) != (recipe.distill_weight == 0):
        raise ValueError("distillation needs both a teacher checkpoint and a distill weight above 0")
    device, ranks = training_device(device), distributed.current()
    torch.manual_seed(recipe.seed)
    earlier = parent_stage(spec, init_from, data_info, weights)
    identity = run_identity(spec, recipe, data_info, earlier, teacher, ranks.world)
    state_file = resume_path(out_dir, spec.name)
    if not resume and state_file.is_file():
        # Started afresh, this run would replace the saved state after its first epoch.
        raise CheckpointError(
            f"{state_file} holds the state of an interrupted run: continue it with --resume, "
            "or start a new run with another --out"
        )
    if resume and not state_file.is_file() and already_trained(spec, out_dir, identity, recorded_identity):
        return spec.load(out_dir) if ranks.main else None
    per_epoch = min(recipe.images_per_epoch or len(train), len(train))
    # Built before the teacher is loaded, so that the seeded initial weights are the same with or without one.
    run = start_run(spec, recipe, earlier, identity, state_file, per_epoch, device)
    teacher_net, teacher_record = load_teacher(teacher, spec, device, data_info) if teacher else (None, None)
    use_amp = uses_bf16(recipe, device)
    warn_if_bf16_is_emulated(use_amp, device)
    if resume and state_file.is_file():
        run.restore(device, ranks.world)
        if ranks.main:
            log.info(f"{spec.name}: resuming after epoch {len(run.history)} of {recipe.epochs}")
    detector = TorchDetector(spec.name, run.shipped, spec.preprocessing)
    # The whole train split as uint8 is 300 MB: it lives on the device and batches are cut there.
    images, labels = torch.as_tensor(train.images).to(device), torch.as_tensor(train.labels).to(device)
    # Gradients are averaged over the processes (DDP); each starts from rank 0's weights.
    devices = [device.index] if device.type == "cuda" else None
    trained = DistributedDataParallel(run.module, device_ids=devices) if ranks.world > 1 else run.module
    for epoch in range(len(run.history), recipe.epochs):
        started = time.perf_counter()
        totals = train_epoch(spec, recipe, run, trained, images, labels, epoch, per_epoch, use_amp, teacher_net)
        if not ranks.main:
            continue  # rank 0 validates, reports and saves; the others go on to the next epoch
        record = epoch_record(detector, val, epoch, totals, time.perf_counter() - started)
        run.history.append(record)
        run.elapsed += record["seconds"]
        log.info(
            f"{spec.name} epoch {epoch + 1}/{recipe.epochs}: loss {record['train_loss']:.4f} "
            f"acc {record['train_accuracy']:.4f} | val loss {record['val_loss']:.4f} "
            f"acc {record['val_accuracy']:.4f} | {record['seconds']:.0f}s"
        )
        run.save()
        if on_epoch_end:
            on_epoch_end(epoch + 1, record)
    if not ranks.main:
        return None
    detector.metadata = stage_metadata(
        spec, recipe, data_info, earlier, run, device, ranks.world, teacher_net, teacher_record
    )
    stored = final_checkpoint(spec, detector, val, out_dir, device)
    state_file.unlink(missing_ok=True)
    return stored
