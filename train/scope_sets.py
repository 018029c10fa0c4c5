"""The project's scope sets, built offline: ``python -m train.scope_sets OUT``.

(a) crops of the sample photographs installed packages ship, (b) generated non-photographs; each
image goes through the app's upload path to 32x32 and is split into a tuning and a kept-aside part
(by source photograph, by generator seed). (c), CIFAKE under the robustness suite, is made by the
evaluation from the test split itself.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cifake_models.images import to_cifake_array

CROPS_PER_PHOTO = 40
DRAWINGS_PER_KIND = 24
# Generator seeds below this one build the tuning part, the rest the kept-aside part.
TUNING_SEEDS = DRAWINGS_PER_KIND // 2


@dataclass(frozen=True)
class PhotoSource:
    """A sample photograph; ``in_cifar``: it shows one of CIFAR-10's ten classes (the rule: its main
    subject is an airplane, automobile, bird, cat, deer, dog, frog, horse, ship or truck)."""

    name: str
    load: Callable[[], np.ndarray]
    subject: str
    in_cifar: bool
    part: str  # "tuning" or "kept": split by photograph, never by crop


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import io as skio
        from skimage.data import data_dir

        return skio.imread(str(Path(data_dir) / name))

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _matplotlib(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data(name) as file:
            return np.asarray(Image.open(file).convert("RGB"))

    return load


PHOTOS: tuple[PhotoSource, ...] = (
    PhotoSource("astronaut", _skimage("astronaut.png"), "a person in a space suit", False, "tuning"),
    PhotoSource("coffee", _skimage("coffee.png"), "a cup of coffee", False, "tuning"),
    PhotoSource("china", _sklearn("china.jpg"), "a temple roof", False, "tuning"),
    PhotoSource("camera", _skimage("camera.png"), "a man with a camera (grayscale)", False, "tuning"),
    PhotoSource("brick", _skimage("brick.png"), "a brick wall (grayscale)", False, "tuning"),
    PhotoSource("retina", _skimage("retina.jpg"), "a retina (fundus photograph)", False, "tuning"),
    PhotoSource("coins", _skimage("coins.png"), "coins (grayscale)", False, "tuning"),
    PhotoSource("ihc", _skimage("ihc.png"), "stained tissue (microscope)", False, "tuning"),
    PhotoSource("rocket", _skimage("rocket.jpg"), "a rocket on its launch pad", False, "kept"),
    PhotoSource("motorcycle", _skimage("motorcycle_left.png"), "a motorcycle indoors", False, "kept"),
    PhotoSource("grace_hopper", _matplotlib("grace_hopper.jpg"), "a portrait", False, "kept"),
    PhotoSource("flower", _sklearn("flower.jpg"), "a flower", False, "kept"),
    PhotoSource("hubble", _skimage("hubble_deep_field.jpg"), "galaxies (telescope)", False, "kept"),
    PhotoSource("grass", _skimage("grass.png"), "grass (grayscale)", False, "kept"),
    PhotoSource("gravel", _skimage("gravel.png"), "gravel (grayscale)", False, "kept"),
    PhotoSource("moon", _skimage("moon.png"), "the moon's surface (grayscale)", False, "kept"),
    PhotoSource("chelsea", _skimage("chelsea.png"), "a cat", True, "kept"),
)


@dataclass(frozen=True)
class ScopeSet:
    """32x32 images of one scope set with, per image, its source and part."""

    images: np.ndarray  # uint8 [N, 32, 32, 3]
    sources: np.ndarray  # str [N]
    parts: np.ndarray  # str [N], "tuning" or "kept"
    in_cifar: np.ndarray  # bool [N]: the source shows one of CIFAR-10's classes

    def part(self, name: str, in_cifar: bool | None = None) -> np.ndarray:
        keep = self.parts == name
        if in_cifar is not None:
            keep &= self.in_cifar == in_cifar
        return self.images[keep]


def as_upload(image: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """The app's 32x32 view of ``image``, saved first as a JPEG of random quality half of the time."""
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=int(rng.integers(60, 96)))
        image = Image.open(io.BytesIO(buffer.getvalue()))
    return to_cifake_array(image)[0]


