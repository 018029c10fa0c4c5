"""Tensor preprocessing of the neural detectors: one object describes what a network sees.

The same :class:`Preprocessing` drives evaluation (centre crop, normalisation) and training
(random resized crop, translation, horizontal flip) on uint8 batches, so training, evaluation and the app
cannot disagree. It is stored in every checkpoint and rebuilt from there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torchvision.ops import roi_align

from .images import LUMA
from .perturbations import UPLOAD_RANGES, random_uploads, ranges_of, weights_of

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a uint8 ``[N, 32, 32, 3]`` batch becomes a network's input."""

    grayscale: bool = False
    crop: int = 32  # centre crop at test time, random resized crop when training
    crop_scale: tuple[float, float] = (0.08, 1.0)  # torchvision's RandomResizedCrop default
    # Training only: shift by up to this many pixels, reflect-padded; 0 is off. The CIFAR recipe of
    # He et al. 2016 (sec. 4.2: pad 4, random 32x32 crop) moves pixels without resampling them.
    translate: int = 0
    hflip: bool = True
    # Training only: the share of images passed through one random upload-like change (resize,
    # re-compression, blur...: cifake_models.perturbations) by the app's own resize path; 0 is off.
    upload_augment: float = 0.0
    # ... and the strength range each family draws from, as (family, low, high). Checkpoints
    # that do not record it were trained with these defaults.
    upload_ranges: tuple[tuple[str, float, float], ...] = UPLOAD_RANGES
    # ... and how often each family is drawn, as (family, weight) relative to the others' 1:
    # a network weak on blur can see blur more often. Empty (and unrecorded) is uniform.
    upload_weights: tuple[tuple[str, float], ...] = ()
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def training_ranges(self) -> dict[str, tuple[float, float]]:
        """:attr:`upload_ranges` as ``{family: (low, high)}``, the form ``random_uploads`` takes."""
        return ranges_of(self.upload_ranges)

    def to_dict(self) -> dict:
        return asdict(self)

    def encoding(self) -> tuple:
        """What the values fed to the network mean (channels, scaling); crops only change their extent."""
        return self.grayscale, self.mean, self.std

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        def frozen(value):  # JSON gives lists; the dataclass holds (nested) tuples
            return tuple(frozen(v) for v in value) if isinstance(value, list) else value

        return cls(**{k: frozen(v) for k, v in data.items()})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Float RGB NCHW in [0, 1] to the network's input: luma if grayscale, then normalised."""
        if self.grayscale:
            luma = torch.as_tensor(LUMA, device=x.device).view(1, 3, 1, 1)
            x = (x * luma).sum(dim=1, keepdim=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def eval_transform(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Test-time input: the paper's ``Resize(32) + CenterCrop(crop)``; images are 32x32 already."""
        x = rgb_float(batch)
        if self.crop != x.shape[-1]:
            offset = (x.shape[-1] - self.crop) // 2
            x = x[..., offset : offset + self.crop, offset : offset + self.crop]
        return self.encode(x)

    def train_views(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training views of a uint8 batch, as float RGB NCHW in [0, 1]: an upload-like change, a
        random resized crop, a translation and a horizontal flip, drawn per image. Still RGB, so a
        distillation teacher can see the very views its student sees, through its own encoding."""
        if self.upload_augment:
            batch = random_uploads(
                batch, self.upload_augment, generator, self.training_ranges, weights_of(self.upload_weights)
            )
        x = rgb_float(batch)
        if self.crop_scale != (1.0, 1.0) or self.crop != x.shape[-1]:
            x = random_resized_crop(x, self.crop, self.crop_scale, generator)
        if self.translate:
            x = random_translate(x, self.translate, generator)
        if self.hflip:
            flip = torch.rand(len(x), generator=generator, device=generator.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
        return x

    def train_transform(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training input: :meth:`train_views`, encoded for this network."""
        return self.encode(self.train_views(batch, generator))


def rgb_float(batch: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 NHWC (numpy or tensor) to float NCHW in [0, 1]."""
    return torch.as_tensor(batch).permute(0, 3, 1, 2).float().div_(255.0)


def random_translate(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own offset in ``[-pixels, pixels]`` on both axes, reflect-padded."""
    n, _, height, width = x.shape
    padded = torch.nn.functional.pad(x, (pixels,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n, 1), generator=generator, device=generator.device).to(x.device)
    rows = dy + torch.arange(height, device=x.device)  # [n, height]
    cols = dx + torch.arange(width, device=x.device)  # [n, width]
    images = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[images, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop`` for a whole batch, a different box per image.

    Boxes are drawn as torchvision draws them (area fraction in ``scale``, log-uniform aspect
    ratio), clamped to the image instead of torchvision's ten retries, and resampled
    bilinearly with ``roi_align`` in one call (adaptive sampling: one sample per output pixel for
    a full-size box, several, averaged, where the box is shrunk, like an antialiased resize).
    """
    n, _, height, width = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)

    area = uniform(*scale) * height * width
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
    box_w = torch.sqrt(area * aspect).clamp(1.0, width)
    box_h = torch.sqrt(area / aspect).clamp(1.0, height)
    left = torch.rand(n, generator=generator, device=generator.device) * (width - box_w)
    top = torch.rand(n, generator=generator, device=generator.device) * (height - box_h)
    index = torch.arange(n, dtype=left.dtype, device=left.device)
    boxes = torch.stack([index, left, top, left + box_w, top + box_h], dim=1).to(x)
    return roi_align(x, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
