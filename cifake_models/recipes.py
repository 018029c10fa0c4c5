"""How each kind of detector is trained: the recipes the registry names, and their choices."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from .perturbations import UPLOAD_RANGES
from .preprocessing import Preprocessing

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
# "step": the paper's StepLR, stepped per epoch; "onecycle": Smith & Topor 2019's one-cycle
# policy (warm-up to ``lr``, then cosine annealing), stepped per batch, as fast CIFAR training uses it.
SCHEDULES = ("step", "onecycle")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TorchRecipe:
    """How a network is trained. The registry's values are the paper's."""

    epochs: int = 25
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"  # a key of OPTIMIZERS
    weight_decay: float = 0.0
    schedule: str = "step"  # a key of SCHEDULES
    step_size: int | None = 10  # "step": StepLR period in epochs; None keeps the rate constant
    gamma: float = 0.1
    label_smoothing: float = 0.0
    # "auto": bf16 autocast and channels-last on a GPU, float32 on a CPU; "bf16" asks for them on
    # a CPU too (faster where the CPU has bf16 instructions, e.g. AVX512-BF16).
    precision: str = "auto"
    images_per_epoch: int | None = None  # a fresh random subset each epoch; None: all of train
    seed: int = 0
    # Knowledge distillation (Hinton, Vinyals & Dean 2015): this share of the loss is the KL
    # divergence from a teacher's probabilities, softened by the temperature, on the same
    # augmented images (the teacher checkpoint is named in the metadata); 0 is off.
    distill_weight: float = 0.0
    distill_temperature: float = 1.0
    # An exponential moving average of the weights (and batch-norm statistics), updated after every
    # step with this decay, is what is validated and shipped; 0 is off (the weights as trained).
    ema: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SvmRecipe:
    """The registry's values follow the paper (grayscale HOG, SVC's default C and gamma)."""

    architecture: ClassVar[str] = (
        "HOG -> StandardScaler -> RBF expansion over Nystroem landmarks (linear SVM) -> sigmoid"
    )

    orientations: int = 9
    pixels_per_cell: tuple[int, ...] = (8,)
    cells_per_block: int = 2
    colour: bool = False
    smoothing: tuple[float, ...] = ()  # Gaussian sigmas of smoothed copies also described (HogFeatures)
    C: float = 1.0
    gamma_scale: float = 1.0  # gamma = gamma_scale / n_features; 1 is SVC's gamma="scale"
    n_components: int = 2000  # Nystroem landmarks: the rank of the kernel approximation
    seed: int = 0
    # The share of training images passed, once before fitting, through one random upload-like
    # change (cifake_models.perturbations, as the networks' --upload-augment draws them each
    # epoch), and the (family, low, high) strength ranges drawn from; 0 is off. The SVM is
    # fitted once, so each chosen image is replaced by one changed copy.
    upload_augment: float = 0.0
    upload_ranges: tuple[tuple[str, float, float], ...] = UPLOAD_RANGES
    upload_weights: tuple[tuple[str, float], ...] = ()  # (family, weight) as the networks' Preprocessing

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CommitteeRecipe:
    """How the committee's regressions are fitted on its members' validation answers."""

    architecture: ClassVar[str] = "logistic regression on the members' logit(P(FAKE)), one fitted per subset of members"

    C: float = 1.0  # inverse L2 strength of the logistic regression (scikit-learn's C)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GpuProfile:
    """One run on one GPU standing for a network's chain of CPU stages (assets/lineage/NAME.json): more
    epochs, no stages, its shipped stage's augmentation and distillation. Untested on a GPU so far."""

    recipe: TorchRecipe
    preprocessing: Preprocessing
    teacher: str | None = None  # the detector it distils from, trained first by its own profile


def upload_ranges(**changes: tuple[float, float]) -> tuple[tuple[str, float, float], ...]:
    """The default upload-like strength ranges with ``family=(low, high)`` replacing a family's."""
    return tuple((family, *changes.get(family, (low, high))) for family, low, high in UPLOAD_RANGES)
