"""``python -m train``: train CIFAKE detectors and write their checkpoints (``--help``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

from cifake_models import CHECKPOINT_DIR, get_spec, list_detectors
from cifake_models.data import (
    SPLIT_SEED,
    VAL_FRACTION,
    Split,
    data_search_order,
    default_data_dir,
    load_split,
    train_val_indices,
)
from cifake_models.detector import TorchDetector
from cifake_models.nets import WEIGHT_CHOICES, ImageNetWeightsUnavailable
from cifake_models.perturbations import TRAINING_RANGES, ranges_of, weights_of
from cifake_models.preprocessing import Preprocessing
from cifake_models.recipes import OPTIMIZERS, PRECISIONS, SCHEDULES
from cifake_models.registry import REGISTRY, DetectorSpec

from . import distributed
from .commands import THREADS_HELP, limit_threads
from .committee_fit import fit_committee
from .metadata import DataInfo
from .svm_fit import fit_svm
from .torch_fit import fit_torch

HELP = """Train CIFAKE detectors and write their checkpoints.

Each detector's default recipe is the paper's (see cifake_models/registry.py); the options
below override it, and the recipe actually used is recorded in the checkpoint. After every
epoch the training state is saved, so an interrupted run continues with --resume.

examples:
  python -m train                              every detector, the paper's recipes
  python -m train cnn --limit 300 --epochs 1   a smoke run
  python -m train resnet50 --weights imagenet  the paper's transfer learning
  python -m train resnet50 --resume            continue after Ctrl-C or a kill (a finished
                                               checkpoint is kept, not trained again)
  python -m train vgg16_bn --init-from assets/checkpoints/vgg16_bn.safetensors --lr 1e-4 --out runs/vgg_stage
                                               a second training stage (from the first's preprocessing),
                                               then: python -m train.choose vgg16_bn runs/vgg_stage --ship
  python -m train committee                    fit the committee on validation, from the
                                               members' checkpoints in --out, and write it there
  python -m train --list                       the detectors: name, kind, --weights choices, title
  torchrun --nproc_per_node 4 -m train resnet50
                                               4 GPUs (or CPU processes): DistributedDataParallel
"""  # the command's --help

TORCH_OPTIONS = {  # command-line option -> TorchRecipe field
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "optimizer": "optimizer",
    "weight_decay": "weight_decay",
    "schedule": "schedule",
    "step_size": "step_size",
    "label_smoothing": "label_smoothing",
    "precision": "precision",
    "images_per_epoch": "images_per_epoch",
    "seed": "seed",
    "distill_weight": "distill_weight",
    "distill_temperature": "distill_temperature",
    "ema": "ema",
}
PREPROCESSING_OPTIONS = {
    "crop": "crop",
    "crop_scale": "crop_scale",
    "translate": "translate",
    "upload_augment": "upload_augment",
}  # option -> Preprocessing field
SVM_OPTIONS = {
    "svm_components": "n_components",
    "svm_cells": "pixels_per_cell",
    "svm_colour": "colour",
    "svm_smoothing": "smoothing",
    "svm_c": "C",
    "svm_gamma_scale": "gamma_scale",
    "upload_augment": "upload_augment",
    "seed": "seed",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Detectors: " + ", ".join(list_detectors()),
    )
    add_run_options(parser)
    add_network_options(parser.add_argument_group("recipe overrides (networks)"))
    add_svm_options(parser.add_argument_group("recipe overrides (HOG + SVM)"))
    args = parser.parse_args(argv)
    check_detectors(parser, args)
    check_upload_changes(parser, args)
    check_stages(parser, args)
    return args


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """What to train, on which data, where to, from what."""
    parser.add_argument("detectors", nargs="*", metavar="DETECTOR", help="which to train (default: all)")
    parser.add_argument(
        "--data",
        type=Path,
        help=f"CIFAKE: Kaggle folder (train/REAL ...) or folder of cifake-*.npz (default: {data_search_order()})",
    )
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR, help="checkpoint folder (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="use only this many training images, drawn at random (smoke runs)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=VAL_FRACTION,
        help="share of train held out for validation (default: %(default)s)",
    )
    parser.add_argument(
        "--split-seed", type=int, default=SPLIT_SEED, help="seed of the train/validation split (default: %(default)s)"
    )
    parser.add_argument(
        "--weights",
        choices=WEIGHT_CHOICES,
        default="none",
        help=f"initialisation of {', '.join(imagenet_networks())}: none (from scratch) or imagenet "
        "(torchvision's, downloaded or from $TORCH_HOME; the others have none)",
    )
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last finished epoch; keep a checkpoint in --out that a run "
        "like this one finished",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="CHECKPOINT",
        help="continue training from this checkpoint of the same network, with its preprocessing unless "
        "overridden (a new stage with a fresh optimiser and schedule; the earlier stages stay on record)",
    )
    parser.add_argument("--threads", type=int, help=f"{THREADS_HELP} (default: their own choice)")
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the detectors, one a line, tab-separated: name, kind (svm, network, committee), "
        "--weights choices, title; then exit",
    )


def add_network_options(recipe: argparse._ArgumentGroup) -> None:
    """The networks' recipe and preprocessing overrides."""
    recipe.add_argument("--epochs", type=int)
    recipe.add_argument("--batch-size", type=int)
    recipe.add_argument("--lr", type=float)
    recipe.add_argument("--optimizer", choices=tuple(OPTIMIZERS))
    recipe.add_argument("--weight-decay", type=float)
    recipe.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="learning-rate schedule: StepLR per epoch, or one-cycle per batch (peak --lr)",
    )
    recipe.add_argument("--step-size", type=int, help="StepLR period in epochs (0: constant rate)")
    recipe.add_argument(
        "--label-smoothing", type=float, help="cross-entropy label smoothing, 0: off (default: the detector's recipe)"
    )
    recipe.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto: bf16 autocast on a GPU, float32 on a CPU; bf16 on a CPU too (channels-last in every precision)",
    )
    recipe.add_argument("--images-per-epoch", type=int, help="train each epoch on a fresh random subset of this size")
    add_augmentation_options(recipe)
    recipe.add_argument("--seed", type=int, help="training seed")
    recipe.add_argument(
        "--distill-from",
        type=Path,
        metavar="CHECKPOINT",
        help="a distillation stage: learn also from this network's probabilities on the same augmented images "
        "(any network that takes the student's input size and held out the same validation split; each "
        "network sees the same colour views, encoded its own way, so the grayscale CNN can learn from native32)",
    )
    recipe.add_argument(
        "--distill-weight",
        type=float,
        metavar="W",
        help="share of the loss given to the teacher's probabilities (with --distill-from)",
    )
    recipe.add_argument(
        "--distill-temperature",
        type=float,
        metavar="T",
        help="softening temperature of both networks' probabilities (default 1)",
    )
    recipe.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="validate and ship an exponential moving average of the weights, updated every step with "
        "this decay (e.g. 0.998); default 0: the weights as trained",
    )


