"""Safe decoding of files people upload, into the 32x32 RGB arrays the detectors take.

Every upload is treated as hostile until decoded: it must be a non-empty file of at most
:data:`MAX_UPLOAD_BYTES`, in one of :data:`ALLOWED_FORMATS` (no format that runs an external
program, such as EPS), of at most :data:`MAX_PIXELS` pixels, and must decode completely.
A file that passes is converted the way :func:`cifake_models.images.to_cifake_array` does,
and every conversion made (EXIF rotation, CMYK, 16-bit, transparency, palette, animation,
resizing) is listed in :attr:`Decoded.notes`. A file that fails raises :class:`UploadError`
with a message meant for the person who uploaded it; :func:`decode_many` turns those into
per-file results so that one bad file never fails a batch.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .images import to_cifake_array, to_rgb

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # per file
MAX_PIXELS = 40_000_000  # per frame: 40 Mpx, e.g. 8000 x 5000
MAX_ASPECT = 4  # longer side cropped (centred) to 4x the shorter before resizing; see below
# Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; we refuse above it
# (see _check_pixels), and set it on purpose rather than rely on Pillow's default (89 Mpx).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Raster formats Pillow decodes by itself. EPS (runs Ghostscript), PSD, FITS, etc. are refused.
Image.init()
ALLOWED_FORMATS: tuple[str, ...] = tuple(
    f for f in ("PNG", "JPEG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "PPM", "ICO", "TGA", "AVIF", "QOI") if f in Image.OPEN
)


class UploadError(ValueError):
    """An upload that cannot be used; ``str(error)`` is the message for the person."""


@dataclass
class Decoded:
    """One upload, as the detectors will see it."""

    name: str
    array: np.ndarray  # uint8 [32, 32, 3]
    notes: list[str] = field(default_factory=list)
    format: str = ""
    size: tuple[int, int] = (0, 0)  # (width, height) as uploaded
    mode: str = ""


@dataclass
class Failed:
    """One upload that could not be used, and why."""

    name: str
    error: str


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1024 / 1024:.1f} MB"


def read_upload(path: str | os.PathLike) -> bytes:
    """The bytes of an uploaded file, refusing missing, empty and oversized files before reading."""
    path = Path(path)
    if not path.is_file():
        raise UploadError("the file did not arrive (not found on the server)")
    size = path.stat().st_size
    _check_bytes(size)
    with open(path, "rb") as handle:
        data = handle.read(MAX_UPLOAD_BYTES + 1)
    _check_bytes(len(data))
    return data


def _check_bytes(size: int) -> None:
    if size == 0:
        raise UploadError("the file is empty (0 bytes)")
    if size > MAX_UPLOAD_BYTES:
        raise UploadError(f"the file is too large ({_mb(size)}); the limit is {_mb(MAX_UPLOAD_BYTES)} per file")


def _check_pixels(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise UploadError(f"the image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise UploadError(
            f"the image is too large in pixels ({width}x{height} = {width * height / 1e6:.1f} Mpx); "
            f"the limit is {MAX_PIXELS / 1e6:.0f} Mpx (decompression-bomb guard)"
        )


def decode_bytes(data: bytes, name: str = "image") -> Decoded:
    """Decode one uploaded file's bytes; raise :class:`UploadError` with a clear message."""
    _check_bytes(len(data))
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UploadError(f"the image is too large in pixels ({error}); the limit is {MAX_PIXELS / 1e6:.0f} Mpx") from None
    except UnidentifiedImageError:
        raise UploadError(
            f"not an image this app can read (accepted formats: {', '.join(ALLOWED_FORMATS)})"
        ) from None
    except Exception as error:  # a broken header can raise almost anything inside Pillow
        raise UploadError(f"not a readable image: truncated or corrupt ({type(error).__name__}: {error})") from None
    with image:
        width, height = image.size
        _check_pixels(width, height)
        fmt, mode = image.format or "", image.mode
        try:
            image.load()  # decode now: truncated and corrupt data fail here, not later
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise UploadError(f"the image is too large in pixels ({error})") from None
        except Exception as error:
            raise UploadError(f"the {fmt or 'image'} data is truncated or corrupt ({type(error).__name__}: {error})") from None
        try:
            # The detectors look at the centre square (shorter side resized to 32, centre
            # crop). Cropping a very long strip to its middle first keeps that square and
            # bounds the memory a 1 x 40,000,000 image would need once its short side is 32.
            orientation = _exif_orientation(image)
            rgb, notes = to_rgb(image)  # orientation first, so the "longer side" is upright
            width_up, height_up = rgb.size
            if max(width_up, height_up) > MAX_ASPECT * min(width_up, height_up):
                rgb = _crop_centre(rgb, MAX_ASPECT * min(width_up, height_up))
                notes.append(f"very elongated ({width_up}x{height_up}): kept the middle {rgb.size[0]}x{rgb.size[1]}")
            array, more_notes = to_cifake_array(rgb)
            notes = _clean_notes(notes + more_notes, orientation)
        except Exception as error:
            raise UploadError(f"cannot convert this {fmt} image (mode {mode}) to RGB ({type(error).__name__}: {error})") from None
    if array.shape != (32, 32, 3) or array.dtype != np.uint8:
        raise UploadError(f"conversion gave an unexpected array {array.shape} {array.dtype}")
    return Decoded(name=name, array=array, notes=notes, format=fmt, size=(width, height), mode=mode)


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF Orientation tag (1 = upright) of ``image``; 1 when absent or unreadable."""
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:
        return 1


def _clean_notes(notes: list[str], orientation: int) -> list[str]:
    """Drop repeated notes (``to_rgb`` runs here and again inside ``to_cifake_array``), and
    state the rotation, with its EXIF tag, exactly when the tag asked for one."""
    rotated = "rotated upright from its EXIF orientation"
    kept = [note for note in dict.fromkeys(notes) if not note.startswith(rotated)]
    if orientation not in (1, 0):
        kept.insert(0, f"{rotated} (tag {orientation})")
    return kept


def _crop_centre(image: Image.Image, long_side: int) -> Image.Image:
    """Crop the longer side of ``image`` to ``long_side`` pixels around its centre."""
    width, height = image.size
    if width >= height:
        left = (width - long_side) // 2
        return image.crop((left, 0, left + long_side, height))
    top = (height - long_side) // 2
    return image.crop((0, top, width, top + long_side))


def decode_upload(path: str | os.PathLike, name: str | None = None) -> Decoded:
    """Decode the uploaded file at ``path``; ``name`` defaults to the file's base name."""
    name = name or os.path.basename(os.fspath(path))
    return decode_bytes(read_upload(path), name)


def decode_or_fail(name: str, decode: Callable[[], Decoded]) -> Decoded | Failed:
    """``decode()``, or :class:`Failed` with the reason: never an exception, so that one file
    never takes down a batch."""
    try:
        return decode()
    except UploadError as error:
        return Failed(name, str(error))
    except MemoryError:
        return Failed(name, "the image needs more memory to decode than this server has")
    except Exception as error:
        return Failed(name, f"could not decode ({type(error).__name__}: {error})")


def decode_many(paths: Iterable[str | os.PathLike | None], names: Iterable[str] | None = None) -> list[Decoded | Failed]:
    """Decode each file on its own, named ``names`` (default: the files' base names); a file
    that fails, or a ``None`` where a file should be, becomes :class:`Failed` in its place."""
    paths = list(paths)
    names = list(names) if names is not None else [os.path.basename(os.fspath(path)) if path is not None else "" for path in paths]
    return [Failed(name, "no file was sent") if path is None else decode_or_fail(name, lambda: decode_upload(path, name))
            for path, name in zip(paths, names, strict=True)]
