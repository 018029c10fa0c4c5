"""Why a verdict: for one image, a 32x32 map per detector of where its evidence lies.

Networks: Integrated Gradients (Captum) of the FAKE-minus-REAL logit from a black baseline;
HOG + SVM: the HOG picture its features describe; the committee has none (:data:`NO_HEATMAP`).
Why these and not Grad-CAM or occlusion: docs/layout.md (design notes).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch
from captum.attr import IntegratedGradients
from PIL import Image
from sklearn.pipeline import Pipeline

from .detector import Detector, SklearnDetector, TorchDetector
from .images import SIZE, mirror
from .labels import FAKE
from .svm import HogFeatures

# IG path points, all in one batch (per view), chosen by measurement (docs/layout.md, design notes).
STEPS = 16
CLIP_PERCENTILE = 99  # maps are scaled so that this percentile of |attribution| is 1, as Captum's
# own visualisation clips the top 2% (``outlier_perc``): a few extreme pixels would otherwise wash out the rest
DIVERGING, SEQUENTIAL = "RdBu_r", "magma"  # matplotlib colormaps: red = evidence for FAKE, blue = for REAL
NO_HEATMAP = "The committee has no map of its own: it weighs its members' answers, so its evidence is in their maps."


@dataclass(frozen=True)
class Heatmap:
    """One detector's map for one image."""

    detector: str
    method: str  # how the map was made, for a caption
    values: np.ndarray  # float32 [32, 32]: signed maps in [-1, 1] (+: for FAKE), others in [0, 1]
    signed: bool

    def image(self, size: int = 128, under: np.ndarray | None = None, opacity: float = 0.7) -> np.ndarray:
        """The map as a uint8 RGB ``[size, size, 3]`` picture, enlarged with nearest neighbour so
        that each pixel stays a square. With ``under`` (the uint8 32x32 RGB image), the colours
        are laid over the image, each pixel as opaque as its value is strong (up to ``opacity``)."""
        colormap = matplotlib.colormaps[DIVERGING if self.signed else SEQUENTIAL]
        colours = colormap((self.values + 1) / 2 if self.signed else self.values, bytes=True)[..., :3]
        if under is not None:
            weight = opacity * np.abs(self.values)[..., None]
            colours = np.round((1 - weight) * under + weight * colours).astype(np.uint8)
        return np.asarray(Image.fromarray(colours).resize((size, size), Image.Resampling.NEAREST))


def heatmaps(
    detectors: Mapping[str, Detector], array: np.ndarray, steps: int = STEPS, executor: Executor | None = None
) -> dict[str, Heatmap]:
    """A :class:`Heatmap` for the uint8 ``[32, 32, 3]`` image ``array`` from each detector that
    has one (networks, HOG + SVM), in the order of ``detectors``; committees have none.
    ``steps``: Integrated Gradients' path points, the networks' cost (see :data:`STEPS`).
    With an ``executor``, the maps are made side by side on its threads (as the app serves)."""

    def heatmap(detector: Detector) -> Heatmap:
        if isinstance(detector, TorchDetector):
            return integrated_gradients(detector, array, steps)
        return hog_picture(detector, array)

    mapped = {name: d for name, d in detectors.items() if isinstance(d, (TorchDetector, SklearnDetector))}
    return dict(zip(mapped, (executor.map if executor is not None else map)(heatmap, mapped.values())))


class FakeMargin(torch.nn.Module):
    """A two-class network's FAKE logit less its REAL logit: what Integrated Gradients attributes."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        return logits[:, FAKE] - logits[:, 1 - FAKE]


def integrated_gradients(detector: TorchDetector, array: np.ndarray, steps: int = STEPS) -> Heatmap:
    """Integrated Gradients of the FAKE-minus-REAL logit from a black image to ``array`` (see the module)."""
    views = np.stack([array, mirror(array[None])[0]]) if detector.views.mirror_average else array[None]
    device = next(detector.module.parameters()).device
    transform = detector.preprocessing.eval_transform
    inputs = transform(torch.tensor(views, device=device))  # a copy: an upload's array may be read-only
    baseline = transform(torch.zeros((1, SIZE, SIZE, 3), dtype=torch.uint8, device=device))
    attributions = IntegratedGradients(FakeMargin(detector.module.eval())).attribute(
        inputs, baselines=baseline, n_steps=steps, internal_batch_size=steps * len(views)
    )
    per_pixel = _uncrop(attributions.sum(dim=1).detach().cpu().numpy())
    if detector.views.mirror_average:
        per_pixel = (per_pixel[0] + per_pixel[1][:, ::-1]) / 2
    else:
        per_pixel = per_pixel[0]
    views_text = ", averaged with its mirror's" if detector.views.mirror_average else ""
    method = (
        f"Integrated Gradients of the FAKE-minus-REAL logit from a black image ({steps} steps{views_text}); "
        "red: for FAKE, blue: for REAL"
    )
    return Heatmap(detector.name, method, _scale_signed(per_pixel), signed=True)


def _uncrop(maps: np.ndarray) -> np.ndarray:
    """``[n, crop, crop]`` attributions of a centre crop back at their place in ``[n, 32, 32]``."""
    crop = maps.shape[-1]
    offset = (SIZE - crop) // 2  # as Preprocessing.eval_transform crops
    full = np.zeros((len(maps), SIZE, SIZE), np.float32)
    full[:, offset : offset + crop, offset : offset + crop] = maps
    return full


def _scale_signed(values: np.ndarray) -> np.ndarray:
    scale = np.percentile(np.abs(values), CLIP_PERCENTILE)
    return np.clip(values / scale, -1, 1).astype(np.float32) if scale > 0 else np.zeros_like(values, np.float32)


def hog_features(detector: SklearnDetector) -> HogFeatures:
    """The HOG step inside a stored SVM: calibration wraps the frozen pipeline
    (``train/svm_fit.py``: CalibratedClassifierCV(FrozenEstimator(Pipeline)))."""
    estimator = detector.estimator
    while not isinstance(estimator, Pipeline):
        estimator = estimator.estimator
    return next(step for _, step in estimator.steps if isinstance(step, HogFeatures))


def hog_picture(detector: SklearnDetector, array: np.ndarray) -> Heatmap:
    """The HOG picture of ``array`` with the SVM's own HOG parameters (see the module)."""
    features = hog_features(detector)
    image = features.inputs(array[None])[0]
    pictures = [
        features.describe(level, cell, visualize=True)[1]
        for level in features.levels(image)
        for cell in features.pixels_per_cell
    ]
    values = np.mean([p / p.max() if p.max() > 0 else p for p in pictures], axis=0)
    values = values / values.max() if values.max() > 0 else values
    cells = " and ".join(f"{cell}" for cell in features.pixels_per_cell)
    channels = "colour" if features.colour else "grayscale"
    smoothed = (
        f", also smoothed at sigma {' and '.join(f'{sigma:g}' for sigma in features.smoothing)}"
        if features.smoothing
        else ""
    )
    method = (
        f"HOG picture the SVM's features describe ({channels}, {features.orientations} orientations, "
        f"{cells} px cells{smoothed}): strong gradients per cell and direction, not the SVM's weighting"
    )
    return Heatmap(detector.name, method, values.astype(np.float32), signed=False)