def add_augmentation_options(recipe: argparse._ArgumentGroup) -> None:
    """The networks' input size and training augmentation overrides (in the recipe group, in this order)."""
    recipe.add_argument(
        "--crop",
        type=int,
        metavar="SIZE",
        help="input size: centre crop at test time, random resized crop in training (paper: 24)",
    )
    recipe.add_argument(
        "--crop-scale", type=float, nargs=2, metavar=("MIN", "MAX"), help="RandomResizedCrop area range (paper: 0.08 1)"
    )
    recipe.add_argument(
        "--translate",
        type=int,
        metavar="PIXELS",
        help="shift training images by up to this many pixels, reflect-padded (CIFAR's pad-4 crop), 0: off "
        "(default: the detector's recipe)",
    )
    recipe.add_argument(
        "--upload-augment",
        type=float,
        metavar="P",
        help="pass this share of training images through one random upload-like change (resize, JPEG, blur: "
        "cifake_models.perturbations) by the app's own resize path, 0: off (default: the detector's recipe; "
        "the SVM too, once before fitting)",
    )
    recipe.add_argument(
        "--upload-range",
        nargs=3,
        action="append",
        metavar=("FAMILY", "LOW", "HIGH"),
        help="draw this upload-like change's strength from [LOW, HIGH] instead of its default "
        "(repeatable; families and "
        f"defaults: {', '.join(f'{f} {lo:g}-{hi:g}' for f, (lo, hi) in TRAINING_RANGES.items())})",
    )
    recipe.add_argument(
        "--upload-weight",
        nargs=2,
        action="append",
        metavar=("FAMILY", "W"),
        help="draw this upload-like change W times as often as a family left at 1 (repeatable; 0 never draws it)",
    )


