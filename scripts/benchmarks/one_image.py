"""One image, in-process: ``python -m scripts.benchmarks.one_image [--repeats 5 --check-images 500]``

A plain ResNet-50 forward pass at 32x32 (batch 1, PyTorch), then every detector and all of them on
one image, for each way of running them: two forward passes per image (image, then mirror), both
views in one pass, that plus channels-last, a frozen TorchScript graph, and ONNX Runtime (what the
app and ``cifake-score`` use), with its threads busy-waiting between operators and without; with
the largest difference in probability from the two-pass PyTorch answer over ``--check-images``
test images. Also per image for a batch of 64. Then all detectors as the app serves them: side by
side, ONNX Runtime on one thread each (``cifake_models.serving``), and a committee's combining.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from cifake_models.committee import CommitteeDetector
from cifake_models.data import load_split
from cifake_models.images import mirror

from .common import best_ms_per_image, common_arguments, print_table, setup, torch_threads


class ChannelsLast(torch.nn.Module):
    """A network run on channels-last tensors (oneDNN's preferred layout on CPUs)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.inner = module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous(memory_format=torch.channels_last))


def variants(name: str, checkpoint_dir: Path) -> dict[str, object]:
    """``{way of running: function(uint8 batch) -> probabilities}`` for one detector, each loaded
    afresh from its checkpoint; the candidates replace the forward pass (``TorchDetector.network``)."""
    from cifake_models import load_detector

    plain = load_detector(name, checkpoint_dir)

    def two_passes(batch: np.ndarray) -> np.ndarray:  # calibrated, as every other way answers
        if not plain.views.mirror_average:
            return plain.calibrate(plain.single_view(batch))
        return plain.calibrate((plain.single_view(batch) + plain.single_view(mirror(batch))) / 2)

    ways = {"two passes (before)": two_passes, "one pass": plain.probabilities}
    if not hasattr(plain, "module"):
        return ways  # HOG + SVM: scikit-learn, nothing else to try
    last = load_detector(name, checkpoint_dir)
    last.network = ChannelsLast(last.module)
    ways["one pass, channels-last"] = last.probabilities
    frozen = load_detector(name, checkpoint_dir)
    with torch.no_grad():
        example = frozen.preprocessing.eval_transform(np.zeros((2, 32, 32, 3), np.uint8))
        frozen.network = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(frozen.module, example)))
    ways["one pass, TorchScript frozen"] = frozen.probabilities
    ways["one pass, ONNX Runtime"] = load_detector(name, checkpoint_dir).prepare_for_serving().probabilities
    other = load_detector(name, checkpoint_dir).prepare_for_serving(spinning=True)  # served: spinning off
    ways["one pass, ONNX Runtime, spinning on"] = other.probabilities
    return ways


def one_image(checkpoint_dir: Path, titles: dict[str, str], images: np.ndarray, repeats: int, served) -> None:
    """``served``: the app's ``AppState.predict`` (its detectors side by side, one thread each)."""
    torch.manual_seed(0)
    from torchvision.models import resnet50

    plain = resnet50(num_classes=2).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        reference = best_ms_per_image(lambda: plain(x), 1, 3 * repeats)
    one, batch64 = images[:1], images[np.arange(64) % len(images)]
    ways = {name: variants(name, checkpoint_dir) for name in titles}
    labels = list(dict.fromkeys(label for w in ways.values() for label in w))
    rows, totals, totals64 = [], dict.fromkeys(labels, 0.0), dict.fromkeys(labels, 0.0)
    befores = {}
    for name, way in ways.items():
        before = befores[name] = way["two passes (before)"](images)
        for label in labels:
            fn = way.get(label, way["one pass"])  # the SVM has one way to run in one pass
            ms1 = best_ms_per_image(partial(fn, one), 1, repeats)
            ms64 = best_ms_per_image(partial(fn, batch64), 64, max(2, repeats // 2))
            diff = float(np.abs(fn(images) - before).max())
            totals[label] += ms1
            totals64[label] += ms64
            rows.append([f"{titles[name]}: {label}", f"{ms1:.2f}", f"{ms64:.2f}", f"{diff:.1e}"])
    for label in labels:
        rows.append(
            [
                f"all {len(titles)} detectors: {label}",
                f"{totals[label]:.1f}",
                f"{totals64[label]:.2f}",
                f"{totals[label] / reference:.1f}x",
            ]
        )
    ms1, ms64 = (
        best_ms_per_image(lambda: served(one), 1, repeats),
        best_ms_per_image(lambda: served(batch64), 64, max(2, repeats // 2)),
    )
    rows.append(
        [
            f"all {len(titles)} detectors: side by side, ONNX Runtime one thread each (served)",
            f"{ms1:.1f}",
            f"{ms64:.2f}",
            f"{ms1 / reference:.1f}x",
        ]
    )
    probas = served(images)[0]  # in (FAKE, REAL) order, as every way answers: CLASSES
    side_diff = max(float(np.abs(probas[name] - befores[name]).max()) for name in titles)
    print_table(
        f"1. One image in-process (ms). Plain ResNet-50 forward at 32x32, batch 1, PyTorch: {reference:.2f} ms.\n"
        f"   Last column: largest |P difference| from 'two passes (before)' over {len(images)} test images; "
        "for all detectors, the time in multiples of the plain ResNet-50 forward.",
        ["", "1 image", "per image, batch 64", "diff / ratio"],
        rows,
    )
    print(f"   Side by side (served): largest |P difference| from 'two passes (before)': {side_diff:.1e}\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = common_arguments(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--check-images", type=int, default=500, help="test images on which the ways of running are compared"
    )
    args = parser.parse_args(argv)
    setup(args)
    from cifake_models.page.state import load_state

    threads = torch.get_num_threads()  # before the app's detectors take one each (serving.side_by_side)
    test = load_split(args.data, "test")
    sample = test.images[np.sort(np.random.default_rng(0).choice(len(test), args.check_images, replace=False))]
    state = load_state()
    # A committee runs no network of its own: in the app it combines its members' answers.
    members = {n: state.title(n) for n, d in state.detectors.items() if not isinstance(d, CommitteeDetector)}
    with torch_threads(threads):  # the ways compare on the process's threads; the app set them to one
        one_image(state.checkpoint_dir, members, sample, args.repeats, state.predict)
    for committee in (d for d in state.detectors.values() if isinstance(d, CommitteeDetector)):
        answers = {m: np.array([0.5]) for m in committee.members}
        ms = best_ms_per_image(partial(committee.combine, answers), 1, args.repeats)
        print(
            f"{state.title(committee.name)}: combining its {len(answers)} members' answers for one image: {ms:.3f} ms "
            "(no forward pass of its own)\n",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
