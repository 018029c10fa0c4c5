"""Native-32's width, chosen by measurement: validation accuracy per minute of training.

    python scripts/native32_designs.py --widths 32 48 64 --minutes 20 --out runs/designs

Each width trains from scratch with native-32's registry recipe (one-cycle AdamW, label
smoothing, shifts, flips, upload-like changes) on as many training images as it gets through
in about ``--minutes`` on this machine (on its GPU where there is one): its speed is measured
first on a few augmented batches (``train.torch_fit.training_speed``) on the device it trains
on, and the one-cycle schedule spans the images it can afford, so every width ends its
schedule in about the same time. The table reports the
wall time the training took and the validation figures ``python -m train`` records (accuracy
of one view and mirror-averaged, ROC-AUC, mean and worst under the robustness suite). The
checkpoints in ``--out/w<WIDTH>/`` are for this comparison only: the registry's ``native32``
is one width, so they do not load as it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
from pathlib import Path

import torch

from cifake_models import get_spec
from cifake_models.data import default_data_dir
from cifake_models.metrics import percent
from cifake_models.nets import native32
from cifake_models.registry import rgb_only
from train.__main__ import training_data
from train.torch_fit import fit_torch, training_device, training_speed

MIN_EPOCHS = 4  # at least four epochs of the images a width can afford; more where those exceed the split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 48, 64])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget of each width")
    parser.add_argument("--out", type=Path, default=Path("runs/designs"))
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--limit", type=int, help="use only this many training images (smoke runs)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the trainer's epoch lines
    if args.threads:
        torch.set_num_threads(args.threads)
    device = training_device(args.device)  # timed where it trains
    train, val, data_info = training_data(args.data or default_data_dir(), limit=args.limit)
    base = get_spec("native32")
    rows = []
    for width in args.widths:
        spec = dataclasses.replace(
            base, architecture=rgb_only(functools.partial(native32, width=width), f"native32 width {width}")
        )
        speed = training_speed(
            spec, torch.as_tensor(train.images).to(device), torch.as_tensor(train.labels).to(device), base.recipe
        )
        affordable = args.minutes * 60 * speed
        epochs = max(MIN_EPOCHS, math.ceil(affordable / len(train)))
        per_epoch = max(
            base.recipe.batch_size,
            min(len(train), int(affordable / epochs) // base.recipe.batch_size * base.recipe.batch_size),
        )
        recipe = dataclasses.replace(base.recipe, epochs=epochs, images_per_epoch=per_epoch)
        print(f"width {width}: {speed:.0f} training images/s here; {epochs} epochs of {per_epoch} images", flush=True)
        detector = fit_torch(spec, train, val, recipe, args.out / f"w{width}", data_info, device=str(device))
        metadata = detector.metadata
        parameters = sum(p.numel() for p in detector.module.parameters())
        views = metadata["test_time"]["validation_accuracy"]
        robustness = metadata["validation"]["robustness"]
        rows.append(
            (
                width,
                parameters,
                epochs * per_epoch,
                metadata["training"]["wall_time_s"] / 60,
                views["single"],
                views["mirror_average"],
                metadata["validation"]["roc_auc"],
                robustness["mean_accuracy"],
                robustness["worst"]["accuracy"],
            )
        )
    print(
        "\n| width | parameters | images seen | minutes | validation (one view) | mirror-averaged | ROC-AUC "
        "| suite mean | suite worst |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for width, parameters, seen, minutes, single, mirrored, auc, mean, worst in rows:
        print(
            f"| {width} | {parameters:,} | {seen:,} | {minutes:.1f} | {percent(single)} | {percent(mirrored)} "
            f"| {auc:.4f} | {percent(mean)} | {percent(worst)} |"
        )


if __name__ == "__main__":
    main()
