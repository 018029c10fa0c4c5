"""Whether an image is like the ones the detectors learned (CIFAR-10 photos, Stable Diffusion 1.4 in their style).

A logistic outlier score on native-32's penultimate features, their Mahalanobis distance to the training
split and a few pixel statistics; fitted and cut by ``python -m train.scope_fit`` (docs/scope.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, file_sha256, read_safetensors, save_safetensors
from .decision import ScopeRule
from .detector import Detector, TorchDetector
from .images import LUMA
from .labels import OUT_OF_SCOPE  # noqa: F401  (re-exported: the verdict this module gives)
from .registry import NATIVE32, get_spec

SCOPE_FILE = "scope.safetensors"
SCOPE_REPORT = "scope.json"  # train.scope_eval's report, beside the detectors'
FEATURES_OF = NATIVE32  # the detector whose penultimate features the score reads
STATISTICS = (
    "luma mean",
    "luma std",
    "saturation mean",
    "saturation std",
    "horizontal gradient",
    "vertical gradient",
    "laplacian",
    "laplacian / gradient (log)",
    "colours used",
    "flat share",
    "channel std (log)",
)
ARRAYS = ("feature_mean", "feature_std", "class_means", "precision", "stat_mean", "stat_std", "weights")


def pixel_statistics(batch: np.ndarray) -> np.ndarray:
    """``[n, len(STATISTICS)]`` for a uint8 ``[n, 32, 32, 3]`` batch: what sets drawings and flat images apart."""
    x = batch.astype(np.float32) / 255
    luma = x @ LUMA
    saturation = x.max(-1) - x.min(-1)
    dx, dy = np.abs(np.diff(luma, axis=2)), np.abs(np.diff(luma, axis=1))
    inner = luma[:, 1:-1, 1:-1]
    lap = np.abs(4 * inner - luma[:, :-2, 1:-1] - luma[:, 2:, 1:-1] - luma[:, 1:-1, :-2] - luma[:, 1:-1, 2:])
    codes = (batch // 32).reshape(len(batch), -1, 3).astype(np.int32) @ np.array([64, 8, 1])
    colours = np.array([len(np.unique(c)) for c in codes], dtype=np.float32) / 64
    mean = lambda a: a.mean((1, 2))  # noqa: E731
    return np.stack(
        [
            mean(luma),
            luma.std((1, 2)),
            mean(saturation),
            saturation.std((1, 2)),
            mean(dx),
            mean(dy),
            mean(lap),
            np.log(mean(lap) + 1e-4) - np.log(mean(dx) + 1e-4),
            colours,
            mean(dx < 1 / 255),
            np.log(x.std((1, 2)) + 1e-3).mean(1),
        ],
        1,
    ).astype(np.float64)


@torch.inference_mode()
def penultimate(detector: TorchDetector, batch: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """What the network's last linear layer reads, per image (one view, no mirror); without hooks, so
    requests running at the same time may share the module."""
    body, last = detector.module[:-1], detector.module[-1]
    if not isinstance(last, torch.nn.Linear):
        raise TypeError(f"{detector.name} does not end in a linear layer")
    prepare = detector.preprocessing.eval_transform
    out = [
        body(prepare(torch.as_tensor(batch[start : start + batch_size]))).float().numpy()
        for start in range(0, len(batch), batch_size)
    ]
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, last.in_features))


@dataclass(frozen=True)
class ScopeAnswer:
    """One image's scope: its score, the cut, and whether it is in scope."""

    score: float
    cut: float
    in_scope: bool

    def mapping(self) -> dict[str, float | bool]:
        return {"in_scope": self.in_scope, "scope_score": self.score, "scope_cut": self.cut}


