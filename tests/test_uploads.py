"""Hostile and unusual uploads: each is either converted (and the conversion noted) or refused
with a clear message; none raises anything but UploadError, and a batch never fails."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cifake_models import uploads
from cifake_models.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES, Decoded, Failed, UploadError, decode_bytes, decode_many, decode_upload


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
    """In the same words whether Pillow or we refuse first: above 80 Mpx Pillow does, and the
    old message quoted its text ("exceeds limit of 80000000 pixels") beside our 40 Mpx."""
    with pytest.raises(UploadError) as error:
        decode_bytes(png_header_only(side, side), "bomb.png")
    assert str(error.value) == (f"the image is too large in pixels ({side}x{side} = {side * side / 1e6:.1f} Mpx); "
                                "the limit is 40 Mpx (decompression-bomb guard)")


def test_just_under_the_pixel_limit_is_not_called_a_bomb():
    # 6000 x 6000 = 36 Mpx: allowed (the header-only file is then refused as truncated, not as a bomb)
    with pytest.raises(UploadError) as error:
        decode_bytes(png_header_only(6_000, 6_000), "big.png")
    assert "too large" not in str(error.value)


def test_cmyk_jpeg_is_converted_and_noted():
    decoded = decode_bytes(encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"), "cmyk.jpg")
    assert "converted from CMYK to RGB" in decoded.notes
    assert decoded.mode == "CMYK"
    red = decoded.array.reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_16_bit_png_is_scaled_not_clipped():
    pixels = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)  # up to 65,472
    decoded = decode_bytes(encode(Image.fromarray(pixels), "PNG"), "deep.png")
    assert decoded.notes == ["I;16 (16-bit) scaled to 8 bits"]
    assert decoded.array.max() == 255 and decoded.array.min() == 0
    assert len(np.unique(decoded.array)) > 200  # scaled over the whole range, not clipped at 255


def test_alpha_is_flattened_onto_white_and_noted():
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red
    decoded = decode_bytes(encode(rgba, "PNG"), "alpha.png")
    assert "transparency flattened onto white" in decoded.notes
    assert (decoded.array == 255).all()


def test_palette_and_grayscale_become_rgb():
    palette = decode_bytes(encode(noise(32, 32).convert("P"), "GIF"), "p.gif")
    gray = decode_bytes(encode(noise(32, 32).convert("L"), "PNG"), "l.png")
    assert "converted from P to RGB" in palette.notes
    assert "converted from L to RGB" in gray.notes
    assert (gray.array[..., 0] == gray.array[..., 1]).all()


def test_exif_rotation_is_applied_and_noted():
    # Stored 64x32, left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise"
    # to view, so upright the image is 32x64 with red on top.
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32, 0] = 255
    stored[:, 32:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_bytes(encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95), "rotated.jpg")
    assert decoded.notes[0].startswith("rotated upright from its EXIF orientation")
    top, bottom = decoded.array[:8].reshape(-1, 3).mean(0), decoded.array[-8:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_no_rotation_note_for_an_invalid_orientation_tag():
    """Orientations are 1 to 8: at 9 nothing turns (the old note said "rotated upright (tag 9)")."""
    exif = Image.Exif()
    exif[0x0112] = 9
    decoded = decode_bytes(encode(noise(48, 32), "JPEG", exif=exif), "nine.jpg")
    assert decoded.notes == ["resized from 48x32 to 32x32 (shorter side to 32, centre crop)"]


def test_no_rotation_note_without_an_orientation_tag():
    decoded = decode_bytes(encode(noise(48, 48), "JPEG"), "plain.jpg")
    assert not any("rotated" in note for note in decoded.notes)
    assert decoded.notes == ["resized from 48x48 to 32x32 (shorter side to 32, centre crop)"]


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decode_bytes(data, "anim.gif")
    assert "animated (3 frames): used the first frame" in decoded.notes
    assert decoded.array[..., 0].mean() > 200 and decoded.array[..., 1].mean() < 60


def test_elongated_strip_is_cropped_before_resizing():
    decoded = decode_bytes(encode(Image.new("L", (20_000, 2), 128), "PNG"), "strip.png")
    assert decoded.array.shape == (32, 32, 3)
    assert any("very elongated (20000x2)" in note for note in decoded.notes)


def test_large_photo_is_resized_and_noted():
    decoded = decode_bytes(encode(noise(640, 480), "JPEG"), "photo.jpg")
    assert decoded.size == (640, 480)
    assert "resized from 640x480 to 32x32 (shorter side to 32, centre crop)" in decoded.notes


def out_of_memory(*args, **kwargs):
    raise MemoryError


@pytest.mark.parametrize("where", ["open", "convert"])
def test_running_out_of_memory_is_not_called_a_corrupt_file(where, tmp_path, monkeypatch):
    """The old decode_bytes caught MemoryError with every other exception and called the file
    truncated or corrupt, so decode_or_fail's answer for it was never given."""
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
