"""Hostile and unusual uploads: each is either converted (and the conversion noted) or refused
with a clear message; none raises anything but UploadError, and a batch never fails."""

from __future__ import annotations

import io
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from cifake_models import images, uploads
from cifake_models.uploads import (
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    Decoded,
    Failed,
    UploadError,
    decode_bytes,
    decode_many,
    decode_upload,
)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but holds almost no data: a pixel bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_pillow_itself_refuses_what_uploads_refuse():
    """Every Image.open in the process applies the pixel limit, and Ghostscript's EPS is never decoded."""
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS
    assert "EPS" not in uploads.ALLOWED_FORMATS and {"PNG", "JPEG", "GIF", "WEBP"} <= set(uploads.ALLOWED_FORMATS)


def test_plain_cifake_image_needs_no_conversion():
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    decoded = decode_bytes(encode(Image.fromarray(pixels), "PNG"), "x.png")
    assert decoded.array.dtype == np.uint8 and decoded.array.shape == (32, 32, 3)
    np.testing.assert_array_equal(decoded.array, pixels)
    assert decoded.notes == [] and decoded.format == "PNG" and decoded.size == (32, 32)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is a text file, not an image\n", "not an image this app can read"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n", "not an image this app can read"),
        (b"<svg xmlns='http://www.w3.org/2000/svg' width='32' height='32'></svg>", "not an image this app can read"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not"),  # PNG signature, broken header
    ],
    ids=["empty", "text", "eps", "svg", "broken-header"],
)
def test_non_images_are_refused_with_a_message(data, message):
    with pytest.raises(UploadError, match=message):
        decode_bytes(data, "f")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_truncated_images_are_refused(fmt):
    data = encode(noise(64, 64), fmt)
    with pytest.raises(UploadError, match="truncated or corrupt"):
        decode_bytes(data[: len(data) // 2], "half")


def test_too_many_bytes_are_refused_before_reading(tmp_path):
    path = tmp_path / "huge.png"
    with open(path, "wb") as handle:
        handle.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: costs no disk, no reading
    with pytest.raises(UploadError, match=r"too large \(20\.0 MB\); the limit is 20\.0 MB"):
        decode_upload(path)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns, then we refuse
@pytest.mark.parametrize("side", [7_000, 20_000], ids=["49Mpx-warning-band", "400Mpx-bomb"])
def test_decompression_bombs_are_refused(side):
    """In the same words whether Pillow or we refuse first (above 80 Mpx Pillow does): our 40 Mpx
    limit, never Pillow's text."""
    with pytest.raises(UploadError) as error:
        decode_bytes(png_header_only(side, side), "bomb.png")
    assert str(error.value) == (
        f"the image is too large in pixels ({side}x{side} = {side * side / 1e6:.1f} Mpx); "
        "the limit is 40 Mpx (decompression-bomb guard)"
    )


def test_just_under_the_pixel_limit_is_not_called_a_bomb():
    # 6000 x 6000 = 36 Mpx: allowed (the header-only file is then refused as truncated, not as a bomb)
    with pytest.raises(UploadError) as error:
        decode_bytes(png_header_only(6_000, 6_000), "big.png")
    assert "too large" not in str(error.value)


def out_of_memory(*args, **kwargs):
    raise MemoryError


@pytest.mark.parametrize("where", ["open", "convert"])
def test_running_out_of_memory_is_not_called_a_corrupt_file(where, tmp_path, monkeypatch):
    """Running out of memory is said in those words, not taken for a truncated or corrupt file."""
    path = tmp_path / "big.png"
    path.write_bytes(encode(noise(32, 32), "PNG"))
    if where == "open":
        monkeypatch.setattr(Image, "open", out_of_memory)
    else:
        monkeypatch.setattr(uploads, "to_cifake_array", out_of_memory)
    [failed] = decode_many([path])
    assert failed.error == "the image needs more memory to decode than this server has"


def test_decode_many_keeps_order_and_never_raises(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encode(noise(32, 32), "PNG"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(encode(noise(64, 64), "JPEG")[:300])
    results = decode_many([good, text, None, empty, truncated, tmp_path / "missing.png"])
    assert [r.name for r in results] == ["good.png", "notes.txt", "", "empty.jpg", "cut.jpg", "missing.png"]
    assert isinstance(results[0], Decoded)
    assert all(isinstance(r, Failed) for r in results[1:])
    assert "not an image" in results[1].error
    assert results[2].error == "no file was sent"  # in its place: the results keep the request's order
    assert "empty" in results[3].error
    assert "truncated" in results[4].error
    assert "did not arrive" in results[5].error


# --------------------------------------------------------------------------- bounds on every decode


def test_a_deep_image_is_converted_in_bands_not_in_full_size_float_copies():
    """A 16-bit PNG of 10 Mpx reaches 8 bits in bands, without full-size float copies of itself."""
    import tracemalloc

    data = encode(Image.frombytes("I;16", (4000, 2500), np.full((2500, 4000), 40_000, "<u2").tobytes()), "PNG")
    tracemalloc.start()
    try:
        decoded = decode_bytes(data, "deep.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (decoded.array == round(40_000 / 257)).all()
    assert peak < 10e6 + 4 * images.BAND_PIXELS * 4 + 5e6, f"{peak / 1e6:.0f} MB of numpy arrays at the peak"


def test_pages_and_frames_are_never_walked_to_be_counted(monkeypatch):
    """Only the first frame is read: n_frames would walk every page of a TIFF in Python."""
    from PIL import TiffImagePlugin

    pages = [Image.new("L", (1, 1))] * 300
    data = encode(Image.new("L", (32, 32), 90), "TIFF", save_all=True, append_images=pages)
    seeks = []
    real_seek = TiffImagePlugin.TiffImageFile._seek
    monkeypatch.setattr(
        TiffImagePlugin.TiffImageFile, "_seek", lambda self, frame: seeks.append(frame) or real_seek(self, frame)
    )
    decoded = decode_bytes(data, "pages.tif")
    assert "animated or multi-page: used the first frame" in decoded.notes
    assert len(seeks) <= 3, f"{len(seeks)} pages read to decode the first"


def test_a_claimed_frame_count_is_not_repeated_as_a_fact():
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    data = bytearray(encode(frames[0], "PNG", save_all=True, append_images=frames[1:]))
    at = data.index(b"acTL")
    data[at + 4 : at + 8] = struct.pack(">I", 2**31 - 1)  # the header now claims 2^31 - 1 frames
    data[at + 12 : at + 16] = struct.pack(">I", zlib.crc32(bytes(data[at : at + 12])) & 0xFFFFFFFF)
    decoded = decode_bytes(bytes(data), "claims.png")
    assert not any("2147483647" in note for note in decoded.notes), decoded.notes


def test_an_icon_is_refused_for_the_size_of_the_png_it_holds_not_of_its_directory(monkeypatch):
    """The ICO directory says 256x256 (0 means 256); the PNG inside is 8000x6200 (49.6 Mpx), and
    Pillow decodes it as it opens the icon: it must be refused before."""
    from PIL import PngImagePlugin

    png = encode(Image.new("1", (8000, 6200)), "PNG")
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)

    def decoded(self):
        raise AssertionError("the PNG inside the icon was decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", decoded)
    with pytest.raises(UploadError, match=f"an icon inside the file: .*limit is {MAX_PIXELS / 1e6:.0f} Mpx"):
        decode_bytes(struct.pack("<HHH", 0, 1, 1) + entry + png, "icon.ico")


def test_decodes_share_a_budget_of_bytes_in_flight():
    budget = uploads.DecodeBudget(100)
    first_in, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def hold(n: int, entered: threading.Event, leave: threading.Event) -> None:
        with budget.hold(n):
            entered.set()
            leave.wait(5)

    first = threading.Thread(target=hold, args=(60, first_in, release))
    first.start()
    assert first_in.wait(5)
    second = threading.Thread(target=hold, args=(60, second_in, release))
    second.start()
    assert not second_in.wait(0.3), "two decodes of 60 ran at once under a budget of 100"
    release.set()
    assert second_in.wait(5)
    first.join(5)
    second.join(5)
    assert budget.peak == 60 and budget.held == 0
    with budget.hold(500):  # larger than the whole budget: runs, alone
        assert budget.held == 500


def test_every_upload_decode_holds_its_share_of_the_budget(monkeypatch):
    budget = uploads.DecodeBudget(uploads.DECODE_BUDGET_BYTES)
    monkeypatch.setattr(uploads, "DECODES", budget)
    decode_bytes(encode(noise(100, 50), "PNG"), "x.png")
    assert budget.peak == 100 * 50 * uploads.DECODE_BYTES_PER_PIXEL and budget.held == 0


def test_repeated_references_to_one_file_are_decoded_once(tmp_path, monkeypatch):
    path = tmp_path / "same.png"
    path.write_bytes(encode(noise(64, 64), "PNG"))
    copy = tmp_path / "copy.png"
    copy.write_bytes(path.read_bytes())
    calls = []
    real = uploads.decode_bytes
    monkeypatch.setattr(uploads, "decode_bytes", lambda data, name: calls.append(name) or real(data, name))
    results = decode_many([path] * 50 + [copy], names=[f"{i}.png" for i in range(51)])
    assert len(calls) == 1
    assert [r.name for r in results] == [f"{i}.png" for i in range(51)]
    assert all(isinstance(r, Decoded) and (r.array == results[0].array).all() for r in results)


def test_a_request_stops_decoding_when_its_time_is_spent(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(encode(noise(32, 32, seed=i), "PNG"))
    clock = iter([0.0, 0.0, uploads.REQUEST_DECODE_SECONDS + 1, uploads.REQUEST_DECODE_SECONDS + 2])
    monkeypatch.setattr(uploads.time, "thread_time", lambda: next(clock))
    results = decode_many(paths)
    assert isinstance(results[0], Decoded)
    assert all(isinstance(r, Failed) for r in results[1:])
    assert f"used its {uploads.REQUEST_DECODE_SECONDS:.0f} s of decoding time" in results[1].error


def test_large_images_decode_on_their_own_thread_and_count_against_the_request(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "LARGE_PIXELS", 64 * 64 - 1)
    threads = []
    real = uploads._convert
    monkeypatch.setattr(
        uploads, "_convert", lambda *args: threads.append(threading.current_thread().name) or real(*args)
    )
    paths = [tmp_path / "small.png", tmp_path / "large.png"]
    paths[0].write_bytes(encode(noise(32, 32), "PNG"))
    paths[1].write_bytes(encode(noise(64, 64), "PNG"))
    before = uploads._elsewhere()
    results = decode_many(paths)
    assert isinstance(results[0], Decoded) and threads[0] == threading.current_thread().name
    assert isinstance(results[1], Decoded) and threads[1].startswith("cifake-large-decode")
    assert uploads._elsewhere() > before  # its CPU time counts against this thread's requests


def test_a_large_image_that_fails_to_decode_still_counts_against_the_request(tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "LARGE_PIXELS", 64 * 64 - 1)
    monkeypatch.setattr(uploads.time, "thread_time", iter(range(0, 10_000, 5)).__next__)  # 5 s a reading
    path = tmp_path / "truncated.png"
    path.write_bytes(encode(noise(64, 64), "PNG")[:-200])
    before = uploads._elsewhere()
    [result] = decode_many([path])
    assert isinstance(result, Failed) and "truncated or corrupt" in result.error
    assert uploads._elsewhere() - before == 5  # the failed decode's seconds, charged
