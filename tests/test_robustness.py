"""The perturbation suite, its scoring, and the training augmentation built from it."""

import numpy as np
import pytest
import torch
from PIL import Image

from cifake_models.checkpoint import read_safetensors
from cifake_models.data import load_split
from cifake_models.metrics import expected_calibration_error
from cifake_models.perturbations import SUITE, TRAINING_RANGES, Perturbation, random_uploads
from cifake_models.preprocessing import Preprocessing, rgb_float
from cifake_models.recipes import SvmRecipe
from cifake_models.registry import load_detector
from cifake_models.reports import describe_recipe
from cifake_models.robustness import Robustness, balanced_sample, perturb_all, score_suite
from cifake_models.uploads import decode_upload
from train.__main__ import main as train_main
from train.svm_fit import upload_augmented

IMAGES = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("perturbation", SUITE, ids=lambda p: p.name)
def test_each_perturbation_gives_the_pixels_the_app_would_see(perturbation, tmp_path):
    """The suite scores what the app makes of the upload: the perturbed file, saved and sent
    through the app's own decoder and resize, has exactly the suite's pixels."""
    seen = []
    for i, image in enumerate(IMAGES):
        path = tmp_path / f"upload{i}.png"  # lossless: the upload is the perturbed image itself
        perturbation.upload(Image.fromarray(image)).save(path)
        seen.append(decode_upload(path).array)
    np.testing.assert_array_equal(perturbation.apply(IMAGES), np.stack(seen))


# Whether a larger strength changes the pixels more (True) or less (False). Enlarging has no
# such order: every factor ends in the same antialiased downscale, which smooths most of it away.
MORE_WITH_STRENGTH = {"jpeg": False, "downscale": False, "blur": True, "shift": True, "crop": True}


def test_every_perturbation_changes_the_pixels_and_stronger_changes_more():
    for family in TRAINING_RANGES:
        strengths = sorted(p.strength for p in SUITE if p.family == family)
        changes = [np.abs(Perturbation(family, s).apply(IMAGES).astype(int) - IMAGES).mean() for s in strengths]
        assert all(c > 0 for c in changes), family
        if family in MORE_WITH_STRENGTH:
            assert changes == sorted(changes, reverse=not MORE_WITH_STRENGTH[family]), (family, changes)


def test_shift_moves_pixels_without_resampling():
    shifted = Perturbation("shift", 2).apply(IMAGES)
    np.testing.assert_array_equal(shifted[:, 2:, 2:], IMAGES[:, :30, :30])


def test_jpeg_perturbation_is_a_real_jpeg_round_trip():
    out = Perturbation("jpeg", 50).apply(IMAGES)
    again = Perturbation("jpeg", 50).apply(out)  # re-encoding a decoded JPEG at the same quality is nearly idempotent
    assert np.abs(out.astype(int) - IMAGES).mean() > 5 * np.abs(again.astype(int) - out).mean()


def test_random_uploads_is_seeded_and_leaves_clean_images_when_asked():
    batch = torch.as_tensor(np.random.default_rng(1).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8))
    draw = lambda p, seed: random_uploads(batch, p, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(0.0, 0), batch)
    assert torch.equal(draw(0.5, 3), draw(0.5, 3))
    assert not torch.equal(draw(0.5, 3), draw(0.5, 4))
    changed = (draw(1.0, 0) != batch).flatten(1).any(1)
    assert changed.all()
    share = (draw(0.5, 0) != batch).flatten(1).any(1).float().mean()
    assert 0.25 < share < 0.75


