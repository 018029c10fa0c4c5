"""Training speed of every registered network on this machine, by memory format.

    python scripts/training_speed.py [--precision fp32|bf16] [--threads 2] [--device cpu]

Times ``train.torch_fit.training_speed`` (augmentation, forward, backward and optimiser step on
the registry recipe's batch size) for each network, with its tensors in the default layout and
in channels-last, the layout ``python -m train`` uses, on the device it trains on (the GPU where
there is one). The images are random uint8 pixels, so no data is needed; the networks' cost does
not depend on the pixels.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from cifake_models import REGISTRY
from cifake_models.recipes import PRECISIONS
from train.torch_fit import training_device, training_speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=[p for p in PRECISIONS if p != "auto"], default="fp32")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per network and layout")
    parser.add_argument("--device", help="cuda or cpu (default: as python -m train, cuda when available)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = training_device(args.device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1024, 32, 32, 3), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 2, (1024,), generator=generator).to(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        "| network | batch | default layout (images/s) | channels-last (images/s) | ratio |  "
        f"({args.precision}, {where})"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for spec in REGISTRY.values():
        if not spec.is_torch:
            continue
        recipe = dataclasses.replace(spec.recipe, precision=args.precision)
        default, last = (
            training_speed(spec, images, labels, recipe, channels_last, args.steps) for channels_last in (False, True)
        )
        print(
            f"| {spec.title} | {recipe.batch_size} | {default:.0f} | {last:.0f} | {last / default:.2f}x |", flush=True
        )


if __name__ == "__main__":
    main()
