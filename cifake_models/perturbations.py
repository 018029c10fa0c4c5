"""What happens to an image on its way to the app, as data: the robustness suite and the
training augmentation that prepares the networks for it.

Each family is one function ``(image, strength) -> image``, brought back to 32x32 by the app's own
conversion; :data:`SUITE` lists the strengths the evaluation scores, :data:`TRAINING_RANGES` the
ranges training draws from. A new perturbation is one line in each.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

from .images import SIZE, to_cifake_array


def _jpeg(image: Image.Image, quality: float) -> Image.Image:
    """Re-saved as JPEG at this quality (Pillow's default 4:2:0 chroma, like CIFAKE's own files)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(round(quality)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _enlarge(image: Image.Image, factor: float) -> Image.Image:
    """Enlarged by ``factor`` with bicubic interpolation, as an editor or a phone would upscale."""
    side = max(SIZE + 1, round(SIZE * factor))
    return image.resize((side, side), Image.Resampling.BICUBIC)


def _downscale(image: Image.Image, side: float) -> Image.Image:
    """Shrunk to ``side`` pixels (antialiased) and enlarged back to 32: a thumbnail round trip."""
    side = int(round(side))
    return image.resize((side, side), Image.Resampling.BICUBIC, reducing_gap=None).resize(
        (SIZE, SIZE), Image.Resampling.BICUBIC
    )


def _blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur; Pillow's radius is the standard deviation in pixels."""
    return image.filter(ImageFilter.GaussianBlur(float(sigma)))


def _shift(image: Image.Image, pixels: float) -> Image.Image:
    """Moved ``pixels`` right and down, the uncovered edge filled by reflection: no resampling."""
    k = int(round(pixels))
    padded = np.pad(np.asarray(image), ((k, 0), (k, 0), (0, 0)), mode="reflect")
    return Image.fromarray(np.ascontiguousarray(padded[:SIZE, :SIZE]))


def _crop(image: Image.Image, pixels: float) -> Image.Image:
    """``pixels`` cut from every border: the app enlarges what is left back to 32x32."""
    k = int(round(pixels))
    return image.crop((k, k, image.width - k, image.height - k))


@dataclass(frozen=True)
class Family:
    change: Callable[[Image.Image, float], Image.Image]
    strength: str  # what the strength means, for axis titles
    unchanged: float  # the strength at which the image would stay as it is (plots start there)


FAMILIES: dict[str, Family] = {
    "jpeg": Family(_jpeg, "JPEG quality", 100),
    "enlarge": Family(_enlarge, "enlarged by (bicubic), then the app's downscale", 1),
    "downscale": Family(_downscale, "shrunk to this many pixels and back to 32", SIZE),
    "blur": Family(_blur, "Gaussian blur sigma (pixels)", 0),
    "shift": Family(_shift, "shifted by (pixels, reflect-filled)", 0),
    "crop": Family(_crop, "pixels cut from each border, then the app's resize", 0),
}


@dataclass(frozen=True)
class Perturbation:
    """One family at one strength, e.g. ``Perturbation("enlarge", 8)``."""

    family: str
    strength: float

    @property
    def name(self) -> str:
        return f"{self.family} {self.strength:g}"

    def upload(self, image: Image.Image) -> Image.Image:
        """The file a person would upload after this happened to ``image``."""
        return FAMILIES[self.family].change(image, self.strength)

    def apply(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``[N, 32, 32, 3]`` in, the app's 32x32 view of each perturbed upload out."""
        return (
            np.stack([to_cifake_array(self.upload(Image.fromarray(image)))[0] for image in batch])
            if len(batch)
            else batch.copy()
        )


# The evaluation's suite: what happens to images on the way to the app, at named strengths.
SUITE: tuple[Perturbation, ...] = (
    *(Perturbation("jpeg", q) for q in (90, 70, 50)),
    *(Perturbation("enlarge", f) for f in (2, 4, 8)),
    *(Perturbation("downscale", s) for s in (28, 24, 16)),
    *(Perturbation("blur", s) for s in (0.5, 1.0)),
    *(Perturbation("shift", k) for k in (1, 2)),
    *(Perturbation("crop", k) for k in (1, 2)),
)

# Training draws a family (uniformly unless a recipe weights them), then a strength uniformly from
# its range (integers where the family takes whole pixels or a quality). The ranges cover the
# suite's strengths.
TRAINING_RANGES: dict[str, tuple[float, float]] = {
    "jpeg": (50, 95),
    "enlarge": (1.5, 8.0),
    "downscale": (16, 28),
    "blur": (0.3, 1.0),
    "shift": (1, 3),
    "crop": (1, 3),
}
_WHOLE = {"jpeg", "downscale", "shift", "crop"}
# The same ranges as (family, low, high) triples: the form recipes and checkpoints record.
UPLOAD_RANGES: tuple[tuple[str, float, float], ...] = tuple(
    (f, low, high) for f, (low, high) in TRAINING_RANGES.items()
)


def ranges_of(triples: tuple[tuple[str, float, float], ...]) -> dict[str, tuple[float, float]]:
    """Recorded ``(family, low, high)`` triples as ``{family: (low, high)}``, the form ``random_uploads`` takes."""
    return {family: (low, high) for family, low, high in triples}


def weights_of(pairs: Iterable[tuple[str, float]], families: Iterable[str] = ()) -> dict[str, float]:
    """Recorded ``(family, weight)`` pairs as ``{family: weight}``, the form ``random_uploads``
    takes; each of ``families`` not among them weighs 1, the uniform draw's weight."""
    return {family: 1.0 for family in families} | {family: float(weight) for family, weight in pairs}


def random_uploads(
    batch: torch.Tensor,
    probability: float,
    generator: torch.Generator,
    ranges: dict[str, tuple[float, float]] = TRAINING_RANGES,
    weights: dict[str, float] | None = None,
) -> torch.Tensor:
    """Pass each image of a uint8 NHWC batch, with ``probability``, through one upload-like
    change drawn from ``ranges`` (a family in proportion to its weight in ``weights``, 1 where
    not given, then a strength uniformly in its range); the rest stay as they are (clean images
    are still seen). Draws come from ``generator``, so a seeded epoch replays exactly."""
    families = list(ranges)
    # Cumulative weights: a draw u in [0, 1) picks the family whose share of the total holds
    # u * total. With every weight 1 this is int(u * len(families)), the uniform draw.
    weight = weights_of((weights or {}).items(), families)
    cumulative = np.cumsum([weight[family] for family in families])
    total = float(cumulative[-1])
    if not total > 0:
        raise ValueError(f"upload-like changes weighted {weights}: no family of {families} can be drawn")
    n = len(batch)
    draws = torch.rand(n, 3, generator=generator, device=generator.device).cpu().numpy()
    chosen = np.flatnonzero(draws[:, 0] < probability)
    if not len(chosen):
        return batch
    images = batch.cpu().numpy()
    out = images.copy()
    for i in chosen:
        family = families[min(int(np.searchsorted(cumulative, draws[i, 1] * total, side="right")), len(families) - 1)]
        low, high = ranges[family]
        strength = low + (high - low) * draws[i, 2]
        if family in _WHOLE:
            strength = round(strength)
        strength = float(strength)
        out[i] = Perturbation(family, strength).apply(images[i : i + 1])[0]
    return torch.as_tensor(out).to(batch.device)
