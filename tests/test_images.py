"""Any PIL image to the 32x32 RGB array the detectors take: each conversion, and its note."""

import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from cifake_models.images import to_cifake_array


def test_32x32_rgb_passes_through_unchanged():
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out, notes = to_cifake_array(Image.fromarray(pixels))
    np.testing.assert_array_equal(out, pixels)
    assert notes == []


def test_transparency_is_flattened_onto_white():
    out, notes = to_cifake_array(Image.new("RGBA", (32, 32), (0, 0, 0, 0)))
    assert (out == 255).all() and any("transparency" in n for n in notes)


def test_sixteen_bit_is_scaled_by_its_bit_depth_not_its_own_range():
    """An 8-bit image saved as 16-bit (v * 257) comes back as itself, and a uniform 16-bit gray
    stays that gray. (The old code stretched each 16-bit image to its own maximum: the first
    came back brighter and the gray white; its notes also said "converted from L to RGB".)"""
    eight = np.random.default_rng(0).integers(0, 200, (32, 32), dtype=np.uint8)
    sixteen = Image.fromarray(eight.astype(np.uint16) * 257)
    assert sixteen.mode == "I;16"
    out, notes = to_cifake_array(sixteen)
    np.testing.assert_array_equal(out, to_cifake_array(Image.fromarray(eight))[0])
    assert notes == ["I;16 (16-bit) scaled to 8 bits"]
    gray, _ = to_cifake_array(Image.fromarray(np.full((32, 32), 30000, np.uint16)))
    assert (gray == 117).all()  # round(30000 / 257)
    # A 16-bit PGM, which Pillow opens as 32-bit "I": the same pixels, the same note.
    pgm = Image.open(io.BytesIO(b"P5\n32 32\n65535\n" + (eight.astype(">u2") * 257).tobytes()))
    assert pgm.mode == "I"
    out, notes = to_cifake_array(pgm)
    np.testing.assert_array_equal(out, to_cifake_array(Image.fromarray(eight))[0])
    assert notes == ["I (16-bit) scaled to 8 bits"]


def test_signed_thirty_two_bit_with_negative_values_keeps_its_order():
    ramp = np.tile(np.linspace(-3000, 1000, 32).astype(np.int32), (32, 1))
    image = Image.fromarray(ramp)
    assert image.mode == "I"
    out, _ = to_cifake_array(image)
    row = out[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) > 0).all()  # no wrap-around below 0


def test_large_non_square_images_are_resized_and_centre_cropped():
    image = Image.new("RGB", (400, 200), "black")
    image.paste((255, 255, 255), (100, 0, 300, 200))  # white centre square
    out, notes = to_cifake_array(image)
    assert out.shape == (32, 32, 3) and (out[:, 2:30] > 250).all()
    assert any("400x200" in n for n in notes)


def reopened_png(image: Image.Image, **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return Image.open(buffer)


@pytest.mark.parametrize(("mode", "colour"), [("L", 7), ("RGB", (1, 2, 3)), ("P", 0)])
def test_a_colour_marked_transparent_is_flattened_like_an_alpha_channel(mode, colour):
    """PNG's tRNS marks one colour (or palette entry) transparent. The old code flattened only a
    palette's onto white, and called it "converted from RGBA to RGB"; L and RGB stayed as stored."""
    out, notes = to_cifake_array(reopened_png(Image.new(mode, (32, 32), colour), transparency=colour))
    assert (out == 255).all()
    assert notes == ["transparency flattened onto white"] + ([f"converted from {mode} to RGB"] if mode != "RGB" else [])


def test_a_sixteen_bit_transparent_value_is_matched_before_scaling():
    pixels = np.full((32, 32), 30000, np.uint16)
    pixels[0, 0] = 5  # 5 and 30000 differ at 16 bits, not only after scaling to 8
    out, notes = to_cifake_array(reopened_png(Image.fromarray(pixels), transparency=5))
    assert (out[0, 0] == 255).all() and (out[1:] == 117).all()
    assert notes == ["I;16 (16-bit) scaled to 8 bits", "transparency flattened onto white"]


def test_an_invalid_exif_orientation_rotates_nothing_and_says_nothing():
    image = Image.new("RGB", (32, 32), "red")
    exif = Image.Exif()
    exif[0x0112] = 9  # orientations are 1 to 8
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif)
    out, notes = to_cifake_array(Image.open(buffer))
    assert notes == [] and (out[..., 0] > 250).all()


def test_a_very_long_strip_is_cut_to_its_middle_before_any_resizing(monkeypatch):
    """For every caller, Detector.predict_proba included: resized whole, a 1 x 40,000 strip would
    become 32 x 1,280,000 pixels (the old code did so outside uploads.py; at 1 x 400,000, 1.2 GB)."""
    asked = []
    resize = Image.Image.resize

    def recording(self, size, *args, **kwargs):
        asked.append(size)
        assert size[0] * size[1] <= 4 * 32 * 32, f"resizing to {size}"  # the kept middle: 4 times as long as wide
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording)
    strip = np.zeros((40_000, 1), np.uint8)
    strip[20_000 - 2 : 20_000 + 2] = 255  # the middle is white, the rest black
    out, notes = to_cifake_array(Image.fromarray(strip))
    assert asked and out.shape == (32, 32, 3) and out.max() == 255
    assert notes[0] == "converted from L to RGB" and notes[1] == "very elongated (1x40000): kept the middle 1x4"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@dataclass
class Converted:
    array: np.ndarray
    notes: list[str]


def decoded_from(data: bytes) -> Converted:
    """The conversion of an encoded image, as ``array`` and ``notes``."""
    return Converted(*to_cifake_array(Image.open(io.BytesIO(data))))


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_cmyk_jpeg_is_converted_and_noted():
    decoded = decoded_from(encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"))
    assert "converted from CMYK to RGB" in decoded.notes
    red = decoded.array.reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_palette_and_grayscale_become_rgb():
    palette = decoded_from(encode(noise(32, 32).convert("P"), "GIF"))
    gray = decoded_from(encode(noise(32, 32).convert("L"), "PNG"))
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
    decoded = decoded_from(encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95))
    assert decoded.notes[0].startswith("rotated upright from its EXIF orientation")
    top, bottom = decoded.array[:8].reshape(-1, 3).mean(0), decoded.array[-8:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decoded_from(data)
    assert "animated or multi-page: used the first frame" in decoded.notes
    assert decoded.array[..., 0].mean() > 200 and decoded.array[..., 1].mean() < 60