@dataclass(frozen=True)
class ScopeModel:
    """The fitted state: standardisation, Mahalanobis statistics and the logistic weights."""

    feature_mean: np.ndarray
    feature_std: np.ndarray
    class_means: np.ndarray  # [2, d], standardised features
    precision: np.ndarray  # [d, d], inverse of the shared covariance
    stat_mean: np.ndarray
    stat_std: np.ndarray
    weights: np.ndarray  # [d + len(STATISTICS) + 1]; the last one weighs the log Mahalanobis distance
    bias: float
    rule: ScopeRule
    metadata: dict

    def mahalanobis(self, standardised: np.ndarray) -> np.ndarray:
        """Squared distance to the nearer class mean (Lee et al. 2018, one shared covariance)."""
        d = [np.einsum("ij,jk,ik->i", standardised - m, self.precision, standardised - m) for m in self.class_means]
        return np.min(d, axis=0)

    def inputs(self, features: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """What the logistic weights read: standardised features, statistics and log distance."""
        z = (features - self.feature_mean) / self.feature_std
        stats = (pixel_statistics(batch) - self.stat_mean) / self.stat_std
        return np.c_[z, stats, np.log1p(self.mahalanobis(z))]

    def score(self, features: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """The out-of-scope score (a log-odds): higher is less like CIFAKE."""
        return self.inputs(features, batch) @ self.weights + self.bias

    def save(self, path: str | Path) -> Path:
        tensors = {name: torch.as_tensor(np.asarray(getattr(self, name), dtype=np.float64)) for name in ARRAYS}
        tensors["bias"] = torch.tensor([self.bias], dtype=torch.float64)
        rule = {"cut": self.rule.cut, "target_share": self.rule.target_share}
        return save_safetensors(path, tensors, {**self.metadata, "rule": rule})

    @classmethod
    def load(cls, path: str | Path) -> ScopeModel:
        tensors, metadata = read_safetensors(path)
        try:
            arrays = {name: tensors[name].numpy() for name in ARRAYS}
            rule = ScopeRule(float(metadata["rule"]["cut"]), float(metadata["rule"]["target_share"]))
            bias = float(tensors["bias"][0])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path} is not a scope file ({type(error).__name__}: {error})") from error
        return cls(**arrays, bias=bias, rule=rule, metadata=metadata)


class ScopeScorer:
    """The fitted score on the detector whose features it reads; refuses another checkpoint than its own."""

    def __init__(
        self, model: ScopeModel, detector: TorchDetector, checkpoint_sha256: str | None = None, path: Path | None = None
    ):
        recorded = model.metadata.get("checkpoint_sha256")
        if checkpoint_sha256 is not None and recorded != checkpoint_sha256:
            raise CheckpointError(
                f"the scope score was fitted on {FEATURES_OF} {str(recorded)[:12]}, "
                f"not on the loaded {checkpoint_sha256[:12]}: refit it (python -m train.scope_fit)"
            )
        self.model, self.detector, self.path = model, detector, path

    @property
    def rule(self) -> ScopeRule:
        return self.model.rule

    def score(self, batch: np.ndarray) -> np.ndarray:
        return self.model.score(penultimate(self.detector, batch), batch)

    def answers(self, batch: np.ndarray) -> list[ScopeAnswer]:
        scores = self.score(batch)
        inside = self.rule.in_scope(scores)
        return [ScopeAnswer(round(float(s), 6), self.rule.cut, bool(i)) for s, i in zip(scores, inside)]


def load_scope(checkpoint_dir: str | Path, detector: TorchDetector) -> ScopeScorer:
    """The scope score stored beside the checkpoints, tied to ``detector``'s checkpoint file there."""
    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / SCOPE_FILE
    sha256 = file_sha256(Path(checkpoint_dir) / get_spec(FEATURES_OF).checkpoint_file)
    return ScopeScorer(ScopeModel.load(path), detector, sha256, path)


def try_load_scope(
    checkpoint_dir: str | Path, loaded: Mapping[str, Detector] | None = None
) -> tuple[ScopeScorer | None, str | None]:
    """The scope score, on ``loaded``'s native-32 where it is there; else None and why (the detectors work
    without it)."""
    from .registry import load_detector

    try:
        detector = (loaded or {}).get(FEATURES_OF) or load_detector(FEATURES_OF, checkpoint_dir)
        return load_scope(checkpoint_dir, detector), None
    except Exception as error:  # a missing, stale or corrupt file: say so, answer without it
        return None, f"no scope score: {type(error).__name__}: {error}"
