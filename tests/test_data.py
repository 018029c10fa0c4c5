import io
import re
import shutil

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

from cifake_models.data import decode_rgb, leaked_test_names, load_split, stored_files, train_val_indices
from cifake_models.labels import CLASSES


@pytest.mark.parametrize("split", ["train", "test"])
def test_kaggle_folders_and_packed_files_load_to_the_same_arrays(tiny_data, split):
    kaggle = load_split(tiny_data / "kaggle", split)
    packed = load_split(tiny_data / "packed", split)
    assert kaggle.images.shape == (len(kaggle), 32, 32, 3) and kaggle.images.dtype == np.uint8
    np.testing.assert_array_equal(kaggle.images, packed.images)
    np.testing.assert_array_equal(kaggle.labels, packed.labels)
    np.testing.assert_array_equal(kaggle.names, packed.names)
    assert kaggle.fingerprint() == packed.fingerprint()
    assert all(name.startswith(f"{split}/{CLASSES[label]}/") for name, label in zip(kaggle.names, kaggle.labels))


def test_both_layouts_give_the_same_original_files(tiny_data):
    """The JPEG files as the dataset stores them (scripts/benchmarks send them to the app)."""
    kaggle = {name: (label, data) for name, label, data in stored_files(tiny_data / "kaggle", "test")}
    packed = {name: (label, data) for name, label, data in stored_files(tiny_data / "packed", "test")}
    assert kaggle == packed and len(kaggle) == 16
    split = load_split(tiny_data / "packed", "test")
    for name, image, label in zip(split.names, split.images, split.labels):
        assert kaggle[name][0] == label and np.array_equal(decode_rgb(kaggle[name][1]), image)


def test_fingerprint_changes_with_a_single_pixel(tiny_data):
    split = load_split(tiny_data / "packed", "train")
    changed = split.subset(np.arange(len(split)))
    changed.images[0, 0, 0, 0] ^= 1
    assert changed.fingerprint() != split.fingerprint()


def test_missing_data_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("neither cifake-test.npz nor a test/REAL")):
        load_split(tmp_path, "test")


@pytest.mark.parametrize(
    ("content", "message"), [(b"not a jpeg", "not an image Pillow can read"), ("40x40", "40x40 pixels")]
)
def test_a_bad_dataset_file_is_named(tiny_data, tmp_path, content, message):
    shutil.copytree(tiny_data / "kaggle", tmp_path / "kaggle")
    if content == "40x40":
        buffer = io.BytesIO()
        Image.new("RGB", (40, 40)).save(buffer, format="JPEG")
        content = buffer.getvalue()
    (tmp_path / "kaggle" / "test" / "REAL" / "odd.jpg").write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"test/REAL/odd.jpg: {message}")):
        load_split(tmp_path / "kaggle", "test")


def test_validation_split_is_seeded_stratified_and_disjoint():
    labels = np.repeat([0, 1], [500, 300])
    train, val = train_val_indices(labels, 0.1, seed=3)
    _again_train, again_val = train_val_indices(labels, 0.1, seed=3)
    np.testing.assert_array_equal(val, again_val)
    assert not set(train) & set(val) and len(train) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [50, 30]
    assert not np.array_equal(val, train_val_indices(labels, 0.1, seed=4)[1])


@pytest.mark.skipif(not (SHARED_DATA / "cifake-test.npz").is_file(), reason="shared CIFAKE data not present")
def test_shared_test_split_is_the_official_one():
    test = load_split(SHARED_DATA, "test")
    assert test.images.shape == (20_000, 32, 32, 3)
    assert np.bincount(test.labels).tolist() == [10_000, 10_000]
    leaked = leaked_test_names(SHARED_DATA)
    assert len(leaked) == 378 and leaked <= set(test.names)
