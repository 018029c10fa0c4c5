"""Training loop of the neural detectors: seeded, resumable, on the GPU when there is one.

Every epoch draws its shuffling and augmentation from a generator seeded by (seed, epoch), so
a run resumed from the state saved after epoch k replays epochs k+1.. exactly as an
uninterrupted run would. That state is written atomically after each epoch, so Ctrl-C or a
kill loses at most the epoch in progress. Under torchrun the same loop runs in every process
(``train.distributed``): each trains on its slice of every batch, and rank 0 alone validates and
writes.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from cifake_models.checkpoint import CheckpointError, atomic_write, cpu_computes_bf16, file_sha256, read_safetensors
from cifake_models.data import Split
from cifake_models.detector import TorchDetector
from cifake_models.preprocessing import Preprocessing
from cifake_models.recipes import OPTIMIZERS, TorchRecipe
from cifake_models.registry import DetectorSpec, get_spec

from . import distributed, lineage
from .metadata import DataInfo, already_trained, checkpoint_metadata, differences, require_held_out_split, with_new_fields
from .validation import record_validation


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


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: TorchRecipe, steps_per_epoch: int) -> tuple[object | None, bool]:
    """The recipe's learning-rate schedule, and whether it steps after every batch (else every epoch)."""
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch), True
    if recipe.step_size:
        return torch.optim.lr_scheduler.StepLR(optimizer, recipe.step_size, recipe.gamma), False
    return None, False


def training_loss(logits: torch.Tensor, labels: torch.Tensor, recipe: TorchRecipe, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (label-smoothed as the recipe says), mixed with the distillation term where a
    teacher answers: ``(1 - w) CE + w T^2 KL(teacher_T || student_T)``, the softened
    distributions at temperature T; the T^2 keeps the term's gradients on the scale of the
    cross-entropy's (Hinton et al. 2015, sec. 2)."""
    loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
    if teacher_logits is None:
        return loss
    t = recipe.distill_temperature
    soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1), log_target=True, reduction="batchmean")
    return (1 - recipe.distill_weight) * loss + recipe.distill_weight * t * t * soft


def load_teacher(path: Path, student: DetectorSpec, device: torch.device, data_info: DataInfo) -> tuple[TorchDetector, dict]:
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
        raise CheckpointError(f"the teacher {path} ({teacher.name}) cannot take {student.name}'s {crop}x{crop} training views: {error}") from error
    record = {"detector": teacher.name, "title": teacher.metadata.get("title"), "sha256": file_sha256(path),
              "validation_accuracy": teacher.metadata.get("validation", {}).get("accuracy")}
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


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, recipe: TorchRecipe,
                  use_amp: bool, memory_format: torch.memory_format = torch.channels_last, teacher_logits: torch.Tensor | None = None,
                  loss_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
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


