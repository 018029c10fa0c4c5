"""The interface every detector answers, and its two implementations.

Like a scikit-learn classifier, a detector has ``classes_`` and ``predict_proba(images)``;
unlike one, it takes PIL images of any size and mode and owns all of its preprocessing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .calibration import Calibration, UnsureBand, calibration_from_metadata, called_fake
from .checkpoint import CheckpointError, atomic_write, read_safetensors, require_file, save_safetensors
from .images import mirror, stack_images
from .labels import CLASSES, FAKE, UNSURE
from .preprocessing import Preprocessing


def check_recorded(path: str | Path, name: str, metadata: dict) -> None:
    """Refuse a checkpoint that does not record itself as detector ``name`` with its classes in
    the order of :data:`CLASSES`: every detector's probability columns are read in that order,
    so another would swap P(REAL) and P(FAKE) without a sign."""
    if metadata.get("detector") != name:
        raise CheckpointError(f"{path} holds the detector {metadata.get('detector')!r}, not {name!r}")
    if metadata.get("classes") != list(CLASSES):
        raise CheckpointError(f"{path} records its classes as {metadata.get('classes')!r}, not {list(CLASSES)!r}: "
                              "its probability columns would be read swapped")


class Detector:
    """Base class: PIL images in, class probabilities out."""

    classes_ = np.array(CLASSES)

    def __init__(self, name: str, metadata: dict | None = None):
        self.name = name
        self.metadata = metadata or {}

    @property
    def threshold(self) -> float:
        """P(FAKE) at or above which an image is called FAKE (chosen on validation at training)."""
        return float(self.metadata.get("threshold", {}).get("value", 0.5))

    def predict_proba(self, images: Sequence[Image.Image] | Image.Image) -> np.ndarray:
        """``[n, len(classes_)]`` probabilities for PIL images of any size and mode."""
        return self.predict_proba_arrays(stack_images(images))

    def predict(self, images: Sequence[Image.Image] | Image.Image) -> np.ndarray:
        """The verdict for each image: FAKE, REAL or UNSURE (:meth:`decide`); UNSURE is not one
        of :attr:`classes_`."""
        return self.decide(self.predict_proba(images))

    @property
    def calibration(self) -> Calibration:
        """How raw probabilities become calibrated ones (fitted on validation; identity if none is recorded)."""
        return calibration_from_metadata(self.metadata)

    @property
    def unsure_band(self) -> UnsureBand | None:
        """Where the detector answers UNSURE (chosen on validation); None: it always decides."""
        band = self.metadata.get("unsure")
        return UnsureBand(band["low"], band["high"], band["confidence"], band["target_accuracy"]) if band else None

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """FAKE, REAL or UNSURE for each row of (calibrated) ``proba``: the one rule for a verdict."""
        p = np.asarray(proba)[:, FAKE]
        verdicts = np.where(called_fake(p, self.threshold), self.classes_[FAKE], self.classes_[1 - FAKE]).astype(object)
        if (band := self.unsure_band) is not None:
            verdicts[~band.decides(p)] = UNSURE
        return verdicts.astype(str)

    @property
    def averages_mirror(self) -> bool:
        """Whether probabilities are averaged over each image and its left-right mirror: a
        choice made on validation at training time (``train.validation.record_validation``)."""
        return bool(self.metadata.get("test_time", {}).get("mirror_average", False))

    def predict_proba_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for a uint8 ``[n, 32, 32, 3]`` batch (CIFAKE's own format)."""
        return self.calibrate(self.predict_proba_raw(batch))

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        """``[n, 2]`` raw probabilities -> calibrated ones (:attr:`calibration`)."""
        proba = np.array(proba, dtype=np.float64)
        proba[:, FAKE] = self.calibration.apply(proba[:, FAKE])
        proba[:, 1 - FAKE] = 1 - proba[:, FAKE]
        return proba

    def predict_proba_raw(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities before calibration, over the views chosen on validation."""
        if not self.averages_mirror:
            return self.predict_proba_view(batch)
        # Both views in one call: for a few images a network's cost is mostly per call, not per
        # image, so one forward pass of 2n images costs far less than two of n.
        both = self.predict_proba_view(np.concatenate([batch, mirror(batch)]))
        return (both[: len(batch)] + both[len(batch) :]) / 2

    def predict_proba_view(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for the batch exactly as given (one view, no mirror averaging)."""
        raise NotImplementedError

    def prepare_for_serving(self, threads: int | None = None) -> "Detector":
        """Switch to the fastest way of answering that gives the same probabilities before
        calibration (within ``onnx_runtime.RAW_TOLERANCE``; calibrated ones can differ more where
        an isotonic map is steep, see ``cifake_models.onnx_runtime``); for the app and
        ``cifake-score``, never for training or evaluation. ``threads``:
        how many the detector computes on (default: torch's count; scikit-learn's BLAS threads
        are the process's: ``cifake_models.serving.side_by_side``)."""
        return self

    def save(self, path: str | Path) -> Path:
        raise NotImplementedError


class TorchDetector(Detector):
    """A torch network and the :class:`Preprocessing` it was trained with."""

    def __init__(self, name: str, module: nn.Module, preprocessing: Preprocessing, metadata: dict | None = None):
        super().__init__(name, metadata)
        self.module = module.eval()
        self.preprocessing = preprocessing
        self.network = None  # set by prepare_for_serving: the module's forward pass in ONNX Runtime

    @torch.inference_mode()
    def predict_proba_view(self, batch: np.ndarray, batch_size: int = 500) -> np.ndarray:
        self.module.eval()
        device = next(self.module.parameters()).device
        out = []
        for start in range(0, len(batch), batch_size):
            x = self.preprocessing.eval_transform(torch.as_tensor(batch[start : start + batch_size]).to(device))
            logits = self.network(x) if self.network is not None else self.module(x)
            out.append(torch.softmax(logits.float(), dim=1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)))

    def prepare_for_serving(self, threads: int | None = None, spinning: bool | None = None) -> "TorchDetector":
        """``spinning``: ONNX Runtime's busy-waiting threads (default ``onnx_runtime.SPINNING``)."""
        from .onnx_runtime import OnnxNetwork

        self.network = OnnxNetwork(self.module.cpu(), self.preprocessing.channels, self.preprocessing.crop, threads, spinning)
        return self

    def save(self, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Store weights in ``dtype`` (half precision halves the file) with the metadata."""
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in self.module.state_dict().items()}
        metadata = {**self.metadata, "preprocessing": self.preprocessing.to_dict(), "stored_dtype": str(dtype)}
        self.metadata = metadata
        return save_safetensors(path, state, metadata)

    @classmethod
    def load(cls, path: str | Path, name: str, build) -> "TorchDetector":
        state, metadata = read_safetensors(path)
        check_recorded(path, name, metadata)
        try:
            preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path} does not describe its preprocessing ({type(error).__name__}: {error})") from error
        module = build(preprocessing)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        try:
            module.load_state_dict(state)
        except RuntimeError as error:
            raise CheckpointError(f"{path} does not hold {name} weights: {error}") from error
        return cls(name, module, preprocessing, metadata)


class SklearnDetector(Detector):
    """A scikit-learn estimator over flattened uint8 images, stored with skops (no pickle)."""

    def __init__(self, name: str, estimator, metadata: dict | None = None):
        super().__init__(name, metadata)
        self.estimator = estimator

    def predict_proba_view(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, len(self.classes_)))
        proba = self.estimator.predict_proba(batch.reshape(len(batch), -1))
        # The estimator's classes are label indices; put columns in our classes_ order.
        return proba[:, np.argsort(self.estimator.classes_)]

    def save(self, path: str | Path) -> Path:
        import skops.io

        payload = {"estimator": self.estimator, "metadata_json": json.dumps(self.metadata, allow_nan=False)}
        return atomic_write(path, lambda tmp: skops.io.dump(payload, tmp))

    @classmethod
    def load(cls, path: str | Path, name: str, trusted_types: Sequence[str]) -> "SklearnDetector":
        """Load refusing any type outside ``trusted_types`` (skops never runs pickled code)."""
        import skops.io

        path = Path(path)
        require_file(path)
        try:
            untrusted = skops.io.get_untrusted_types(file=path)
            unexpected = sorted(set(untrusted) - set(trusted_types))
            if unexpected:
                raise CheckpointError(f"{path} holds types this project does not trust: {unexpected}")
            payload = skops.io.load(path, trusted=untrusted)
            metadata = json.loads(payload["metadata_json"])
            estimator = payload["estimator"]
        except CheckpointError:
            raise
        except Exception as error:  # skops raises many kinds (zip, json, type) on a bad file
            raise CheckpointError(f"{path} is not a valid checkpoint ({type(error).__name__}: {error})") from error
        check_recorded(path, name, metadata)
        return cls(name, estimator, metadata)

