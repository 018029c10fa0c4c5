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

from .calibration import called_fake
from .checkpoint import CheckpointError, atomic_write, read_safetensors, require_file, save_safetensors
from .decision import SINGLE_VIEW, DecisionRule, Views
from .images import mirror, stack_images
from .labels import CLASSES, FAKE
from .preprocessing import Preprocessing


def check_recorded(path: str | Path, name: str, metadata: dict) -> None:
    """Refuse a checkpoint that does not record itself as detector ``name`` with its classes in
    the order of :data:`CLASSES`: every detector's probability columns are read in that order,
    so another would swap P(REAL) and P(FAKE) without a sign."""
    if metadata.get("detector") != name:
        raise CheckpointError(f"{path} holds the detector {metadata.get('detector')!r}, not {name!r}")
    if metadata.get("classes") != list(CLASSES):
        raise CheckpointError(
            f"{path} records its classes as {metadata.get('classes')!r}, not {list(CLASSES)!r}: "
            "its probability columns would be read swapped"
        )


class Detector:
    """Base class: PIL images in, class probabilities out.

    ``views`` and ``rule`` are parsed from the checkpoint at load; a detector being trained has
    the single view and no rule until :mod:`train.validation` chooses them."""

    classes_ = np.array(CLASSES)
    records_views = True  # its checkpoint records its test-time views (a committee's members choose their own)

    def __init__(
        self, name: str, metadata: dict | None = None, views: Views = SINGLE_VIEW, rule: DecisionRule | None = None
    ):
        self.name = name
        self.metadata = metadata or {}
        self.views = views
        self.rule = rule

    def predict_proba(self, images: Sequence[Image.Image] | Image.Image) -> np.ndarray:
        """``[n, len(classes_)]`` calibrated probabilities for PIL images of any size and mode."""
        return self.probabilities(stack_images(images))

    def predict(self, images: Sequence[Image.Image] | Image.Image) -> np.ndarray:
        """The class in :attr:`classes_` for each image, at the threshold chosen on validation."""
        fake = called_fake(self.predict_proba(images)[:, FAKE], self.decision_rule.threshold)
        return np.where(fake, self.classes_[FAKE], self.classes_[1 - FAKE])

    def verdicts(self, images: Sequence[Image.Image] | Image.Image) -> np.ndarray:
        """FAKE, REAL or UNSURE (a :class:`Verdict`) for each image: :meth:`decide` on its probabilities."""
        return self.decide(self.predict_proba(images))

    @property
    def decision_rule(self) -> DecisionRule:
        if self.rule is None:
            raise RuntimeError(
                f"{self.name} has no decision rule yet: train.validation chooses it on the validation split"
            )
        return self.rule

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """FAKE, REAL or UNSURE for each row of calibrated ``proba`` (:meth:`DecisionRule.verdicts`)."""
        return self.decision_rule.verdicts(np.asarray(proba)[:, FAKE])

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for a uint8 ``[n, 32, 32, 3]`` batch (CIFAKE's own format)."""
        return self.calibrate(self.uncalibrated(batch))

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        """``[n, 2]`` uncalibrated probabilities -> calibrated ones (unchanged before validation)."""
        proba = np.array(proba, dtype=np.float64)
        if self.rule is not None:
            proba[:, FAKE] = self.rule.calibration.apply(proba[:, FAKE])
            proba[:, 1 - FAKE] = 1 - proba[:, FAKE]
        return proba

    def uncalibrated(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities before calibration, over the :attr:`views` chosen on validation."""
        if not self.views.mirror_average:
            return self.single_view(batch)
        # Both views in one call: for a few images a network's cost is mostly per call, not per
        # image, so one forward pass of 2n images costs far less than two of n.
        both = self.single_view(np.concatenate([batch, mirror(batch)]))
        return (both[: len(batch)] + both[len(batch) :]) / 2

    def single_view(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for the batch exactly as given (one view, no mirror averaging)."""
        raise NotImplementedError

    @classmethod
    def parse_rule(cls, path: str | Path, metadata: dict) -> tuple[Views, DecisionRule]:
        """The views and decision rule a checkpoint records; a missing one is refused by name."""
        views = Views.from_metadata(path, metadata) if cls.records_views else Views()
        return views, DecisionRule.from_metadata(path, metadata)

    def prepare_for_serving(self, threads: int | None = None) -> Detector:
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

    def __init__(
        self,
        name: str,
        module: nn.Module,
        preprocessing: Preprocessing,
        metadata: dict | None = None,
        views: Views = SINGLE_VIEW,
        rule: DecisionRule | None = None,
    ):
        super().__init__(name, metadata, views, rule)
        self.module = module.eval()
        self.preprocessing = preprocessing
        self.network = None  # set by prepare_for_serving: the module's forward pass in ONNX Runtime

    @torch.inference_mode()
    def single_view(self, batch: np.ndarray, batch_size: int = 500) -> np.ndarray:
        self.module.eval()
        device = next(self.module.parameters()).device
        out = []
        for start in range(0, len(batch), batch_size):
            x = self.preprocessing.eval_transform(torch.as_tensor(batch[start : start + batch_size]).to(device))
            logits = self.network(x) if self.network is not None else self.module(x)
            out.append(torch.softmax(logits.float(), dim=1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)))

    def prepare_for_serving(self, threads: int | None = None, spinning: bool = False) -> TorchDetector:
        """``spinning``: ONNX Runtime's threads busy-wait between operators (see ``OnnxNetwork``)."""
        from .onnx_runtime import OnnxNetwork

        self.network = OnnxNetwork(
            self.module.cpu(), self.preprocessing.channels, self.preprocessing.crop, threads, spinning
        )
        return self

    def save(self, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Store weights in ``dtype`` (half precision halves the file) with the metadata."""
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in self.module.state_dict().items()}
        metadata = {**self.metadata, "preprocessing": self.preprocessing.to_dict(), "stored_dtype": str(dtype)}
        self.metadata = metadata
        return save_safetensors(path, state, metadata)

    @classmethod
    def load(cls, path: str | Path, name: str, build, validated: bool = True) -> TorchDetector:
        """``validated=False``: one whose decision rule is yet to be chosen (before or for its validation)."""
        state, metadata = read_safetensors(path)
        check_recorded(path, name, metadata)
        views, rule = cls.parse_rule(path, metadata) if validated else (Views(), None)
        try:
            preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{path} does not describe its preprocessing ({type(error).__name__}: {error})"
            ) from error
        # Built on the meta device, without drawing initial weights the file replaces (VGG-16's
        # discarded ImageNet classifier alone took 2 s to draw), then given the file's tensors.
        with torch.device("meta"):
            module = build(preprocessing)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        try:
            module.load_state_dict(state, assign=True)
        except RuntimeError as error:
            raise CheckpointError(f"{path} does not hold {name} weights: {error}") from error
        if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            raise CheckpointError(f"{path} does not hold all of {name}'s tensors")
        return cls(name, module, preprocessing, metadata, views, rule)


class SklearnDetector(Detector):
    """A scikit-learn estimator over flattened uint8 images, stored with skops (no pickle)."""

    def __init__(
        self,
        name: str,
        estimator,
        metadata: dict | None = None,
        views: Views = SINGLE_VIEW,
        rule: DecisionRule | None = None,
    ):
        super().__init__(name, metadata, views, rule)
        self.estimator = estimator

    def single_view(self, batch: np.ndarray) -> np.ndarray:
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
    def load(cls, path: str | Path, name: str, trusted_types: Sequence[str], validated: bool = True) -> SklearnDetector:
        """Load refusing any type outside ``trusted_types`` (skops never runs pickled code);
        ``validated``: as :meth:`TorchDetector.load`."""
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
        return cls(name, estimator, metadata, *(cls.parse_rule(path, metadata) if validated else (Views(), None)))