def add_svm_options(svm: argparse._ArgumentGroup) -> None:
    """The HOG + SVM recipe's overrides."""
    svm.add_argument("--svm-components", type=int, help="Nystroem components (kernel approximation rank)")
    svm.add_argument(
        "--svm-cells",
        type=int,
        nargs="+",
        help="HOG cell sizes in pixels, one descriptor each, concatenated (paper: 8)",
    )
    svm.add_argument(
        "--svm-colour", action="store_const", const=True, help="HOG of the strongest colour channel instead of the luma"
    )
    svm.add_argument(
        "--svm-smoothing",
        type=float,
        nargs="+",
        metavar="SIGMA",
        help="also describe copies of the image smoothed by a Gaussian of each sigma (pixels), a scale space "
        "(default: none)",
    )
    svm.add_argument("--svm-c", type=float, help="SVM regularisation C")
    svm.add_argument("--svm-gamma-scale", type=float, help="RBF gamma as a multiple of 1/n_features (SVC's 'scale')")


def check_detectors(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Known detector names, and ImageNet weights only for the networks that have them."""
    unknown = sorted(set(args.detectors) - set(list_detectors()))
    if unknown:
        parser.error(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(list_detectors())}")
    if args.weights != "none":
        without = [name for name in args.detectors or list_detectors() if not get_spec(name).imagenet_weights]
        if without:
            parser.error(
                f"--weights {args.weights}: only {', '.join(imagenet_networks())} have ImageNet weights, not "
                f"{', '.join(without)}; name those to train (python -m train {' '.join(imagenet_networks())} "
                f"--weights {args.weights})"
            )
    if args.svm_smoothing and min(args.svm_smoothing) <= 0:
        parser.error(f"--svm-smoothing: each SIGMA must be above 0, not {min(args.svm_smoothing):g}")
    if args.ema is not None and not 0 <= args.ema < 1:
        parser.error(f"--ema: DECAY must be at least 0 (off) and below 1, not {args.ema:g}")


def check_upload_changes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--upload-range`` and ``--upload-weight``: known families, numbers in order."""
    for family, low, high in args.upload_range or ():
        if family not in TRAINING_RANGES:
            parser.error(f"--upload-range: unknown family {family!r} (choose from {', '.join(TRAINING_RANGES)})")
        try:
            if float(low) > float(high):
                parser.error(f"--upload-range {family}: LOW must not exceed HIGH")
        except ValueError:
            parser.error(f"--upload-range {family}: LOW and HIGH must be numbers, not {low!r} {high!r}")
    for family, weight in args.upload_weight or ():
        if family not in TRAINING_RANGES:
            parser.error(f"--upload-weight: unknown family {family!r} (choose from {', '.join(TRAINING_RANGES)})")
        try:
            if not 0 <= float(weight) < math.inf:
                parser.error(f"--upload-weight {family}: W must be a finite number, 0 or more, not {weight}")
        except ValueError:
            parser.error(f"--upload-weight {family}: W must be a number, not {weight!r}")
    try:
        upload_weights((), args.upload_weight or [])
    except ValueError as error:
        parser.error(str(error))


def check_stages(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--init-from`` and ``--distill-from`` train exactly one network, and not over their own source."""
    if args.init_from and (
        len(args.detectors) != 1 or not get_spec(args.detectors[0]).is_torch or args.weights != "none"
    ):
        parser.error("--init-from continues one network: name exactly one network detector, without --weights")
    if (
        args.init_from
        and args.init_from.resolve() == (args.out / get_spec(args.detectors[0]).checkpoint_file).resolve()
    ):
        parser.error(
            f"--init-from {args.init_from} is the file this stage would write: write the stage elsewhere (--out DIR), "
            f"then ship it if it is better with python -m train.choose {args.detectors[0]} DIR --ship"
        )
    if bool(args.distill_from) != bool(args.distill_weight):
        parser.error("a distillation stage needs both --distill-from CHECKPOINT and --distill-weight W (above 0)")
    if args.distill_from and (len(args.detectors) != 1 or not get_spec(args.detectors[0]).is_torch):
        parser.error("--distill-from trains one network: name exactly one network detector")


def imagenet_networks() -> list[str]:
    return [name for name, spec in REGISTRY.items() if spec.imagenet_weights]


def listing() -> str:
    """``--list``: one line per detector, tab-separated, for people and for scripts (scripts/train_all.sh)."""
    lines = []
    for name, spec in REGISTRY.items():
        kind = "network" if spec.is_torch else "committee" if spec.is_committee else "svm"
        weights = WEIGHT_CHOICES if spec.imagenet_weights else ("none",)
        lines.append("\t".join((name, kind, ",".join(weights), spec.title)))
    return "\n".join(lines)


def overrides(args: argparse.Namespace, mapping: dict[str, str]) -> dict:
    chosen = {field: getattr(args, option) for option, field in mapping.items() if getattr(args, option) is not None}
    if chosen.get("step_size") == 0:
        chosen["step_size"] = None
    return chosen


def upload_ranges(
    ranges: tuple[tuple[str, float, float], ...], changes: list[list[str]]
) -> tuple[tuple[str, float, float], ...]:
    """A recipe's ``(family, low, high)`` ranges with each ``--upload-range FAMILY LOW HIGH``
    (checked by parse_args) replacing its family's range."""
    merged = ranges_of(ranges) | ranges_of(tuple((family, float(low), float(high)) for family, low, high in changes))
    return tuple((family, low, high) for family, (low, high) in merged.items())


def upload_weights(weights: tuple[tuple[str, float], ...], changes: list[list[str]]) -> tuple[tuple[str, float], ...]:
    """A recipe's ``(family, weight)`` pairs with each ``--upload-weight FAMILY W`` (checked by
    parse_args) replacing its family's weight, in the families' own order and without the
    weights of 1, so that one way of drawing is recorded one way (``--resume`` compares records).
    ValueError where no family could be drawn any more."""
    merged = weights_of((*weights, *changes), TRAINING_RANGES)
    if not any(weight > 0 for weight in merged.values()):
        raise ValueError(
            f"--upload-weight: every family would weigh 0 ({', '.join(f'{f} {w:g}' for f, w in merged.items())}), "
            f"so none could be drawn"
        )
    return tuple((family, weight) for family, weight in merged.items() if weight != 1)


def network_preprocessing(spec: DetectorSpec, args: argparse.Namespace) -> Preprocessing:
    """What ``spec``'s network sees in this run: the registry's preprocessing, or for a new stage
    (``--init-from``) its parent's as the parent's checkpoint records it, with the options given
    overriding it."""
    base = (
        TorchDetector.load(args.init_from, spec.name, spec.build_module).preprocessing
        if args.init_from
        else spec.preprocessing
    )
    changes = overrides(args, PREPROCESSING_OPTIONS)
    if "crop_scale" in changes:
        changes["crop_scale"] = tuple(changes["crop_scale"])
    if args.upload_range:
        changes["upload_ranges"] = upload_ranges(base.upload_ranges, args.upload_range)
    if args.upload_weight:
        changes["upload_weights"] = upload_weights(base.upload_weights, args.upload_weight)
    return dataclasses.replace(base, **changes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The trainers report through logging: shown on stdout, as the command's own output (replay's too).
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if argv[:1] == ["replay"]:  # python -m train replay ...: re-run recorded lineages (train.replay)
        from .replay import main as replay

        return replay(argv[1:])
    args = parse_args(argv)
    if args.list:
        print(listing())
        return 0
    limit_threads(args.threads)
    args.device = distributed.start(args.device)
    try:
        return run(args)
    finally:
        distributed.stop()


def training_data(
    data_dir: Path, val_fraction: float = VAL_FRACTION, split_seed: int = SPLIT_SEED, limit: int | None = None
) -> tuple[Split, Split, DataInfo]:
    """The training and validation splits of CIFAKE's train split, and the record a checkpoint
    keeps of them (fingerprints, sizes, the split's fraction and seed)."""
    split = load_split(data_dir, "train")
    train_index, val_index = train_val_indices(split.labels, val_fraction, split_seed)
    if limit:
        rng = np.random.default_rng(split_seed)
        train_index = np.sort(rng.choice(train_index, min(limit, len(train_index)), replace=False))
        n_val = max(2, round(limit * val_fraction / (1 - val_fraction)))
        val_index = np.sort(rng.choice(val_index, min(n_val, len(val_index)), replace=False))
    train, val = split.subset(train_index), split.subset(val_index)
    return train, val, DataInfo.of(data_dir, train, val, val_fraction, split_seed)


def run(args: argparse.Namespace) -> int:
    main_rank = distributed.current().main
    data_dir = args.data or default_data_dir()
    started = time.perf_counter()
    train, val, data_info = training_data(data_dir, args.val_fraction, args.split_seed, args.limit)
    if main_rank:
        print(
            f"data: {len(train)} train / {len(val)} validation images from {data_dir} "
            f"({time.perf_counter() - started:.0f}s)"
        )
    for name in args.detectors or list_detectors():
        spec = get_spec(name)
        if spec.is_torch:
            recipe = dataclasses.replace(spec.recipe, **overrides(args, TORCH_OPTIONS))
            try:
                spec = dataclasses.replace(spec, preprocessing=network_preprocessing(spec, args))
            except ValueError as error:  # weights that, with the parent stage's, leave nothing to draw
                print(f"error: {error}", file=sys.stderr)
                return 2
            try:
                fit_torch(
                    spec,
                    train,
                    val,
                    recipe,
                    args.out,
                    data_info,
                    args.weights,
                    args.device,
                    args.resume,
                    init_from=args.init_from,
                    teacher=args.distill_from,
                )
            except ImageNetWeightsUnavailable as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
        elif not main_rank:  # one process fits the SVM and the committee; the others have no use for them
            continue
        elif spec.is_committee:
            fit_committee(spec, val, spec.recipe, args.out, data_info, args.resume)
        else:
            recipe = dataclasses.replace(spec.recipe, **overrides(args, SVM_OPTIONS))
            recipe = dataclasses.replace(
                recipe, pixels_per_cell=tuple(recipe.pixels_per_cell), smoothing=tuple(recipe.smoothing)
            )
            if args.upload_range:
                recipe = dataclasses.replace(
                    recipe, upload_ranges=upload_ranges(recipe.upload_ranges, args.upload_range)
                )
            if args.upload_weight:  # checked against the registry's (uniform) weights by parse_args
                recipe = dataclasses.replace(
                    recipe, upload_weights=upload_weights(recipe.upload_weights, args.upload_weight)
                )
            fit_svm(spec, train, val, recipe, args.out, data_info, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
