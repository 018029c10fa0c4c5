import io

import numpy as np
from PIL import Image

from cifake_models.images import to_cifake_array


def test_32x32_rgb_passes_through_unchanged():
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out, notes = to_cifake_array(Image.fromarray(pixels))
    np.testing.assert_array_equal(out, pixels)
    assert notes == []


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (64, 32), "red")
    image.paste((0, 0, 255), (0, 0, 32, 32))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    out, notes = to_cifake_array(Image.open(buffer))
    assert any("EXIF" in n for n in notes)
    assert out[2, 16, 2] > 150  # after rotation the blue half is on top


def test_transparency_is_flattened_onto_white():
    out, notes = to_cifake_array(Image.new("RGBA", (32, 32), (0, 0, 0, 0)))
    assert (out == 255).all() and any("transparency" in n for n in notes)


def test_sixteen_bit_uses_the_full_range():
    ramp = np.tile(np.linspace(0, 4000, 32, dtype=np.uint16), (32, 1))
    out, notes = to_cifake_array(Image.fromarray(ramp))
    # Scaled, the 32 levels stay 32 levels (clipped at 255, all but the first two would be white).
    assert out.max() == 255 and len(np.unique(out)) == 32 and any("8 bits" in n for n in notes)


def test_signed_thirty_two_bit_with_negative_values_keeps_its_order():
    ramp = np.tile(np.linspace(-3000, 1000, 32).astype(np.int32), (32, 1))
    image = Image.fromarray(ramp)
    assert image.mode == "I"
    out, _ = to_cifake_array(image)
    row = out[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) > 0).all()  # no wrap-around below 0


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (32, 32), (i * 100, 0, 0)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    out, notes = to_cifake_array(Image.open(buffer))
    assert out.shape == (32, 32, 3) and any("first frame" in n for n in notes)


def test_large_non_square_images_are_resized_and_centre_cropped():
    image = Image.new("RGB", (400, 200), "black")
    image.paste((255, 255, 255), (100, 0, 300, 200))  # white centre square
    out, notes = to_cifake_array(image)
    assert out.shape == (32, 32, 3) and (out[:, 2:30] > 250).all()
    assert any("400x200" in n for n in notes)