def test_random_uploads_draws_strengths_from_the_ranges_it_is_given():
    """One family at a range of one strength: every changed image is exactly that perturbation."""
    batch = torch.as_tensor(np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    out = random_uploads(batch, 1.0, torch.Generator().manual_seed(0), {"blur": (1.5, 1.5)})
    assert np.array_equal(out.numpy(), Perturbation("blur", 1.5).apply(batch.numpy()))


def test_random_uploads_draws_families_in_proportion_to_their_weights():
    """Blur weighted 3, JPEG 1, the rest 0: about three blurred images to one re-compressed, and
    no other change; with every weight 1 the draw is the uniform one, image for image."""
    batch = torch.as_tensor(np.random.default_rng(1).integers(0, 256, (400, 32, 32, 3), dtype=np.uint8))
    ranges = {family: TRAINING_RANGES[family] for family in TRAINING_RANGES} | {"blur": (1.0, 1.0), "jpeg": (50, 50)}
    weights = {family: 0.0 for family in ranges} | {"blur": 3.0, "jpeg": 1.0}
    out = random_uploads(batch, 1.0, torch.Generator().manual_seed(0), ranges, weights).numpy()
    blurred = (out == Perturbation("blur", 1.0).apply(batch.numpy())).reshape(len(out), -1).all(1)
    compressed = (out == Perturbation("jpeg", 50).apply(batch.numpy())).reshape(len(out), -1).all(1)
    assert (blurred | compressed).all() and not (blurred & compressed).any()
    assert 2.2 < blurred.sum() / compressed.sum() < 4.0  # 300:100 expected; binomial spread of 400 draws
    uniform = random_uploads(batch, 1.0, torch.Generator().manual_seed(0), ranges)
    assert torch.equal(
        uniform, random_uploads(batch, 1.0, torch.Generator().manual_seed(0), ranges, {f: 1.0 for f in ranges})
    )
    # ... and the uniform draw is the one seeded runs have always replayed: family int(u * 6) of
    # each image's second draw (so checkpoints trained before weights existed resume unchanged).
    fixed = {family: (low, low) for family, (low, high) in TRAINING_RANGES.items()}
    u = torch.rand(len(batch), 3, generator=torch.Generator().manual_seed(0)).numpy()[:, 1]
    families = [list(fixed)[int(draw * len(fixed))] for draw in u]
    expected = np.stack(
        [Perturbation(f, fixed[f][0]).apply(image[None])[0] for f, image in zip(families, batch.numpy())]
    )
    np.testing.assert_array_equal(random_uploads(batch, 1.0, torch.Generator().manual_seed(0), fixed).numpy(), expected)
    with pytest.raises(ValueError, match="no family"):
        random_uploads(batch, 1.0, torch.Generator().manual_seed(0), ranges, {f: 0.0 for f in ranges})


def test_training_views_draw_families_with_the_recorded_weights():
    """A network's preprocessing weighting every family but blur 0 trains on blurred views only."""
    batch = torch.as_tensor(np.random.default_rng(4).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8))
    ranges = tuple(
        (family, *((1.0, 1.0) if family == "blur" else TRAINING_RANGES[family])) for family in TRAINING_RANGES
    )
    preprocessing = Preprocessing(
        crop_scale=(1.0, 1.0),
        hflip=False,
        upload_augment=1.0,
        upload_ranges=ranges,
        upload_weights=tuple((family, 0.0) for family in TRAINING_RANGES if family != "blur"),
    )
    views = preprocessing.train_views(batch, torch.Generator().manual_seed(0))
    assert torch.equal(views, rgb_float(Perturbation("blur", 1.0).apply(batch.numpy())))


