"""From any PIL image to the 32x32 RGB uint8 array every detector starts from.

CIFAKE images are 32x32 RGB, so a user's image is brought to that form the way the paper's
test transform does (``Resize(32)`` on the shorter side, then a centre crop), after the
conversions a photo may need. Each conversion is reported, so the app can say what it did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

SIZE = 32
# ITU-R 601-2 luma, the weights of PIL's "L" mode; used wherever we go to grayscale.
EXIF_ORIENTATION = 0x0112
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Orient and convert ``image`` to 8-bit RGB; returns it and the conversions made."""
    notes = []
    if getattr(image, "is_animated", False):
        image.seek(0)
        notes.append(f"animated ({image.n_frames} frames): used the first frame")
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
        notes.append("rotated upright from its EXIF orientation")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit integer or floating-point grayscale: the range scaled into 8 bits instead of
        # clipped at 255. Integers keep 0 as black (a 16-bit photo's range starts there); floats,
        # and integers below 0 (mode I is signed), span their own range.
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
        low = pixels.min() if mode == "F" else min(pixels.min(), 0.0)
        scaled = (pixels - low) / ((pixels.max() - low) or 1.0) * 255.0
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
        notes.append("floating-point pixels rescaled to 8 bits" if mode == "F" else f"{mode} (high bit depth) scaled to 8 bits")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels have no colour of their own: show them over white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
        notes.append("transparency flattened onto white")
    if image.mode != "RGB":
        if mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
            notes.append(f"converted from {image.mode} to RGB")
        image = image.convert("RGB")
    return image, notes


def to_cifake_array(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Return ``image`` as a uint8 ``[32, 32, 3]`` array, as CIFAKE images are, and the notes."""
    image, notes = to_rgb(image)
    width, height = image.size
    if (width, height) != (SIZE, SIZE):
        scale = SIZE / min(width, height)
        new_size = (max(SIZE, round(width * scale)), max(SIZE, round(height * scale)))
        image = image.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=None)
        left, top = (new_size[0] - SIZE) // 2, (new_size[1] - SIZE) // 2
        image = image.crop((left, top, left + SIZE, top + SIZE))
        notes.append(f"resized from {width}x{height} to 32x32 (shorter side to 32, centre crop)")
    return np.asarray(image, dtype=np.uint8), notes


def stack_images(images: Sequence[Image.Image]) -> np.ndarray:
    """Stack PIL images into a uint8 ``[N, 32, 32, 3]`` batch."""
    if isinstance(images, Image.Image):
        images = [images]
    if not images:
        return np.zeros((0, SIZE, SIZE, 3), dtype=np.uint8)
    return np.stack([to_cifake_array(image)[0] for image in images])


def mirror(batch: np.ndarray) -> np.ndarray:
    """A uint8 ``[N, H, W, C]`` batch flipped left to right, as a contiguous copy (torch needs one)."""
    return np.ascontiguousarray(batch[:, :, ::-1])


def grayscale(batch: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` to float32 ``[N, H, W]`` luma in [0, 1]."""
    return (batch.astype(np.float32) @ LUMA) / 255.0