def training_speed(spec: DetectorSpec, images: torch.Tensor, labels: torch.Tensor, recipe: TorchRecipe,
                   channels_last: bool = True, steps: int = 6) -> float:
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
        training_step(module, optimizer, spec.preprocessing.train_transform(images[batch], generator), labels[batch], recipe,
                      uses_bf16(recipe, device), memory_format)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * recipe.batch_size / (time.perf_counter() - started)


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

    ``init_from`` continues training from an earlier checkpoint of the same detector (a second
    stage with a fresh optimiser and schedule); the earlier stage's recipe, history and wall
    time are kept in the new checkpoint, so the whole path from initialisation stays on record.
    ``teacher`` is the checkpoint a distillation stage learns from (``recipe.distill_weight``).
    ``resume`` continues from the state saved after the last finished epoch, and keeps a
    checkpoint that a run like this one has already finished (see ``common.already_trained``).
    """
    if (teacher is None) != (recipe.distill_weight == 0):
        raise ValueError("distillation needs both a teacher checkpoint and a distill weight above 0")
    device = training_device(device)
    ranks = distributed.current()
    torch.manual_seed(recipe.seed)
    earlier_stages: list[dict] = []
    earlier_history: list[dict] = []
    earlier_wall_time = 0.0
    if init_from:
        parent = TorchDetector.load(init_from, spec.name, spec.build_module)
        # The crop may change between stages (the networks pool globally); the pixel encoding may not.
        if parent.preprocessing.encoding() != spec.preprocessing.encoding():
            raise CheckpointError(f"{init_from} encodes its input differently ({parent.preprocessing}) from this run ({spec.preprocessing})")
        # Nor may the split: on another one, this stage would validate on images the parent trained on.
        require_held_out_split(str(init_from), parent.metadata, data_info, advice=": pass its --val-fraction and --split-seed")
        weights = parent.metadata["weights"]
        earlier_wall_time = parent.metadata["training"]["wall_time_s"]  # all of the parent's stages
        # Each stage on record keeps its own wall time: the parent's total less its own earlier stages'.
        parent_stages = parent.metadata.get("earlier_stages", [])
        parent_own_time = earlier_wall_time - sum(stage["training"]["wall_time_s"] for stage in parent_stages)
        earlier_stages = [
            *parent_stages,
            {
                "sha256": file_sha256(init_from),
                **{k: parent.metadata.get(k) for k in ("recipe", "preprocessing", "data", "created", "teacher") if k in parent.metadata},
                "training": {**parent.metadata["training"], "wall_time_s": round(parent_own_time, 1)},
            },
        ]
        earlier_history = [{"stage": 1, **r} for r in parent.metadata.get("history", [])]  # a first stage's records carry no "stage"
    # What a resumed run must share with the saved one; through JSON, as it is stored.
    identity = json.loads(json.dumps({
        "recipe": recipe.to_dict(),
        "preprocessing": spec.preprocessing.to_dict(),
        "weights": weights,
        "data": data_info.train_fingerprint,
        "init_from": earlier_stages[-1]["sha256"] if earlier_stages else None,
        "teacher": file_sha256(teacher) if teacher else None,
        # Batch norm normalises each process's slice of a batch on its own statistics, so another
        # process count would continue another run.
        "processes": ranks.world,
    }))
    state_file = resume_path(out_dir, spec.name)
    if resume and not state_file.is_file() and already_trained(spec, out_dir, identity, recorded_identity):
        return spec.load(out_dir) if ranks.main else None
    module = parent.module.to(device) if init_from else spec.build_module(weights=weights).to(device)
    teacher_net, teacher_record = load_teacher(teacher, spec, device, data_info) if teacher else (None, None)
    use_amp = uses_bf16(recipe, device)
    if use_amp and device.type == "cpu" and not cpu_computes_bf16():
        # Measured on a 2-core AVX2 EPYC: VGG-16 took 44 s per batch of 128 in bf16, 3.5 s in float32.
        warnings.warn(f"--precision bf16 on a CPU without bf16 arithmetic ({torch.backends.cpu.get_cpu_capability()}, no AVX-512 BF16 or AMX): "
                      "bf16 is emulated there and trains slower than --precision fp32", stacklevel=2)
    # Channels-last in every precision: in float32 on the 2-core Intel Xeon (AVX-512 without BF16)
    # it trains DenseNet-121 1.19x faster and the other networks at the same speed (0.99x to 1.05x;
    # scripts/training_speed.py), and bf16 autocast was measured faster with it.
    module = module.to(memory_format=torch.channels_last)
    per_epoch = min(recipe.images_per_epoch or len(train), len(train))
    optimizer = OPTIMIZERS[recipe.optimizer](module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler, per_batch = make_scheduler(optimizer, recipe, steps_per_epoch=len(range(0, per_epoch, recipe.batch_size)))

    history: list[dict] = []
    elapsed = 0.0
    if resume and state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=True)
        saved = json.loads(state["identity"])
        # A state saved before a field was recorded: its recipe and preprocessing had the
        # defaults of the fields added since, and it ran as one process.
        saved = {**saved, "recipe": with_new_fields(saved["recipe"], TorchRecipe),
                 "preprocessing": with_new_fields(saved["preprocessing"], Preprocessing), "processes": saved.get("processes", 1)}
        if saved["processes"] != ranks.world:
            raise CheckpointError(f"{state_file} was saved by a run of {saved['processes']} processes, and this one has {ranks.world}: "
                                  f"resume it with as many (torchrun --nproc_per_node {saved['processes']} ...; 1: plain python -m train)")
        if saved != identity:
            raise CheckpointError(f"{state_file} was made with another recipe or data ({differences(saved, identity)})")
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler:
            scheduler.load_state_dict(state["scheduler"])
        history, elapsed = json.loads(state["history"]), float(state["elapsed"])
        if ranks.main:
            print(f"{spec.name}: resuming after epoch {len(history)} of {recipe.epochs}")

    detector = TorchDetector(spec.name, module, spec.preprocessing)
    # The whole train split as uint8 is 300 MB: it lives on the device and batches are cut there.
    images = torch.as_tensor(train.images).to(device)
    labels = torch.as_tensor(train.labels).to(device)
    # Gradients are averaged over the processes (DDP); each starts from rank 0's weights.
    trained = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None) if ranks.world > 1 else module

    for epoch in range(len(history), recipe.epochs):
        started = time.perf_counter()
        generator = torch.Generator(device).manual_seed(recipe.seed * 100_003 + epoch)
        torch.manual_seed(recipe.seed * 100_003 + epoch)
        order = torch.randperm(len(images), generator=generator, device=device)[:per_epoch]
        trained.train()
        seen = correct = 0
        loss_sum = 0.0
        # The history records the rate of the epoch's last step: under a per-epoch schedule the
        # rate the whole epoch trained at, under one-cycle (stepped per batch) where the curve
        # stands at the epoch's end.
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(range(0, per_epoch, recipe.batch_size), desc=f"{spec.name} {epoch + 1}/{recipe.epochs}", leave=False, disable=not ranks.main)
        for start in bar:
            batch = order[start : start + recipe.batch_size]
            if len(batch) < 2 * ranks.world:  # batch norm cannot train on a single image
                continue
            # Every process augments the whole batch, so the generator's draws are one process's,
            # then trains on its own slice.
            views = ranks.shard(spec.preprocessing.train_views(images[batch], generator))
            x, y = spec.preprocessing.encode(views), ranks.shard(labels[batch])
            lr = optimizer.param_groups[0]["lr"]
            # DDP averages the processes' gradients; weighting each slice's mean loss by its share
            # of the batch makes that the gradient of the whole batch's mean loss (x 1 in one process).
            loss, logits = training_step(trained, optimizer, x, y, recipe, use_amp,
                                         teacher_logits=teacher_logits(teacher_net, views, use_amp) if teacher_net else None,
                                         loss_scale=len(y) * ranks.world / len(batch))
            if scheduler and per_batch:
                scheduler.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
        if scheduler and not per_batch:
            scheduler.step()
        seen, loss_sum, correct = ranks.sum([seen, loss_sum, correct], device)
        if not ranks.main:
            continue  # rank 0 validates, reports and saves; the others go on to the next epoch
        proba = detector.predict_proba_arrays(val.images)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "val_loss": float(-np.mean(np.log(np.clip(proba[np.arange(len(val)), val.labels], 1e-12, None)))),
            "val_accuracy": float(np.mean(proba.argmax(1) == val.labels)),
            "lr": lr,
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        elapsed += record["seconds"]
        print(
            f"{spec.name} epoch {epoch + 1}/{recipe.epochs}: loss {record['train_loss']:.4f} "
            f"acc {record['train_accuracy']:.4f} | val loss {record['val_loss']:.4f} "
            f"acc {record['val_accuracy']:.4f} | {record['seconds']:.0f}s",
            flush=True,
        )
        state = {
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler else {},
            "history": json.dumps(history),
            "identity": json.dumps(identity),
            "elapsed": elapsed,
        }
        atomic_write(state_file, lambda tmp: torch.save(state, tmp))
        if on_epoch_end:
            on_epoch_end(epoch + 1, record)

    if not ranks.main:
        return None
    detector.metadata = checkpoint_metadata(
        spec,
        recipe.to_dict(),
        data_info,
        weights,
        # One history across stages, numbered on, so the training curves show the whole path.
        history=earlier_history + [{**r, "epoch": r["epoch"] + len(earlier_history), "stage": len(earlier_stages) + 1} for r in history],
        wall_time_s=earlier_wall_time + elapsed,
        device=str(device),
        earlier_stages=earlier_stages,
        processes=ranks.world,
    )
    if teacher_record:
        detector.metadata["teacher"] = teacher_record
    sources = {**({earlier_stages[-1]["sha256"]: parent.metadata} if init_from else {}),
               **({teacher_record["sha256"]: teacher_net.metadata} if teacher_record else {})}
    # (the preprocessing enters the metadata when the file is written)
    written = {**detector.metadata, "preprocessing": spec.preprocessing.to_dict()}
    detector.metadata["lineage"] = lineage.record(written, sources)
    detector.module = detector.module.cpu().to(memory_format=torch.contiguous_format)
    # Threshold and validation figures come from the weights as stored (half precision), so they
    # go through a file first; out_dir gets the checkpoint once, whole, with its validation
    # choices (a checkpoint without them would serve at threshold 0.5).
    with tempfile.TemporaryDirectory() as scratch:
        detector.save(Path(scratch) / spec.checkpoint_file)
        stored = spec.load(scratch)
    stored.module.to(device)
    record_validation(stored, val)
    stored.module.cpu()
    stored.save(out_dir / spec.checkpoint_file)
    state_file.unlink(missing_ok=True)
    return stored

