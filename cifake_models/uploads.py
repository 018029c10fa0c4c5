"""Safe decoding of files people upload, into the 32x32 RGB arrays the detectors take.

An upload must be a non-empty file within :data:`MAX_UPLOAD_BYTES` and :data:`MAX_PIXELS`, in one of
:data:`ALLOWED_FORMATS`, that decodes completely; each conversion made is listed in
:attr:`Decoded.notes`, and a refused file raises :class:`UploadError` (:func:`decode_many` never raises).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
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
# Pillow only warns between one and two times its limit, also for an image inside another file (an
# ICO's PNG): in this process that is a refusal too.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
# Decoding memory that may be in use at once, across all requests: a decode waits its turn for it.
# An image is budgeted at DECODE_BYTES_PER_PIXEL bytes a pixel (16-bit RGBA as decoded, then its
# 8-bit RGB copy), so one image of MAX_PIXELS decodes at a time; one larger than the budget runs alone.
DECODE_BUDGET_BYTES = 512 * 2**20
DECODE_BYTES_PER_PIXEL = 12
# Images over LARGE_PIXELS are decoded one at a time on one thread of their own: the memory a decode
# frees stays with the thread that used it (the C allocator's arena), and is then used again there,
# rather than held by each of the server's request threads.
LARGE_PIXELS = 4_000_000
LARGE_DECODER = ThreadPoolExecutor(1, "cifake-large-decode")
_ELSEWHERE = threading.local()  # CPU seconds of this thread's decodes run on LARGE_DECODER
# What one request may spend decoding (its thread's CPU time); the files after are not processed.
# A single file cannot exceed it by much: its pixels are bounded, and no frame past the first is read.
REQUEST_DECODE_SECONDS = 20.0

# Raster formats Pillow decodes by itself. EPS (runs Ghostscript), PSD, FITS, etc. are refused.
Image.init()
ALLOWED_FORMATS: tuple[str, ...] = tuple(
    f
    for f in ("PNG", "JPEG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "PPM", "ICO", "TGA", "AVIF", "QOI")
    if f in Image.OPEN
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


class DecodeBudget:
    """Bytes of decoding in flight across threads: :meth:`hold` waits until ``n`` more fit under
    ``limit`` (or nothing else is held, so that one oversized decode still runs, alone)."""

    def __init__(self, limit: int):
        self.limit, self.held, self.peak = limit, 0, 0
        self._cond = threading.Condition()

    def hold(self, n: int):
        return _Held(self, n)

    def _acquire(self, n: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.held == 0 or self.held + n <= self.limit)
            self.held += n
            self.peak = max(self.peak, self.held)

    def _release(self, n: int) -> None:
        with self._cond:
            self.held -= n
            self._cond.notify_all()


class _Held:
    def __init__(self, budget: DecodeBudget, n: int):
        self.budget, self.n = budget, n

    def __enter__(self) -> None:
        self.budget._acquire(self.n)

    def __exit__(self, *exc) -> None:
        self.budget._release(self.n)


DECODES = DecodeBudget(DECODE_BUDGET_BYTES)  # the process's decodes share it


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
    if data.startswith(ICO_MAGIC):  # Pillow decodes an icon as it opens it
        _check_icon_frames(data)
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own refusal quotes Pillow's limit, twice ours: say ours, as for any other size.
        if size := _claimed_size(data):
            _check_pixels(*size)
        raise UploadError(
            f"the image is too large in pixels; the limit is {MAX_PIXELS / 1e6:.0f} Mpx (decompression-bomb guard)"
        ) from None
    except UnidentifiedImageError:
        raise UploadError(f"not an image this app can read (accepted formats: {', '.join(ALLOWED_FORMATS)})") from None
    except MemoryError:
        raise
    except Exception as error:  # a broken header can raise almost anything inside Pillow
        raise UploadError(f"not a readable image: truncated or corrupt ({type(error).__name__}: {error})") from None
    with image:
        width, height = image.size
        _check_pixels(width, height)
        fmt, mode = image.format or "", image.mode
        with DECODES.hold(_decode_bytes(image)):
            if width * height > LARGE_PIXELS:  # on the one thread that decodes large images
                result, error, seconds = LARGE_DECODER.submit(_timed, _convert, image, fmt, mode).result()
                _ELSEWHERE.seconds = _elsewhere() + seconds  # a decode that failed took its time too
                if error is not None:
                    raise error
                array, notes = result
            else:
                array, notes = _convert(image, fmt, mode)
    if array.shape != (32, 32, 3) or array.dtype != np.uint8:
        raise UploadError(f"conversion gave an unexpected array {array.shape} {array.dtype}")
    return Decoded(name=name, array=array, notes=notes, format=fmt, size=(width, height), mode=mode)


def _convert(image: Image.Image, fmt: str, mode: str) -> tuple[np.ndarray, list[str]]:
    """Decode ``image`` in full (its first frame) and convert it; :class:`UploadError` if that fails."""
    try:
        image.load()  # decode now: truncated and corrupt data fail here, not later
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # a frame or tile larger than the image
        raise UploadError(
            f"a frame of the image is too large in pixels; the limit is {MAX_PIXELS / 1e6:.0f} Mpx "
            "(decompression-bomb guard)"
        ) from None
    except MemoryError:
        raise
    except Exception as error:
        raise UploadError(
            f"the {fmt or 'image'} data is truncated or corrupt ({type(error).__name__}: {error})"
        ) from None
    try:
        return to_cifake_array(image)
    except MemoryError:
        raise
    except Exception as error:
        raise UploadError(
            f"cannot convert this {fmt} image (mode {mode}) to RGB ({type(error).__name__}: {error})"
        ) from None


def _timed(fn, *args):
    """``fn(*args)`` or the exception it raised, and in both cases the CPU seconds it took on this thread."""
    start = time.thread_time()
    try:
        return fn(*args), None, time.thread_time() - start
    except Exception as error:  # MemoryError included: the caller raises it again
        return None, error, time.thread_time() - start


def _elsewhere() -> float:
    return getattr(_ELSEWHERE, "seconds", 0.0)


def _decode_bytes(image: Image.Image) -> int:
    """What decoding ``image`` is budgeted at (:data:`DECODE_BYTES_PER_PIXEL`), from its header."""
    width, height = image.size
    return max(1, width) * max(1, height) * DECODE_BYTES_PER_PIXEL


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ICO_MAGIC = b"\0\0\1\0"


def _check_icon_frames(data: bytes) -> None:
    """Refuse an ICO holding a PNG larger than :data:`MAX_PIXELS`: its directory's size (at most
    256x256) is what Pillow reports, and the PNG's own size would only be read while decoding."""
    if len(data) < 6:
        return
    count = struct.unpack_from("<H", data, 4)[0]
    for i in range(min(count, (len(data) - 6) // 16)):
        _, offset = struct.unpack_from("<II", data, 6 + 16 * i + 8)
        if data[offset : offset + 8] == PNG_SIGNATURE and len(data) >= offset + 24:
            width, height = struct.unpack_from(">II", data, offset + 16)  # the IHDR chunk comes first
            try:
                _check_pixels(width, height)
            except UploadError as error:
                raise UploadError(f"an icon inside the file: {error}") from None


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


def decode_many(
    paths: Iterable[str | os.PathLike | None],
    names: Iterable[str] | None = None,
    seconds: float = REQUEST_DECODE_SECONDS,
) -> list[Decoded | Failed]:
    """Decode each file on its own, named ``names`` (default: the files' base names); a file
    that fails, or a ``None`` where a file should be, becomes :class:`Failed` in its place. Files
    with the same bytes are decoded once; once this thread has spent ``seconds`` of CPU time
    decoding (here, or for it on :data:`LARGE_DECODER`), the files after are not processed
    (:data:`REQUEST_DECODE_SECONDS`)."""
    paths = list(paths)
    names = (
        list(names)
        if names is not None
        else [os.path.basename(os.fspath(path)) if path is not None else "" for path in paths]
    )
    seen: dict[bytes, Decoded | Failed] = {}
    start = time.thread_time() + _elsewhere()
    out: list[Decoded | Failed] = []
    for path, name in zip(paths, names, strict=True):
        if path is None:
            out.append(Failed(name, "no file was sent"))
        elif time.thread_time() + _elsewhere() - start > seconds:
            out.append(
                Failed(
                    name,
                    f"not processed: this request used its {seconds:.0f} s of decoding time; "
                    "send the rest in another request",
                )
            )
        else:
            out.append(_decode_once(path, name, seen))
    return out


def _decode_once(path: str | os.PathLike, name: str, seen: dict[bytes, Decoded | Failed]) -> Decoded | Failed:
    """The file at ``path`` decoded, or the earlier result for the same bytes in ``seen``, renamed."""
    try:
        data = read_upload(path)
    except UploadError as error:
        return Failed(name, str(error))
    key = hashlib.sha256(data).digest()
    if key not in seen:
        seen[key] = decode_or_fail(name, lambda: decode_bytes(data, name))
    return dataclasses.replace(
        seen[key], name=name, **({"notes": list(seen[key].notes)} if isinstance(seen[key], Decoded) else {})
    )
