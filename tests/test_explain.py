"""Heatmaps on models made here, whose evidence is known to lie in one place."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from skimage.feature import hog
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from cifake_models import list_detectors
from cifake_models.committee import CommitteeDetector
from cifake_models.decision import Views
from cifake_models.detector import SklearnDetector, TorchDetector
from cifake_models.explain import heatmaps, hog_features
from cifake_models.labels import FAKE
from cifake_models.preprocessing import Preprocessing
from cifake_models.recipes import SvmRecipe
from cifake_models.registry import get_spec
from cifake_models.svm import build_pipeline


class Patch(torch.nn.Module):
    """FAKE logit = the mean of one 8x8 patch of the input; REAL logit = the mean of another
    (``real``), or 0."""

    def __init__(self, rows: slice, cols: slice, real: tuple[slice, slice] | None = None):
        super().__init__()
        self.rows, self.cols, self.real = rows, cols, real
        self.gain = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 2)
        logits[:, FAKE] = self.gain * x[:, :, self.rows, self.cols].mean(dim=(1, 2, 3))
        if self.real:
            logits[:, 1 - FAKE] = self.gain * x[:, :, self.real[0], self.real[1]].mean(dim=(1, 2, 3))
        return logits


def patch_detector(
    rows: slice, cols: slice, mirror_average: bool, real: tuple[slice, slice] | None = None
) -> TorchDetector:
    return TorchDetector("patch", Patch(rows, cols, real), Preprocessing(crop=32), views=Views(mirror_average))


IMAGE = np.random.default_rng(0).integers(64, 256, (32, 32, 3), dtype=np.uint8)


def mass(values: np.ndarray, rows: slice, cols: slice) -> float:
    return np.abs(values[rows, cols]).sum() / np.abs(values).sum()


@pytest.mark.parametrize("rows, cols", [(slice(0, 8), slice(0, 8)), (slice(20, 28), slice(12, 20))])
def test_the_map_lies_where_the_evidence_is(rows, cols):
    heatmap = heatmaps({"patch": patch_detector(rows, cols, mirror_average=False)}, IMAGE)["patch"]
    assert heatmap.values.shape == (32, 32) and heatmap.signed
    assert mass(heatmap.values, rows, cols) > 0.99 and (heatmap.values[rows, cols] > 0).all()  # evidence for FAKE


def test_evidence_for_real_is_negative():
    """The verdict follows the FAKE logit less the REAL one, so a patch that raises the REAL
    logit is evidence for REAL, though the FAKE logit never reads it."""
    fake, real = (slice(0, 8), slice(0, 8)), (slice(20, 28), slice(12, 20))
    heatmap = heatmaps({"patch": patch_detector(*fake, mirror_average=False, real=real)}, IMAGE)["patch"]
    assert (heatmap.values[fake] > 0).all() and (heatmap.values[real] < 0).all()
    assert mass(heatmap.values, *fake) + mass(heatmap.values, *real) > 0.99


def test_a_mirror_averaging_detector_also_looks_at_the_mirrored_place():
    heatmap = heatmaps({"patch": patch_detector(slice(0, 8), slice(0, 8), mirror_average=True)}, IMAGE)["patch"]
    # its answer averages the top-left patch of the image and of the mirror (the image's top right)
    assert mass(heatmap.values, slice(0, 8), slice(0, 8)) == pytest.approx(0.5, abs=0.05)
    assert mass(heatmap.values, slice(0, 8), slice(24, 32)) == pytest.approx(0.5, abs=0.05)


def test_overlay_picture():
    heatmap = heatmaps({"patch": patch_detector(slice(0, 8), slice(0, 8), mirror_average=False)}, IMAGE)["patch"]
    alone, over = heatmap.image(), heatmap.image(size=96, under=IMAGE)
    assert alone.shape == (128, 128, 3) and over.shape == (96, 96, 3) and over.dtype == np.uint8
    assert (alone[::4, ::4] == alone[3::4, 3::4]).all()  # nearest neighbour: each pixel a 4x4 square
    # where the map is 0 the image shows through unchanged; in the patch, the colormap does
    np.testing.assert_array_equal(over[::3, ::3][16:, 16:], IMAGE[16:, 16:])
    assert not (over[::3, ::3][:8, :8] == IMAGE[:8, :8]).all()


def fitted_svm(name: str, pixels_per_cell: tuple[int, ...]) -> SklearnDetector:
    """An SVM stored as train/svm_fit.py stores it: calibrated around the frozen pipeline."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 32 * 32 * 3), dtype=np.uint8)
    y = np.arange(40) % 2
    pipeline = build_pipeline(SvmRecipe(pixels_per_cell=pixels_per_cell, n_components=8)).fit(x, y)
    return SklearnDetector(name, CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid").fit(x, y))


def test_the_hog_picture_is_the_svms_own_hog():
    svm = fitted_svm("svm", (8, 16))
    assert hog_features(svm).pixels_per_cell == (8, 16)
    edges = np.zeros((32, 32, 3), np.uint8)
    edges[:, 16:] = 255  # one vertical edge
    heatmap = heatmaps({"svm": svm}, edges)["svm"]
    assert heatmap.values.shape == (32, 32) and not heatmap.signed and heatmap.values.max() == pytest.approx(1)
    # the SVM's parameters: its 8 px cells' picture averaged with its 16 px cells'
    pictures = [hog(edges[..., 0] / 255.0, 9, (c, c), (2, 2), block_norm="L2-Hys", visualize=True)[1] for c in (8, 16)]
    average = np.mean([p / p.max() for p in pictures], axis=0)
    np.testing.assert_allclose(heatmap.values, average / average.max(), atol=1e-6)
    assert not np.allclose(heatmaps({"svm": fitted_svm("svm", (8,))}, edges)["svm"].values, heatmap.values)
    blank = heatmaps({"svm": svm}, np.full((32, 32, 3), 90, np.uint8))["svm"]
    assert not blank.values.any()
    assert heatmap.image().shape == (128, 128, 3)


def test_every_registered_detector_gets_a_map_but_the_committee():
    """The registry's own architectures and preprocessing (grayscale, crops), untrained."""
    detectors = {}
    for name in list_detectors():
        spec = get_spec(name)
        if spec.is_torch:
            detectors[name] = TorchDetector(
                name, spec.build_module(), spec.preprocessing, views=Views(mirror_average=True)
            )
        elif spec.is_committee:
            members = list(detectors)
            masks = np.ones((1, len(members)), bool)
            detectors[name] = CommitteeDetector(name, detectors, members, masks, np.ones((1, len(members) + 1)))
        else:
            detectors[name] = fitted_svm(name, spec.recipe.pixels_per_cell)
    maps = heatmaps(detectors, IMAGE)
    assert list(maps) == [n for n in list_detectors() if not get_spec(n).is_committee]
    with ThreadPoolExecutor(2) as executor:  # side by side, as the app makes them: the same maps
        side = heatmaps(detectors, IMAGE, executor=executor)
    assert list(side) == list(maps) and all(np.array_equal(side[n].values, maps[n].values) for n in maps)
    for name, heatmap in maps.items():
        assert heatmap.detector == name and heatmap.values.shape == (32, 32) and np.isfinite(heatmap.values).all()
        assert np.abs(heatmap.values).max() == pytest.approx(1), name
        crop = get_spec(name).preprocessing.crop if get_spec(name).is_torch else 32
        if crop < 32:  # pixels outside the centre crop never reach the network
            assert not heatmap.values[: (32 - crop) // 2].any()
