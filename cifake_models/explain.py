"""Why a verdict: for one image, a 32x32 map per detector of where its evidence lies.

**Networks: Integrated Gradients** (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for
Deep Networks", ICML), computed by Captum (Kokhlikyan et al. 2020). A pixel's attribution is its
difference from a baseline times the gradient of the FAKE logit less the REAL logit (the log-odds
``log(P(FAKE) / P(REAL))`` the verdict follows: a pixel that raised both logits alike would move
nothing), averaged along the straight path from the baseline to the image; by the method's
completeness axiom the attributions sum to that margin's change from the baseline to the image,
so the map splits the detector's actual evidence among the pixels. Why not the alternatives:

* Grad-CAM (Selvaraju et al. 2017) on the last convolutional stage, the usual choice, means
  nothing here: five 2x downsamplings take a 32x32 image to 1x1 in ResNet-50, VGG-16 and
  DenseNet-121, so the "map" is one number. On an earlier stage it needs a layer chosen per
  architecture, is coarse (ResNet-50's first stage is already 8x8) and mixes in gradients that
  earlier layers only pass on.
* Occlusion (Zeiler & Fergus 2014) is gradient-free but needs a forward pass per window
  position and maps at the window's resolution; at 32x32 a 4x4 window is an eighth of the image.

Choices: the baseline is a black image (pixels 0), put through the detector's own
``eval_transform`` like the image itself, so preprocessing can never differ. The attributions
are taken with respect to the network's input and summed over channels: the preprocessing is
linear per pixel (scaling, normalisation, luma), and IG's path integral is unchanged by such a
map, so this is the attribution of each 32x32 pixel; pixels a centre crop leaves out get 0.
:data:`STEPS` Gauss-Legendre points (Captum's default rule) keep the completeness error small
(figures at :data:`STEPS`). Where a detector averages over the image and
its left-right mirror, the map averages both views' maps, the mirror's flipped back: IG is
linear in the function, so that is the IG of the mean of the two margins (the detector averages
probabilities; the margin mean is the nearest thing IG can attribute).

**HOG + SVM: the HOG picture** the SVM's features describe: ``skimage.feature.hog(...,
visualize=True)`` run by the checkpoint's own :class:`~cifake_models.svm.HogFeatures` (same
grayscale conversion, orientations, cells and blocks), one picture per cell size, each scaled to
its maximum, averaged, the average scaled to a maximum of 1. It shows the gradients the SVM
sees, not how it weighs them (its RBF expansion over thousands of landmarks has no per-pixel reading).

**The committee has no map** (:data:`NO_HEATMAP`): it weighs its members' answers, so its
evidence is theirs.
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

# IG path points, all in one batch (per view). Measured on the shipped networks and test images
# (scripts/benchmark_app.py --extras): at 16 the map correlates at 0.996 or more with a 64-point
# map and the completeness gap is 2-9%; at 8 the correlation drops to 0.985 for ResNet-50.
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


def heatmaps(detectors: Mapping[str, Detector], array: np.ndarray, steps: int = STEPS,
             executor: Executor | None = None) -> dict[str, Heatmap]:
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
    method = f"Integrated Gradients of the FAKE-minus-REAL logit from a black image ({steps} steps{views_text}); red: for FAKE, blue: for REAL"
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
    pictures = [features.describe(level, cell, visualize=True)[1] for level in features.levels(image) for cell in features.pixels_per_cell]
    values = np.mean([p / p.max() if p.max() > 0 else p for p in pictures], axis=0)
    values = values / values.max() if values.max() > 0 else values
    cells = " and ".join(f"{cell}" for cell in features.pixels_per_cell)
    channels = "colour" if features.colour else "grayscale"
    smoothed = f", also smoothed at sigma {' and '.join(f'{sigma:g}' for sigma in features.smoothing)}" if features.smoothing else ""
    method = (f"HOG picture the SVM's features describe ({channels}, {features.orientations} orientations, "
              f"{cells} px cells{smoothed}): strong gradients per cell and direction, not the SVM's weighting")
    return Heatmap(detector.name, method, values.astype(np.float32), signed=False)
