"""The one list of detectors. The app, the trainer, the evaluation and the tests iterate it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from . import nets
from .checkpoint import CheckpointError, read_safetensors
from .committee import CommitteeDetector
from .detector import Detector, SklearnDetector, TorchDetector
from .paths import checkpoint_dir_or_default
from .preprocessing import Preprocessing
from .recipes import CommitteeRecipe, GpuProfile, SvmRecipe, TorchRecipe, upload_ranges
from .svm import TRUSTED_TYPES

NATIVE32 = "native32"  # the network designed for 32x32, which teaches others and feeds the scope score
COMMITTEE = "committee"  # the detector that combines every other


@dataclass(frozen=True)
class PaperResult:
    """What the paper reports on the official 20,000-image test split, and how it got there."""

    accuracy: float
    roc_auc: float
    recipe: str


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    title: str
    paper: PaperResult | None  # None: a detector of this project's, not in the paper
    recipe: TorchRecipe | SvmRecipe | CommitteeRecipe
    preprocessing: Preprocessing | None = None  # None for the scikit-learn detector
    architecture: Callable[..., nn.Module] | None = None  # (weights, in_channels) -> module
    notes: str = ""
    members: tuple[str, ...] = ()  # a committee's: the detectors whose probabilities it combines
    # Whether torchvision has ImageNet weights for the architecture (``--weights imagenet``):
    # the paper's transfer-learning networks.
    imagenet_weights: bool = False
    gpu: GpuProfile | None = None  # python -m train replay --profile gpu; None: its recorded chain there too

    @property
    def is_torch(self) -> bool:
        return self.architecture is not None

    @property
    def is_committee(self) -> bool:
        return bool(self.members)

    @property
    def checkpoint_file(self) -> str:
        return f"{self.name}.skops" if isinstance(self.recipe, SvmRecipe) else f"{self.name}.safetensors"

    def build_module(self, preprocessing: Preprocessing | None = None, weights: str = "none") -> nn.Module:
        if weights != "none" and not self.imagenet_weights:
            raise ValueError(f"{self.name} has no pretrained weights; use --weights none")
        preprocessing = preprocessing or self.preprocessing
        return self.architecture(weights=weights, in_channels=preprocessing.channels)

    def stored_metadata(self, checkpoint_dir: str | Path | None = None) -> dict:
        """What the checkpoint in ``checkpoint_dir`` records of itself, without building the
        detector where the file allows it (a safetensors header; the SVM's file is loaded, as
        safely as :meth:`load` does)."""
        if isinstance(self.recipe, SvmRecipe):
            return self.load(checkpoint_dir, validated=False).metadata
        return read_safetensors(checkpoint_dir_or_default(checkpoint_dir) / self.checkpoint_file)[1]

    def load(
        self,
        checkpoint_dir: str | Path | None = None,
        loaded: Mapping[str, Detector] | None = None,
        validated: bool = True,
    ) -> Detector:
        """The detector stored in ``checkpoint_dir``. A committee takes its members from
        ``loaded`` when given (detectors already in memory, e.g. the app's), else from the same folder.
        ``validated=False`` loads one without its decision rule (to choose it again)."""
        path = checkpoint_dir_or_default(checkpoint_dir) / self.checkpoint_file
        if self.is_torch:
            return TorchDetector.load(path, self.name, self.build_module, validated)
        if self.is_committee:

            def load_member(name: str) -> Detector:
                if loaded is None:
                    return get_spec(name).load(checkpoint_dir)
                if name not in loaded:
                    raise CheckpointError(f"{name} is not loaded")
                return loaded[name]

            return CommitteeDetector.load(path, self.name, load_member, validated)
        return SklearnDetector.load(path, self.name, TRUSTED_TYPES, validated)


def rgb_only(builder: Callable[..., nn.Module], name: str | None = None) -> Callable[..., nn.Module]:
    """``builder`` as a registry architecture that refuses grayscale input; ``name`` (default:
    the builder's) is the architecture a checkpoint records."""
    name = name or builder.__name__

    def build(weights: str = "none", in_channels: int = 3) -> nn.Module:
        if in_channels != 3:
            raise ValueError(f"{name} takes RGB input")
        return builder(weights=weights)

    build.__name__ = name
    return build


def _paper_cnn(weights: str = "none", in_channels: int = 1) -> nn.Module:
    """``weights``: always "none" here (``imagenet_weights`` is off for it: DetectorSpec.build_module)."""
    return nets.paper_cnn(in_channels)


# The paper's transfer-learning pipeline, shared by its three ImageNet networks.
_TRANSFER = (
    "ImageNet weights, new 2-class head; RandomResizedCrop 24 + h-flip; "
    "test Resize 32 + CenterCrop 24; Adam 1e-3, StepLR(10, 0.1)"
)
# The GPU profiles' common recipe: one-cycle over 60 epochs where the CPU chains stepped through stages.
_GPU_RUN = TorchRecipe(epochs=60, batch_size=128, lr=1e-3, schedule="onecycle", step_size=None)
_FROM_NATIVE32 = {"distill_weight": 0.5, "distill_temperature": 1.0}
_AT_32 = (
    "Runs at 32x32, the test image as it is: five 2x poolings take a 24x24 input to zero, so the "
    "paper's 24x24 crop cannot pass through this network."
)

REGISTRY: dict[str, DetectorSpec] = {
    spec.name: spec
    for spec in (
        DetectorSpec(
            name="hog_svm",
            title="HOG + SVM",
            paper=PaperResult(0.8143, 0.8958, "grayscale 32x32, HOG, StandardScaler, RBF SVC"),
            recipe=SvmRecipe(),
            notes=(
                "RBF kernel approximated by Nystroem landmarks (how many: see the recipe) + linear SVM; "
                "Platt sigmoid on validation."
            ),
        ),
        DetectorSpec(
            name="cnn",
            title="CNN (paper)",
            paper=PaperResult(
                0.8640, 0.9347, "grayscale 32x32, conv 32@3x3, maxpool 2x2, two FC; Adam 0.01, 25 epochs, batch 64"
            ),
            recipe=TorchRecipe(epochs=25, batch_size=64, lr=0.01, step_size=None),
            preprocessing=Preprocessing(
                grayscale=True, crop=32, crop_scale=(1.0, 1.0), hflip=False, mean=(0.0,), std=(1.0,)
            ),
            architecture=_paper_cnn,
            gpu=GpuProfile(
                replace(_GPU_RUN, batch_size=64, lr=2e-3, distill_weight=0.5, distill_temperature=2.0),
                Preprocessing(
                    grayscale=True,
                    crop=32,
                    crop_scale=(1.0, 1.0),
                    hflip=False,
                    upload_augment=0.8,
                    upload_ranges=upload_ranges(downscale=(12.0, 24.0), blur=(0.8, 1.5)),
                    upload_weights=(("downscale", 2.0), ("blur", 4.0)),
                    mean=(0.0,),
                    std=(1.0,),
                ),
                teacher=NATIVE32,
            ),
        ),
        DetectorSpec(
            name="resnet50",
            title="ResNet-50",
            paper=PaperResult(0.9495, 0.9958, _TRANSFER),
            recipe=TorchRecipe(),
            preprocessing=Preprocessing(crop=24),
            architecture=rgb_only(nets.resnet50),
            imagenet_weights=True,
            gpu=GpuProfile(
                replace(_GPU_RUN, **_FROM_NATIVE32),
                Preprocessing(
                    crop=32,
                    crop_scale=(1.0, 1.0),
                    translate=4,
                    upload_augment=0.6,
                    upload_ranges=upload_ranges(downscale=(12.0, 28.0), blur=(0.7, 1.5)),
                ),
                teacher=NATIVE32,
            ),
        ),
        DetectorSpec(
            name="vgg16_bn",
            title="VGG-16 (BN)",
            paper=PaperResult(0.9599, 0.99, _TRANSFER),
            recipe=TorchRecipe(),
            preprocessing=Preprocessing(crop=32),
            architecture=rgb_only(nets.vgg16_bn),
            imagenet_weights=True,
            gpu=GpuProfile(
                replace(_GPU_RUN, **_FROM_NATIVE32),
                Preprocessing(
                    crop=32,
                    crop_scale=(1.0, 1.0),
                    upload_augment=0.6,
                    upload_ranges=upload_ranges(downscale=(12.0, 28.0), blur=(0.5, 1.5)),
                ),
                teacher=NATIVE32,
            ),
            notes=_AT_32 + " Global pooling + one linear layer replace the 4096-wide classifier.",
        ),
        DetectorSpec(
            name="densenet121",
            title="DenseNet-121",
            paper=PaperResult(0.9774, 0.9975, _TRANSFER),
            recipe=TorchRecipe(),
            preprocessing=Preprocessing(crop=32),
            architecture=rgb_only(nets.densenet121),
            imagenet_weights=True,
            gpu=GpuProfile(
                _GPU_RUN,
                Preprocessing(
                    crop=32,
                    crop_scale=(1.0, 1.0),
                    translate=4,
                    upload_augment=0.5,
                    upload_ranges=upload_ranges(blur=(0.3, 1.5)),
                ),
            ),
            notes=_AT_32,
        ),
        DetectorSpec(
            name=NATIVE32,
            title="Native-32 CNN (ours)",
            paper=None,
            recipe=TorchRecipe(
                epochs=30,
                batch_size=256,
                lr=2e-3,
                optimizer="adamw",
                weight_decay=0.05,
                schedule="onecycle",
                step_size=None,
                label_smoothing=0.1,
            ),
            preprocessing=Preprocessing(crop=32, crop_scale=(1.0, 1.0), translate=2, upload_augment=0.5),
            architecture=rgb_only(nets.native32),
            gpu=GpuProfile(
                replace(
                    _GPU_RUN,
                    epochs=60,
                    batch_size=256,
                    lr=2e-3,
                    optimizer="adamw",
                    weight_decay=0.05,
                    label_smoothing=0.1,
                ),
                Preprocessing(crop=32, crop_scale=(1.0, 1.0), translate=2, upload_augment=0.5),
            ),
            notes=(
                "Not in the paper: designed for 32x32 inputs (no early downsampling) "
                "and trained on upload-like changes."
            ),
        ),
    )
}
# The committee combines every detector above; it is trained (fitted on validation) after them.
REGISTRY[COMMITTEE] = DetectorSpec(
    name=COMMITTEE,
    title="Committee (all detectors)",
    paper=None,
    recipe=CommitteeRecipe(),
    members=tuple(REGISTRY),
    notes="Not in the paper: a logistic regression on every other detector's logit, fitted on the validation split.",
)


def list_detectors() -> list[str]:
    """Names of every registered detector, in the paper's order."""
    return list(REGISTRY)


def get_spec(name: str) -> DetectorSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(REGISTRY)}") from None


def load_detector(
    name: str, checkpoint_dir: str | Path | None = None, loaded: Mapping[str, Detector] | None = None
) -> Detector:
    """Load ``name``'s checkpoint from ``checkpoint_dir`` (default ``$CIFAKE_CHECKPOINTS``, else
    ``assets/checkpoints``);
    ``loaded``: detectors already in memory that a committee may use as its members."""
    return get_spec(name).load(checkpoint_dir, loaded)
