"""Stability and heatmaps: ``python -m scripts.benchmarks.extras [--repeats 5 --extras-images 8]``

One image through every detector as the app serves them, then with :mod:`cifake_models.stability`'s
check, with :mod:`cifake_models.explain`'s heatmaps, and with both; ms per image, median of
``--repeats``, in wall time and in the process's CPU time (less sensitive to other jobs on the
machine), in total and per detector; and each heatmap's completeness error (IG's check of its own
accuracy).
"""

from __future__ import annotations

import os
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cifake_models.committee import CommitteeDetector

from .common import common_arguments, jpeg_files, print_table, setup


def median_wall_cpu_ms(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU (all of this process's threads) milliseconds of ``fn()``, after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def extras(checkpoint_dir: Path | None, data_dir: Path, repeats: int, n_images: int) -> None:
    """Issue 14's additions against what one image costs today, on the served detectors."""
    from captum.attr import IntegratedGradients

    from cifake_models import explain, stability
    from cifake_models.data import decode_rgb
    from cifake_models.detector import TorchDetector
    from cifake_models.page.state import load_state

    threads = torch.get_num_threads()
    state = load_state(checkpoint_dir)  # as the app loads and serves them
    detectors = state.detectors
    files = jpeg_files(data_dir)
    names = sorted(files)
    images = np.stack(
        [decode_rgb(files[names[i]]) for i in np.random.default_rng(0).choice(len(names), n_images, replace=False)]
    )

    def cost(fn) -> tuple[float, float]:  # per image, over the sample, one image per call
        per_image = [median_wall_cpu_ms(partial(fn, image), repeats) for image in images]
        return statistics.median(w for w, _ in per_image), statistics.median(c for _, c in per_image)

    def row(label: str, fn) -> list[str]:
        wall, cpu = cost(fn)
        return [label, f"{wall:.0f}", f"{cpu:.0f}"]

    def checked(image: np.ndarray) -> list:  # as the page does: the copies only, beside the image's own answers
        return stability.check(detectors, image[None], answers=state.predict(image[None]), predict=state.predict)

    def both(image: np.ndarray) -> tuple:
        return checked(image), explain.heatmaps(detectors, image, executor=state.serving.executor)

    def heatmap_alone(name: str, detector, image: np.ndarray) -> dict:
        return explain.heatmaps({name: detector}, image)

    rows = [
        row("all detectors (today)", lambda image: state.predict(image[None])),
        row(f"+ stability ({len(stability.CHANGES)} changed copies, one pass)", checked),
        row(
            "+ heatmaps",
            lambda image: (
                state.predict(image[None]),
                explain.heatmaps(detectors, image, executor=state.serving.executor),
            ),
        ),
        row("+ both", both),
    ]
    for name, detector in detectors.items():
        if not isinstance(detector, CommitteeDetector):  # a committee has no map (explain.NO_HEATMAP)
            rows.append(row(f"  heatmap: {name}", partial(heatmap_alone, name, detector)))
    print_table(
        f"5. One image (ms, median over {len(images)} test images of the median of {repeats} runs): "
        f"{os.cpu_count()} CPU cores, {threads} torch threads"
        + (", detectors side by side on one thread each" if state.serving.executor else ""),
        ["", "wall", "CPU"],
        rows,
    )

    # Are explain.STEPS path points enough? IG's own check, completeness (the attributions sum to
    # the FAKE-minus-REAL logit of the image less the black image's), and whether the map shown
    # has converged: its correlation with the map from four times as many points. Medians over the images.
    rows = []
    for name, detector in detectors.items():
        if isinstance(detector, TorchDetector):
            x = detector.preprocessing.eval_transform(torch.as_tensor(images))
            base = detector.preprocessing.eval_transform(torch.zeros((1, 32, 32, 3), dtype=torch.uint8))
            margin = explain.FakeMargin(detector.module.eval())  # what the page's maps attribute
            _, delta = IntegratedGradients(margin).attribute(
                x, baselines=base, n_steps=explain.STEPS, return_convergence_delta=True
            )
            with torch.no_grad():
                gap = margin(x) - margin(base)
            similar = [
                np.corrcoef(
                    explain.integrated_gradients(detector, image).values.ravel(),
                    explain.integrated_gradients(detector, image, 4 * explain.STEPS).values.ravel(),
                )[0, 1]
                for image in images
            ]
            rows.append([name, f"{float((delta.abs() / gap.abs()).median()):.3f}", f"{np.median(similar):.3f}"])
    print_table(
        f"   Integrated Gradients with {explain.STEPS} steps (one view)",
        ["", "|sum - margin gap| / |gap|", f"map's correlation with {4 * explain.STEPS} steps'"],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = common_arguments(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--extras-images", type=int, default=8, help="test images the extras are measured on")
    args = parser.parse_args(argv)
    setup(args)
    checkpoints = args.checkpoints or os.environ.get("CIFAKE_CHECKPOINTS")
    extras(Path(checkpoints) if checkpoints else None, args.data, args.repeats, args.extras_images)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