def test_suite_scores_find_a_detector_that_only_knows_exact_pixels():
    """A 'detector' that recognises the clean images byte for byte, and guesses 0.5 otherwise,
    is perfect on clean images and at chance under every perturbation that changes pixels."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(40) % 2
    known = {image.tobytes(): 1.0 - label for image, label in zip(images, labels)}  # P(FAKE): FAKE is label 0

    def predict_fake(_key, batch):
        return np.array([known.get(image.tobytes(), 0.5) for image in batch])

    suite = (Perturbation("enlarge", 4), Perturbation("blur", 1.0))
    result = score_suite(predict_fake, 0.75, images, labels, perturb_all(images, suite))
    assert result.clean_accuracy == 1.0 and result.clean_roc_auc == 1.0
    assert [s.accuracy for s in result.scores] == [0.5, 0.5]
    assert result.mean_accuracy == 0.5 and result.worst.perturbation in ("enlarge 4", "blur 1")
    assert Robustness.from_dict(result.to_dict()) == result


def test_balanced_sample_takes_half_of_each_class():
    labels = np.array([0] * 70 + [1] * 30)
    sample = balanced_sample(labels, 40, seed=0)
    assert len(sample) == 40 and (labels[sample] == 0).sum() == 20
    assert np.array_equal(sample, balanced_sample(labels, 40, seed=0))


def test_expected_calibration_error():
    rng = np.random.default_rng(3)
    labels = np.zeros(20000, int)  # all FAKE
    honest = np.full(20000, 0.7)
    right = rng.random(20000) < 0.7  # right 70% of the time at 70% confidence
    labels[~right] = 1
    assert expected_calibration_error(labels, honest) < 0.01
    assert expected_calibration_error(labels, np.full(20000, 0.99)) == pytest.approx(0.29, abs=0.01)


def test_training_with_upload_augmentation_records_it(tiny_data, tmp_path):
    assert (
        train_main(
            [
                "native32",
                "--data",
                str(tiny_data / "packed"),
                "--out",
                str(tmp_path),
                "--epochs",
                "2",
                "--batch-size",
                "8",
                "--upload-augment",
                "0.5",
                "--precision",
                "bf16",
                "--val-fraction",
                "0.25",
            ]
        )
        == 0
    )
    _, meta = read_safetensors(tmp_path / "native32.safetensors")
    assert meta["preprocessing"]["upload_augment"] == 0.5 and meta["recipe"]["precision"] == "bf16"
    description = describe_recipe(meta)
    assert "50% upload-like changes" in description
    assert "one-cycle, label smoothing 0.1, bf16 autocast" in description  # native32's registry recipe, and the option
    # One-cycle steps per batch: half-way the rate is near its peak, at the end far below it.
    mid, end = (record["lr"] for record in meta["history"])
    assert mid > 0.3 * meta["recipe"]["lr"] and end < 0.1 * meta["recipe"]["lr"]
    names = [s["perturbation"] for s in meta["validation"]["robustness"]["scores"]]
    assert names == [p.name for p in SUITE]
    assert (
        Preprocessing.from_dict(meta["preprocessing"]).upload_ranges == Preprocessing().upload_ranges
    )  # the defaults, recorded


def test_a_widened_and_weighted_upload_range_is_recorded_and_described(tiny_data, tmp_path, capsys):
    assert (
        train_main(
            [
                "cnn",
                "--data",
                str(tiny_data / "packed"),
                "--out",
                str(tmp_path),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--upload-augment",
                "0.5",
                "--upload-range",
                "blur",
                "0.3",
                "1.5",
                "--upload-weight",
                "blur",
                "3",
                "--upload-weight",
                "jpeg",
                "0",
                "--val-fraction",
                "0.25",
            ]
        )
        == 0
    )
    _, meta = read_safetensors(tmp_path / "cnn.safetensors")
    preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    assert (
        preprocessing.training_ranges["blur"] == (0.3, 1.5)
        and preprocessing.training_ranges["jpeg"] == TRAINING_RANGES["jpeg"]
    )
    assert preprocessing.upload_weights == (("jpeg", 0.0), ("blur", 3.0))  # in the families' own order
    assert "50% upload-like changes (blur 0.3-1.5; jpeg drawn 0x, blur drawn 3x)" in describe_recipe(meta)
    for option, bad, message in (
        ("--upload-range", ["sharpen", "0", "1"], "unknown family 'sharpen'"),
        ("--upload-range", ["blur", "2", "1"], "LOW must not exceed HIGH"),
        ("--upload-weight", ["sharpen", "1"], "unknown family 'sharpen'"),
        ("--upload-weight", ["blur", "-1"], "W must be a finite number, 0 or more"),
        ("--upload-weight", ["blur", "often"], "W must be a number"),
    ):
        with pytest.raises(SystemExit):
            train_main(["cnn", "--out", str(tmp_path), option, *bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(
            [
                "cnn",
                "--out",
                str(tmp_path),
                *(arg for family in TRAINING_RANGES for arg in ("--upload-weight", family, "0")),
            ]
        )
    assert "every family would weigh 0" in capsys.readouterr().err


def test_the_svm_can_train_on_upload_like_changes(tiny_data, tmp_path):
    """The SVM is fitted once, so the share asked for is replaced by one changed copy each, seeded."""
    split = load_split(tiny_data / "packed", "train")
    recipe = SvmRecipe(upload_augment=0.5, upload_ranges=(("blur", 1.0, 1.0),))
    augmented = upload_augmented(split, recipe)
    changed = (augmented.images != split.images).reshape(len(split), -1).any(axis=1)
    assert 0.25 * len(split) < changed.sum() < 0.75 * len(split)  # about half; the others stay clean
    np.testing.assert_array_equal(augmented.images[changed], Perturbation("blur", 1.0).apply(split.images[changed]))
    np.testing.assert_array_equal(upload_augmented(split, recipe).images, augmented.images)  # the seed replays it
    np.testing.assert_array_equal(augmented.labels, split.labels)
    assert upload_augmented(split, SvmRecipe()) is split  # off by default
    only_blur = SvmRecipe(
        upload_augment=1.0,
        upload_ranges=tuple((f, 1.0, 1.0) if f == "blur" else (f, *r) for f, r in TRAINING_RANGES.items()),
        upload_weights=tuple((f, 0.0) for f in TRAINING_RANGES if f != "blur"),
    )
    np.testing.assert_array_equal(
        upload_augmented(split, only_blur).images, Perturbation("blur", 1.0).apply(split.images)
    )

    assert (
        train_main(
            [
                "hog_svm",
                "--data",
                str(tiny_data / "packed"),
                "--out",
                str(tmp_path),
                "--svm-components",
                "10",
                "--upload-augment",
                "0.5",
                "--upload-range",
                "blur",
                "0.3",
                "1.5",
                "--upload-weight",
                "blur",
                "2",
                "--val-fraction",
                "0.25",
            ]
        )
        == 0
    )
    meta = load_detector("hog_svm", tmp_path).metadata
    assert meta["recipe"]["upload_augment"] == 0.5 and ["blur", 0.3, 1.5] in meta["recipe"]["upload_ranges"]
    assert meta["recipe"]["upload_weights"] == [["blur", 2.0]]
    assert "; trained with 50% upload-like changes (blur 0.3-1.5; blur drawn 2x); sigmoid" in describe_recipe(meta)