def photo_crops(photo: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` square-ish crops of ``photo`` from 1/8 of its shorter side to all of it (log-uniform)."""
    image = Image.fromarray(photo if photo.ndim == 2 else photo[..., :3])
    short = min(image.size)
    crops = []
    for _ in range(n):
        side = int(short * np.exp(rng.uniform(np.log(1 / 8), 0)))
        width = min(image.width, int(side * rng.uniform(0.8, 1.25)))
        left, top = rng.integers(0, image.width - width + 1), rng.integers(0, image.height - side + 1)
        crops.append(as_upload(image.crop((left, top, left + width, top + side)), rng))
    return crops


def photo_set(seed: int = 0, per_photo: int = CROPS_PER_PHOTO) -> ScopeSet:
    rng = np.random.default_rng(seed)
    images, sources, parts, in_cifar = [], [], [], []
    for source in PHOTOS:
        crops = photo_crops(source.load(), per_photo, rng)
        images += crops
        sources += [source.name] * len(crops)
        parts += [source.part] * len(crops)
        in_cifar += [source.in_cifar] * len(crops)
    return ScopeSet(np.stack(images), np.array(sources), np.array(parts), np.array(in_cifar))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _canvas(rng: np.random.Generator) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    side = int(rng.integers(48, 400))
    image = Image.new("RGB", (side, side), _colour(rng) if rng.random() < 0.5 else (255, 255, 255))
    return image, ImageDraw.Draw(image)


def _text(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas(rng)
    words = ["invoice", "Total", "2024", "hello", "SALE", "page 3", "lorem ipsum", "Q3 report", "@user", "OK"]
    for row in range(int(rng.integers(1, 8))):
        size = int(rng.integers(8, max(9, image.width // 4)))
        draw.text(
            (rng.integers(0, image.width // 2), row * size),
            " ".join(rng.choice(words, 3)),
            fill=_colour(rng),
            font_size=size,
        )
    return image


def _drawing(rng: np.random.Generator) -> Image.Image:
    image, draw = _canvas(rng)
    for _ in range(int(rng.integers(2, 12))):
        box = sorted(rng.integers(0, image.width, 2)), sorted(rng.integers(0, image.width, 2))
        shape = ((box[0][0], box[1][0]), (box[0][1], box[1][1]))
        kind = rng.integers(0, 3)
        width = int(rng.integers(1, 6))
        if kind == 0:
            draw.line(shape, fill=_colour(rng), width=width)
        elif kind == 1:
            draw.ellipse(shape, outline=_colour(rng), fill=_colour(rng) if rng.random() < 0.5 else None, width=width)
        else:
            draw.rectangle(shape, outline=_colour(rng), fill=_colour(rng) if rng.random() < 0.5 else None, width=width)
    return image


def _chart(rng: np.random.Generator) -> Image.Image:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(rng.uniform(2, 5),) * 2, dpi=60)
    x = np.arange(int(rng.integers(4, 20)))
    kind = rng.integers(0, 4)
    if kind == 0:
        ax.plot(x, rng.normal(size=len(x)).cumsum())
    elif kind == 1:
        ax.bar(x, rng.uniform(1, 10, len(x)))
    elif kind == 2:
        ax.scatter(rng.normal(size=50), rng.normal(size=50))
    else:
        ax.pie(rng.uniform(1, 5, 4))
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
    plt.close(fig)
    return image


def _texture(rng: np.random.Generator) -> Image.Image:
    side = int(rng.integers(32, 256))
    y, x = np.mgrid[0:side, 0:side] / side
    channels = []
    for _ in range(3):
        wave = sum(
            np.sin(2 * np.pi * (rng.uniform(-8, 8) * x + rng.uniform(-8, 8) * y) + rng.uniform(0, 6))
            for _ in range(int(rng.integers(1, 4)))
        )
        channels.append(wave)
    pixels = np.stack(channels, -1)
    pixels = (pixels - pixels.min()) / (np.ptp(pixels) or 1) * 255
    return Image.fromarray(pixels.astype(np.uint8))


def _flat(rng: np.random.Generator) -> Image.Image:
    return Image.new("RGB", (int(rng.integers(32, 200)),) * 2, _colour(rng))


def _gradient(rng: np.random.Generator) -> Image.Image:
    side = int(rng.integers(32, 256))
    t = np.linspace(0, 1, side)[None, :, None] * np.ones((side, 1, 1))
    if rng.random() < 0.5:
        t = t.transpose(1, 0, 2)
    start, end = np.array(_colour(rng)), np.array(_colour(rng))
    return Image.fromarray((start + t * (end - start)).astype(np.uint8))


def _noise(rng: np.random.Generator) -> Image.Image:
    side = int(rng.integers(32, 128))
    if rng.random() < 0.5:
        pixels = rng.integers(0, 256, (side, side, 3))
    else:
        channels = 1 + 2 * int(rng.random() < 0.5)
        pixels = np.clip(rng.normal(rng.uniform(50, 200), rng.uniform(5, 60), (side, side, channels)), 0, 255)
        pixels = np.broadcast_to(pixels, (side, side, 3))
    return Image.fromarray(pixels.astype(np.uint8))


GENERATORS: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "text": _text,
    "drawing": _drawing,
    "chart": _chart,
    "texture": _texture,
    "flat": _flat,
    "gradient": _gradient,
    "noise": _noise,
}
# Graphics that the packages ship: split by source, like the photographs.
GRAPHICS = {"horse": "tuning", "logo": "tuning", "text": "kept", "color": "kept", "page": "kept"}


def graphic_crops(rng: np.random.Generator, per_graphic: int = 8) -> tuple[list[np.ndarray], list[str], list[str]]:
    images, sources, parts = [], [], []
    for name, part in GRAPHICS.items():
        crops = photo_crops(_skimage(f"{name}.png")(), per_graphic, rng)
        images += crops
        sources += [f"skimage {name}"] * len(crops)
        parts += [part] * len(crops)
    return images, sources, parts


def drawing_set(seed: int = 0, per_kind: int = DRAWINGS_PER_KIND) -> ScopeSet:
    """Every generator at seeds ``0..per_kind - 1`` (below :data:`TUNING_SEEDS`: tuning), then the shipped graphics."""
    images, sources, parts = [], [], []
    for k, (kind, generate) in enumerate(GENERATORS.items()):
        for index in range(per_kind):
            rng = np.random.default_rng([seed, k, index])
            images.append(as_upload(generate(rng), rng))
            sources.append(kind)
            parts.append("tuning" if index < min(TUNING_SEEDS, per_kind // 2 or 1) else "kept")
    more = graphic_crops(np.random.default_rng([seed, 99]))
    images, sources, parts = images + more[0], sources + more[1], parts + more[2]
    return ScopeSet(np.stack(images), np.array(sources), np.array(parts), np.zeros(len(images), dtype=bool))


SETS: dict[str, Callable[..., ScopeSet]] = {"photos": photo_set, "drawings": drawing_set}


def save(scope: ScopeSet, path: Path) -> Path:
    np.savez_compressed(path, images=scope.images, sources=scope.sources, parts=scope.parts, in_cifar=scope.in_cifar)
    return path


def load(path: str | Path) -> ScopeSet:
    with np.load(path, allow_pickle=False) as f:
        return ScopeSet(f["images"], f["sources"], f["parts"], f["in_cifar"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("data/scope"), help="default: data/scope")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in SETS.items():
        scope = build(args.seed)
        path = save(scope, args.out / f"{name}.npz")
        print(f"{path}: {len(scope.images)} images, {int((scope.parts == 'kept').sum())} kept aside")


if __name__ == "__main__":
    main()
