"""From any PIL image to the 32x32 RGB uint8 array every detector starts from.

CIFAKE images are 32x32 RGB, so a user's image is brought to that form the way the paper's
test transform does (``Resize(32)`` on the shorter side, then a centre crop; a very elongated
image is first cut to its middle), after the conversions a photo may need. Each conversion is
reported, so the app can say what it did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

SIZE = 32
# A longer side beyond MAX_ASPECT times the shorter is cut (centred) to that before resizing:
# the detectors see only the centre square, and a 1 x 400,000 strip would otherwise be resized
# to 32 x 12,800,000 pixels (1.2 GB) on its way there.
MAX_ASPECT = 4
EXIF_ORIENTATION = 0x0112
# ITU-R 601-2 luma, the weights of PIL's "L" mode; used wherever we go to grayscale.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # one-channel modes beyond 8 bits
WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
BAND_PIXELS = 1 << 20  # pixels of a deep (16/32-bit, float) image converted to 8 bits at a time


def to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Orient and convert ``image`` to 8-bit RGB; returns it and the conversions made, each
    named from the image's own mode."""
    notes = []
    # is_animated looks one frame ahead at most; n_frames would walk every page or frame (and an
    # APNG's count is only what its header claims), so no count is given.
    if getattr(image, "is_animated", False):
        image.seek(0)
        notes.append("animated or multi-page: used the first frame")
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation != 1:
        upright = ImageOps.exif_transpose(image)
        # exif_transpose drops the tag exactly when it turned the image: an invalid value
        # (9, say) stays, and nothing was turned.
        if EXIF_ORIENTATION not in upright.getexif():
            image = upright
            notes.append(f"rotated upright from its EXIF orientation (tag {orientation})")
    mode = image.mode
    if mode in HIGH_BIT_DEPTH:
        sixteen_bits = _is_sixteen_bits(image)
        image = _eight_bits(image, sixteen_bits)
        notes.append(
            f"{mode} (16-bit) scaled to 8 bits"
            if sixteen_bits
            else f"{'floating-point' if mode == 'F' else '32-bit integer'} pixels scaled to 8 bits from their own range"
        )
    if "transparency" in image.info and image.mode not in WITH_ALPHA:
        # A colour (or palette entries) the file marks transparent, as PNG and GIF can: an alpha
        # channel by another name, so it is flattened the same way.
        image = image.convert("RGBA")
    if image.mode in WITH_ALPHA:
        # Transparent pixels have no colour of their own: show them over white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
        notes.append("transparency flattened onto white")
    if image.mode != "RGB":
        image = image.convert("RGB")
    if mode not in ("RGB", *HIGH_BIT_DEPTH, *WITH_ALPHA):  # those have their note above
        notes.append(f"converted from {mode} to RGB")
    return image, notes


def _is_sixteen_bits(image: Image.Image) -> bool:
    """Unsigned 16-bit pixels: the I;16 modes, and 16-bit PGM/PPM files, which Pillow opens as
    32-bit "I" with their values brought to 0-65535."""
    return image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PPM")


def _eight_bits(image: Image.Image, sixteen_bits: bool) -> Image.Image:
    """A 16/32-bit integer or floating-point grayscale image in 8 bits, scaled rather than
    clipped at 255 (L; LA where the file marks a value transparent). Converted a band of
    :data:`BAND_PIXELS` at a time in float32, so the extra memory does not grow with the image."""
    if sixteen_bits:
        # Unsigned 16 bits: the bit depth sets the range, as for 8-bit images, so 65535 is
        # white and an 8-bit v saved as 16-bit (v * 257) comes back as v.
        low, scale = 0.0, 1 / 257
    else:
        # Signed 32-bit integers and floats have no range that a bit depth defines: their own
        # range is scaled to 0-255. Integers keep 0 as black; floats, and integers below 0,
        # start at their minimum.
        lowest, highest = _extrema(image)
        low = lowest if image.mode == "F" else min(lowest, 0.0)
        scale = 255.0 / ((highest - low) or 1.0)
    transparent = image.info.get("transparency")
    gray = np.empty((image.height, image.width), np.uint8)
    alpha = np.empty_like(gray) if transparent is not None else None
    for top, band in _bands(image):
        if alpha is not None:  # compared at full depth, before scaling merges values
            alpha[top : top + len(band)] = np.where(band == transparent, 0, 255)
        band = np.nan_to_num(band.astype(np.float32, copy=False), copy=False)
        band -= low
        band *= scale
        gray[top : top + len(band)] = np.rint(band)
    out = Image.fromarray(gray, mode="L")
    if alpha is not None:
        out.putalpha(Image.fromarray(alpha, mode="L"))
    return out


def _bands(image: Image.Image):
    """``(top row, pixels)`` for horizontal bands of about :data:`BAND_PIXELS` pixels."""
    rows = max(1, BAND_PIXELS // max(1, image.width))
    for top in range(0, image.height, rows):
        yield top, np.asarray(image.crop((0, top, image.width, min(image.height, top + rows))))


def _extrema(image: Image.Image) -> tuple[float, float]:
    """The lowest and highest finite pixel values (0 for NaN, as the conversion reads it), band by band."""
    lowest, highest = np.inf, -np.inf
    for _, band in _bands(image):
        band = np.nan_to_num(band.astype(np.float32, copy=False), copy=False)
        lowest, highest = min(lowest, float(band.min())), max(highest, float(band.max()))
    return lowest, highest


def to_cifake_array(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Return ``image`` as a uint8 ``[32, 32, 3]`` array, as CIFAKE images are, and the notes."""
    image, notes = to_rgb(image)  # upright first, so that the "longer side" is the upright one
    width, height = image.size
    if max(width, height) > MAX_ASPECT * min(width, height):
        image = _crop_centre(image, MAX_ASPECT * min(width, height))
        notes.append(f"very elongated ({width}x{height}): kept the middle {image.size[0]}x{image.size[1]}")
        width, height = image.size
    if (width, height) != (SIZE, SIZE):
        scale = SIZE / min(width, height)
        new_size = (max(SIZE, round(width * scale)), max(SIZE, round(height * scale)))
        image = image.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=None)
        left, top = (new_size[0] - SIZE) // 2, (new_size[1] - SIZE) // 2
        image = image.crop((left, top, left + SIZE, top + SIZE))
        notes.append(f"resized from {width}x{height} to 32x32 (shorter side to 32, centre crop)")
    return np.asarray(image, dtype=np.uint8), notes


def _crop_centre(image: Image.Image, long_side: int) -> Image.Image:
    """Crop the longer side of ``image`` to ``long_side`` pixels around its centre."""
    width, height = image.size
    if width >= height:
        left = (width - long_side) // 2
        return image.crop((left, 0, left + long_side, height))
    top = (height - long_side) // 2
    return image.crop((0, top, width, top + long_side))


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
