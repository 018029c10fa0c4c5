"""Safe decoding of files people upload, into the 32x32 RGB arrays the detectors take.

An upload must be a non-empty file within :data:`MAX_UPLOAD_BYTES` and :data:`MAX_PIXELS`, in one of
:data:`ALLOWED_FORMATS`, that decodes completely; each conversion made is listed in
:attr:`Decoded.notes`, and a refused file raises :class:`UploadError` (:func:`decode_many` never raises).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .images import to_cifake_array

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # per file
MAX_PIXELS = 40_000_000  # per frame: 40 Mpx, e.g. 8000 x 5000
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


NOT_ARRIVED = "the file did not arrive (not found on the server)"  # the app's words for a missing upload


def read_upload(path: str | os.PathLike, missing: str = NOT_ARRIVED) -> bytes:
    """The bytes of an uploaded file, refusing missing, empty and oversized files before reading;
    ``missing`` is the message for a path that is not a file (the caller knows how it came)."""
    path = Path(path)
    if not path.is_file():
        raise UploadError(missing)
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
    """Decode one uploaded file's bytes; raise :class:`UploadError` with a clear message.
    MemoryError passes through every ``except Exception`` below: not a corrupt file, but one
    this server cannot afford (:func:`decode_or_fail` says so)."""
    _check_bytes(len(data))
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own refusal quotes Pillow's limit, twice ours: say ours, as for any other size.
        if size := _claimed_size(data):
            _check_pixels(*size)
        raise UploadError(f"the image is too large in pixels; the limit is {MAX_PIXELS / 1e6:.0f} Mpx (decompression-bomb guard)") from None
    except UnidentifiedImageError:
        raise UploadError(
            f"not an image this app can read (accepted formats: {', '.join(ALLOWED_FORMATS)})"
        ) from None
    except MemoryError:
        raise
    except Exception as error:  # a broken header can raise almost anything inside Pillow
        raise UploadError(f"not a readable image: truncated or corrupt ({type(error).__name__}: {error})") from None
    with image:
        width, height = image.size
        _check_pixels(width, height)
        fmt, mode = image.format or "", image.mode
        try:
            image.load()  # decode now: truncated and corrupt data fail here, not later
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # a frame or tile larger than the image
            raise UploadError(f"a frame of the image is too large in pixels; the limit is {MAX_PIXELS / 1e6:.0f} Mpx "
                              "(decompression-bomb guard)") from None
        except MemoryError:
            raise
        except Exception as error:
            raise UploadError(f"the {fmt or 'image'} data is truncated or corrupt ({type(error).__name__}: {error})") from None
        try:
            array, notes = to_cifake_array(image)
        except MemoryError:
            raise
        except Exception as error:
            raise UploadError(f"cannot convert this {fmt} image (mode {mode}) to RGB ({type(error).__name__}: {error})") from None
    if array.shape != (32, 32, 3) or array.dtype != np.uint8:
        raise UploadError(f"conversion gave an unexpected array {array.shape} {array.dtype}")
    return Decoded(name=name, array=array, notes=notes, format=fmt, size=(width, height), mode=mode)


def _claimed_size(data: bytes) -> tuple[int, int] | None:
    """The size the file's header claims, read as ``Image.open`` reads it but without Pillow's
    pixel limit; None where no accepted format reads it."""
    for fmt in ALLOWED_FORMATS:
        factory, accept = Image.OPEN[fmt]
        accepted = accept is None or accept(data[:16])
        if accepted and not isinstance(accepted, str):  # a str is Pillow's reason to decline
            try:
                return factory(io.BytesIO(data)).size
            except Exception:
                continue
    return None


def decode_upload(path: str | os.PathLike, name: str | None = None, missing: str = NOT_ARRIVED) -> Decoded:
    """Decode the uploaded file at ``path``; ``name`` defaults to the file's base name, and
    ``missing`` is the message where ``path`` is not a file."""
    name = name or os.path.basename(os.fspath(path))
    return decode_bytes(read_upload(path, missing), name)


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
