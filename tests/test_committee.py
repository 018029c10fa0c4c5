"""The committee: a logistic regression over its members' logits, one per subset of members."""

import logging

import numpy as np
import pytest
from conftest import train_tiny

from cifake_models import CheckpointError, get_spec, load_detector
from cifake_models.calibration import log_odds
from cifake_models.checkpoint import file_sha256
from cifake_models.committee import CommitteeDetector, fit_subsets
from cifake_models.detector import Detector
from cifake_models.labels import FAKE
from cifake_models.recipes import CommitteeRecipe
from train.revalidate import main as revalidate_main


class Fixed(Detector):
    """A member whose P(FAKE) for image i is given in advance (images carry i in their first pixel)."""

    def __init__(self, name, proba_fake):
        super().__init__(name)
        self.proba_fake = np.asarray(proba_fake)

    def single_view(self, batch):
        fake = self.proba_fake[batch[:, 0, 0, 0].astype(int)]
        return np.stack([fake, 1 - fake], axis=1)


def two_half_experts(n=200, seed=0):
    """Member a knows the first half of the images, member b the second; each guesses elsewhere."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    truth = np.where(labels == FAKE, 0.95, 0.05)
    guess = rng.uniform(0.4, 0.6, n)
    first = np.arange(n) < n // 2
    return labels, {"a": np.where(first, truth, guess), "b": np.where(first, guess, truth)}


def images_for(n):
    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return images


def test_the_committee_beats_members_that_know_different_images():
    labels, fake = two_half_experts()
    masks, coefficients = fit_subsets(fake, labels, CommitteeRecipe())
    members = {name: Fixed(name, p) for name, p in fake.items()}
    committee = CommitteeDetector("committee", members, list(members), masks, coefficients)
    accuracy = lambda p: np.mean((p >= 0.5) == (labels == FAKE))  # noqa: E731
    combined = committee.probabilities(images_for(len(labels)))[:, FAKE]
    assert accuracy(combined) == 1.0
    assert max(accuracy(fake["a"]), accuracy(fake["b"])) < 0.8
    assert (committee.weights[:2] > 0).all()


def test_a_missing_member_uses_the_regression_fitted_without_it():
    labels, fake = two_half_experts()
    masks, coefficients = fit_subsets(fake, labels, CommitteeRecipe())
    assert len(masks) == 3  # {a}, {b}, {a, b}
    alone = CommitteeDetector("committee", {"a": Fixed("a", fake["a"])}, ["a", "b"], masks, coefficients)
    _solo_masks, solo_coefficients = fit_subsets({"a": fake["a"]}, labels, CommitteeRecipe())
    np.testing.assert_allclose(alone.weights[[0, 2]], solo_coefficients[0])
    assert alone.weights[1] == 0
    expected = 1 / (1 + np.exp(-(solo_coefficients[0, 0] * log_odds(fake["a"]) + solo_coefficients[0, 1])))
    np.testing.assert_allclose(alone.probabilities(images_for(len(labels)))[:, FAKE], expected)


def test_stored_committee_serves_without_a_member(tiny_assets, tmp_path):
    checkpoints = tiny_assets["checkpoints"]
    full = load_detector("committee", checkpoints)
    assert not full.unavailable and list(full.members) == list(get_spec("committee").members)
    for file in checkpoints.iterdir():
        if file.name != get_spec("densenet121").checkpoint_file:
            (tmp_path / file.name).write_bytes(file.read_bytes())
    partial = load_detector("committee", tmp_path)
    assert "densenet121" in partial.unavailable and "densenet121" not in partial.members
    images = images_for(5)
    proba = partial.probabilities(images)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert not np.allclose(proba, full.probabilities(images))


def test_a_committee_with_no_member_is_refused(tiny_assets, tmp_path):
    (tmp_path / "committee.safetensors").write_bytes(
        (tiny_assets["checkpoints"] / "committee.safetensors").read_bytes()
    )
    with pytest.raises(CheckpointError, match="none of its members"):
        load_detector("committee", tmp_path)


def test_a_member_changed_since_the_fit_is_left_out_until_a_refit(tiny_assets, tiny_data, tmp_path, capsys):
    """Its weight was fitted on the old file's answers: the committee serves as if it were missing,
    and revalidating the committee refuses, asking for a refit."""
    changed, missing = tmp_path / "changed", tmp_path / "missing"
    for folder in (changed, missing):
        folder.mkdir()
        for file in tiny_assets["checkpoints"].iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
    member = load_detector("cnn", changed)
    member.metadata = {**member.metadata, "note": "recalibrated after the committee was fitted"}
    member.save(changed / get_spec("cnn").checkpoint_file)
    (missing / get_spec("cnn").checkpoint_file).unlink()

    committee = load_detector("committee", changed)
    assert "cnn" not in committee.members and "changed since the committee was fitted" in committee.unavailable["cnn"]
    images = images_for(6)
    np.testing.assert_allclose(
        committee.probabilities(images), load_detector("committee", missing).probabilities(images)
    )
    assert revalidate_main(["committee", "--data", str(tiny_data / "packed"), "--checkpoints", str(changed)]) == 1
    assert "refit it with python -m train committee" in capsys.readouterr().err


def test_resume_keeps_a_committee_fitted_on_these_members_and_refits_a_stale_one(
    tiny_assets, tiny_data, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="train")
    for file in tiny_assets["checkpoints"].iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    committee_file = tmp_path / get_spec("committee").checkpoint_file
    before = file_sha256(committee_file)
    train_tiny("committee", tiny_data / "packed", tmp_path, resume=True)
    assert "committee: already trained" in caplog.text and file_sha256(committee_file) == before
    caplog.clear()
    # A member trained again since: the committee's weight for it was fitted on the old file's answers.
    train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2)
    refitted = train_tiny("committee", tiny_data / "packed", tmp_path, resume=True)
    assert "refitting: cnn changed" in caplog.text and file_sha256(committee_file) != before
    caplog.clear()
    assert not load_detector("committee", tmp_path).unavailable and list(refitted.members) == list(
        get_spec("committee").members
    )
    # A committee file that does not load (corrupt, an older format) is fitted anew, not a crash.
    committee_file.write_bytes(b"not a checkpoint")
    train_tiny("committee", tiny_data / "packed", tmp_path, resume=True)
    assert "committee: refitting" in caplog.text and not load_detector("committee", tmp_path).unavailable


@pytest.mark.parametrize(
    "recorded",
    ["../outside.safetensors", "/dev/zero", "sub/a.safetensors", ""],
    ids=["parent", "device", "subfolder", "empty"],
)
def test_a_member_file_must_be_a_plain_name_in_the_checkpoint_folder(recorded, tmp_path):
    """The old loader joined the recorded name to the folder unchecked: ../ read files outside it,
    and /dev/zero hashed for ever at start-up."""
    folder = tmp_path / "checkpoints"
    (folder / "sub").mkdir(parents=True)
    for path in (
        folder / "a.safetensors",
        folder / "sub" / "a.safetensors",
        tmp_path / "outside.safetensors",
        folder / "b.skops",
    ):
        path.write_bytes(b"weights")
    files = {"a": recorded, "b": "b.skops"}
    fitted_on = {
        m: {"file": f, "sha256": file_sha256(folder / f) if f and not f.startswith("/") else ""}
        for m, f in files.items()
    }
    metadata = {"detector": "committee", "classes": list(Detector.classes_), "member_checkpoints": fitted_on}
    masks, coefficients = [[True, False], [False, True], [True, True]], np.zeros((3, 3))
    CommitteeDetector(
        "committee", {"a": Detector("a"), "b": Detector("b")}, ["a", "b"], masks, coefficients, metadata
    ).save(folder / "committee.safetensors")
    committee = CommitteeDetector.load(folder / "committee.safetensors", "committee", Detector, validated=False)
    assert list(committee.members) == ["b"]
    assert "not a plain file name" in committee.unavailable["a"]
