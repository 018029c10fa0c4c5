"""CIFAKE as numpy arrays, read from the Kaggle folders or from the packed ``.npz`` files.

Both sources give the same thing: uint8 images ``[N, 32, 32, 3]``, labels indexing
:data:`CLASSES`, and the dataset's own file names (``train/REAL/0001 (2).jpg``), sorted by
label then name so that the two layouts yield identical arrays.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .images import SIZE
from .labels import CLASSES
from .paths import REPO_ROOT

SPLITS = ("train", "test")
# Where the data is looked for when no path is given, after $CIFAKE_DATA: the checkout's own
# data/cifake/, then the shared copy beside the checkout.
DEFAULT_DATA_DIRS = (REPO_ROOT / "data" / "cifake", REPO_ROOT.parent / "shared" / "data" / "cifake")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# The validation split every trainer and script holds out of train unless told otherwise
# (train_val_indices); checkpoints from before the split was recorded held out this one.
VAL_FRACTION = 0.1
SPLIT_SEED = 0


@dataclass(frozen=True)
class Split:
    """One split of CIFAKE held in memory."""

    images: np.ndarray  # uint8 [N, 32, 32, 3]
    labels: np.ndarray  # int64 [N], index into CLASSES
    names: np.ndarray  # str [N], path inside the dataset

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Split:
        return Split(self.images[index], self.labels[index], self.names[index])

    def fingerprint(self) -> str:
        """SHA-256 of pixels, labels and names: which data a checkpoint saw, in 16 hex digits."""
        digest = hashlib.sha256()
        for array in (self.images, self.labels.astype(np.int64), self.names.astype("U")):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]


def default_data_dir() -> Path:
    """The first existing of ``$CIFAKE_DATA`` and :data:`DEFAULT_DATA_DIRS`."""
    candidates = [Path(os.environ["CIFAKE_DATA"])] if os.environ.get("CIFAKE_DATA") else []
    candidates += DEFAULT_DATA_DIRS
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "CIFAKE not found: set $CIFAKE_DATA or pass --data, pointing at the Kaggle folder "
        f"(train/REAL, train/FAKE, test/REAL, test/FAKE) or at cifake-train.npz/cifake-test.npz; "
        f"looked in {', '.join(map(str, candidates))}"
    )


def data_search_order() -> str:
    """Where :func:`default_data_dir` looks, in words, for the ``--data`` options' help."""
    return ", then ".join(["$CIFAKE_DATA", *(os.path.relpath(path, REPO_ROOT) + "/" for path in DEFAULT_DATA_DIRS)])


def decode_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def load_split(root: str | Path | None, split: str) -> Split:
    """Load ``split`` ("train" or "test") from a Kaggle folder or a folder of ``.npz`` files."""
    images, labels, names = [], [], []
    for name, label, data in stored_files(root, split):
        images.append(_decoded(name, data))
        labels.append(label)
        names.append(name)
    if not images:
        raise FileNotFoundError(f"no {split} images in {root if root is not None else default_data_dir()}")
    images, labels, names = np.stack(images), np.asarray(labels, dtype=np.int64), np.asarray(names, dtype=str)
    order = np.lexsort((names, labels))
    return Split(images[order], labels[order], names[order])


def _decoded(name: str, data: bytes) -> np.ndarray:
    """One dataset file as a uint8 ``[32, 32, 3]`` array; a file that is not one names itself."""
    try:
        image = decode_rgb(data)
    except Exception as error:  # Pillow raises several kinds for a file it cannot read
        raise ValueError(f"{name}: not an image Pillow can read ({type(error).__name__}: {error})") from error
    if image.shape != (SIZE, SIZE, 3):
        raise ValueError(f"{name}: {image.shape[1]}x{image.shape[0]} pixels, where every CIFAKE image is {SIZE}x{SIZE}")
    return image


def stored_files(root: str | Path | None, split: str) -> Iterator[tuple[str, int, bytes]]:
    """``(name, label, file bytes)`` of each image of ``split`` as the dataset stores it (the
    original JPEG, byte for byte), from a Kaggle folder or a folder of ``.npz`` files."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    root = Path(root) if root is not None else default_data_dir()
    packed = root / f"cifake-{split}.npz"
    if packed.is_file():
        return _npz_files(packed)
    if (root / split).is_dir():
        return _kaggle_files(root, split)
    raise FileNotFoundError(f"{root} holds neither {packed.name} nor a {split}/REAL, {split}/FAKE folder")


def _npz_files(path: Path) -> Iterator[tuple[str, int, bytes]]:
    with np.load(path, allow_pickle=False) as packed:
        if tuple(packed["classes"]) != CLASSES:
            raise ValueError(f"{path}: classes {tuple(packed['classes'])} differ from {CLASSES}")
        jpeg, offsets = packed["jpeg"], packed["jpeg_offsets"]
        for name, label, start, end in zip(packed["names"].astype(str), packed["labels"], offsets[:-1], offsets[1:]):
            yield str(name), int(label), jpeg[start:end].tobytes()


def _kaggle_files(root: Path, split: str) -> Iterator[tuple[str, int, bytes]]:
    for label, class_name in enumerate(CLASSES):
        folder = root / split / class_name
        if not folder.is_dir():
            raise FileNotFoundError(f"missing class folder {folder}")
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                yield f"{split}/{class_name}/{file.name}", label, file.read_bytes()


def train_val_indices(
    labels: np.ndarray, val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of train into (train, validation) indices, stratified by label."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(len(members) * val_fraction))
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def leaked_test_names(root: str | Path | None = None) -> set[str]:
    """Test files whose pixels also occur in train (``duplicates.json`` beside the data).

    Returns an empty set when the file is absent (e.g. a user's own Kaggle download).
    """
    path = Path(root if root is not None else default_data_dir()) / "duplicates.json"
    if not path.is_file():
        return set()
    groups = json.loads(path.read_text())["groups"]
    return {
        name
        for group in groups
        if any(n.startswith("train/") for n in group)
        for name in group
        if name.startswith("test/")
    }
