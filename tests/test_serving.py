"""Serving: ONNX Runtime answers as PyTorch does, and concurrent requests share forward passes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cifake_models import get_spec, list_detectors, load_detector
from cifake_models.decision import DecisionRule
from cifake_models.detector import Detector
from cifake_models.inference import MIN_PART, predict_all
from cifake_models.onnx_runtime import RAW_TOLERANCE, OnnxNetwork
from cifake_models.paths import CHECKPOINT_DIR
from cifake_models.serving import SharedPasses, side_by_side

NETWORKS = [name for name in list_detectors() if get_spec(name).is_torch]


def assert_raw_agreement(plain: Detector, served: Detector, images: np.ndarray) -> None:
    """What serving guarantees: PyTorch's probabilities before calibration, within RAW_TOLERANCE.
    (Calibrated ones can differ more where an isotonic map is steep: see onnx_runtime.)"""
    assert isinstance(served.network, OnnxNetwork)
    torch_raw = plain.uncalibrated(images)
    np.testing.assert_allclose(served.uncalibrated(images), torch_raw, atol=RAW_TOLERANCE, rtol=0)
    np.testing.assert_allclose(served.uncalibrated(images[:1]), torch_raw[:1], atol=RAW_TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", NETWORKS)
def test_onnx_runtime_gives_pytorchs_probabilities(name, tiny_assets):
    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    plain, served = (load_detector(name, tiny_assets["checkpoints"]) for _ in range(2))
    assert_raw_agreement(plain, served.prepare_for_serving(), images)


@pytest.mark.skipif(not (CHECKPOINT_DIR / "cnn.safetensors").is_file(), reason="the shipped checkpoints are not here")
def test_onnx_runtime_gives_pytorchs_probabilities_on_a_shipped_network():
    """On trained weights too, whose logits are larger than the tiny checkpoints'."""
    images = np.random.default_rng(3).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    assert_raw_agreement(
        load_detector("cnn", CHECKPOINT_DIR),
        load_detector("cnn", CHECKPOINT_DIR).prepare_for_serving(threads=1),
        images,
    )


class Broken(Detector):
    def single_view(self, batch: np.ndarray) -> np.ndarray:
        raise ValueError("no weights")


def test_detectors_side_by_side_answer_as_one_after_another(tiny_assets):
    """The app runs a pass's detectors side by side, each on one thread: the same answers as one
    after another, the networks' PyTorch's (raw) within RAW_TOLERANCE, and a broken detector
    still fails alone."""
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    serving = side_by_side()
    assert serving.threads == 1 and serving.executor is not None and side_by_side() is serving  # once per process
    served, plain = {}, {}
    for name in list_detectors():
        served[name] = load_detector(name, tiny_assets["checkpoints"], loaded=served).prepare_for_serving(
            serving.threads
        )
        plain[name] = load_detector(name, tiny_assets["checkpoints"], loaded=plain)
    served["broken"] = Broken("broken")
    with ThreadPoolExecutor(2) as executor:  # two at once, whatever the tests' thread count
        side = predict_all(served, images, executor)
    after = predict_all(served, images)
    assert list(side[0]) == list_detectors() and "ValueError: no weights" in side[2]["broken"]
    for name in list_detectors():
        np.testing.assert_array_equal(side[0][name], after[0][name])
        np.testing.assert_array_equal(side[1][name], after[1][name])
    for name in NETWORKS:
        assert_raw_agreement(plain[name], served[name], images)
    # The SVM is served as it is: exactly the plain answers. The committee combines its
    # served members' calibrated answers: within 1e-4 of plain's on these tiny checkpoints.
    reference = predict_all(plain, images)
    for name in (n for n in list_detectors() if n not in NETWORKS):
        tolerance = 1e-4 if get_spec(name).is_committee else 0
        np.testing.assert_allclose(side[0][name], reference[0][name], atol=tolerance, rtol=0, err_msg=name)

    # A batch large enough is also cut into one part per thread; the rows come back in order.
    many = np.random.default_rng(2).integers(0, 256, (2 * MIN_PART + 3, 32, 32, 3), dtype=np.uint8)
    with ThreadPoolExecutor(2) as executor:
        split = predict_all(served, many, executor, workers=2)
    whole = predict_all(served, many)
    assert "ValueError: no weights" in split[2]["broken"]
    for name in list_detectors():
        np.testing.assert_allclose(split[0][name], whole[0][name], atol=1e-6, rtol=0)


class SlowBrightness(Detector):
    """P(FAKE) from the mean brightness; each call takes a while, so callers pile up behind it."""

    def __init__(self, name: str):
        super().__init__(name, rule=DecisionRule.at(0.5))
        self.calls: list[int] = []

    def single_view(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        time.sleep(0.2)
        fake = batch.mean(axis=(1, 2, 3)) / 255
        return np.stack([fake, 1 - fake], axis=1)


@pytest.mark.parametrize(
    "max_images, sizes",
    [(256, (1, 3, 1, 2, 1, 1, 4, 1)), (4, (1, 3, 2, 1, 2, 1, 4, 1))],
    ids=["room-for-all", "at-most-four-per-pass"],
)
def test_requests_arriving_together_share_passes_and_keep_their_answers(max_images, sizes):
    detector = SlowBrightness("slow")
    shared = SharedPasses({"slow": detector}, max_images=max_images)
    rng = np.random.default_rng(0)
    requests = [rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in sizes]
    answers: dict[int, tuple] = {}

    def ask(i: int) -> None:
        answers[i] = shared.predict(requests[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
        time.sleep(0.01)  # the first request starts a pass; the others arrive while it runs
    for thread in threads:
        thread.join()
    assert shared.passes < len(requests)  # requests shared passes...
    assert sum(detector.calls) == sum(len(r) for r in requests)  # ...and each image was seen once...
    assert (
        max(detector.calls) <= max_images
    )  # ...in passes no larger than allowed (a request that would overfill one waits)
    for i, batch in enumerate(requests):
        probas, verdicts, errors = answers[i]
        alone = predict_all({"slow": detector}, batch)
        np.testing.assert_array_equal(probas["slow"], alone[0]["slow"])
        np.testing.assert_array_equal(verdicts["slow"], alone[1]["slow"])
        assert errors == {}


def test_an_empty_request_needs_no_pass():
    shared = SharedPasses({"slow": SlowBrightness("slow")})
    probas, _verdicts, errors = shared.predict(np.zeros((0, 32, 32, 3), np.uint8))
    assert probas["slow"].shape == (0, 2) and errors == {} and shared.passes == 0
