"""Every registered detector: builds, trains on tiny data, saves, reloads, predicts identically."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.preprocessing import StandardScaler

from cifake_models import CheckpointError, get_spec, list_detectors, load_detector, load_report
from cifake_models.calibration import BetaCalibration, UnsureBand
from cifake_models.checkpoint import file_sha256, read_safetensors
from cifake_models.committee import CommitteeDetector
from cifake_models.data import load_split
from cifake_models.decision import DecisionRule, Verdict, Views
from cifake_models.detector import Detector, SklearnDetector, TorchDetector
from cifake_models.images import mirror
from cifake_models.labels import CLASSES
from cifake_models.nets import ImageNetWeightsUnavailable

DETECTORS = list_detectors()


def test_each_detector_is_registered_under_its_own_name():
    for name in DETECTORS:
        spec = get_spec(name)
        assert spec.name == name and spec.title
        assert spec.paper is None or 0 < spec.paper.accuracy < 1


def test_every_committee_comes_after_its_members():
    """predict_all, the trainer and the evaluation go in registry order: a committee combines answers already there."""
    for name in DETECTORS:
        assert all(DETECTORS.index(member) < DETECTORS.index(name) for member in get_spec(name).members)


def mixed_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return [
        rgb,
        Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)),  # larger, portrait
        rgb.convert("L"),
        rgb.convert("RGBA"),
        rgb.convert("P"),
        rgb.convert("CMYK"),
        Image.fromarray(rng.integers(0, 65535, (40, 50), dtype=np.uint16)),  # 16-bit
        Image.new("RGB", (7, 3), "white"),  # smaller than 32 and far from square
    ]


def test_without_a_folder_detectors_and_reports_come_from_the_environment(tiny_assets, monkeypatch):
    # `pip install .` leaves no assets/: the library reads the folders the README says to name.
    monkeypatch.setenv("CIFAKE_CHECKPOINTS", str(tiny_assets["checkpoints"]))
    monkeypatch.setenv("CIFAKE_REPORTS", str(tiny_assets["reports"]))
    tiny = tiny_assets["checkpoints"] / get_spec("cnn").checkpoint_file
    assert load_detector("cnn").metadata["data"] == read_safetensors(tiny)[1]["data"]
    assert load_report("cnn") == json.loads((tiny_assets["reports"] / "cnn.json").read_text())


@pytest.mark.parametrize("name", DETECTORS)
def test_reloaded_detector_predicts_identically_on_any_image(name, tiny_assets):
    first = load_detector(name, tiny_assets["checkpoints"])
    second = load_detector(name, tiny_assets["checkpoints"])
    images = mixed_images()
    proba = first.predict_proba(images)
    assert list(first.classes_) == ["FAKE", "REAL"]
    assert proba.shape == (len(images), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_array_equal(proba, second.predict_proba(images))
    assert set(first.predict(images)) <= set(first.classes_)  # labels, as scikit-learn's predict gives them
    assert set(first.verdicts(images)) <= set(Verdict)
    assert first.predict_proba([]).shape == (0, 2)


@pytest.mark.parametrize("name", DETECTORS)
def test_mirror_averaging_makes_a_detector_blind_to_left_and_right(name, tiny_assets):
    detector = load_detector(name, tiny_assets["checkpoints"])
    images = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    expected = (detector.single_view(images) + detector.single_view(mirror(images))) / 2
    detector.views = Views(mirror_average=True)
    np.testing.assert_allclose(detector.uncalibrated(images), expected, atol=1e-6)
    np.testing.assert_allclose(detector.uncalibrated(mirror(images)), expected, atol=1e-6)
    # Calibration is monotone and per image: the calibrated answer is as blind to the mirror.
    np.testing.assert_allclose(detector.probabilities(images), detector.probabilities(mirror(images)), atol=1e-6)


@pytest.mark.parametrize("name", DETECTORS)
def test_tiny_training_learns_the_tiny_task(name, tiny_assets):
    """The tiny classes differ at a glance (gradients vs noise). On the 16 held-out test images a
    detector that learned them is right at least 14 times and calls both classes; one that calls
    everything FAKE (or REAL), or answers at random, does not pass."""
    detector = load_detector(name, tiny_assets["checkpoints"])
    test = load_split(tiny_assets["data"], "test")
    p_fake = detector.probabilities(test.images)[:, list(detector.classes_).index("FAKE")]
    called_fake = p_fake >= detector.rule.threshold
    is_fake = test.labels == CLASSES.index("FAKE")
    assert called_fake.any() and not called_fake.all(), (
        f"{name} calls every test image {'FAKE' if called_fake.all() else 'REAL'}"
    )
    assert np.mean(called_fake == is_fake) >= 14 / 16, p_fake
    report = json.loads((tiny_assets["reports"] / f"{name}.json").read_text())
    assert report["test"]["n"] == 16 and report["test_leak_free"]["removed"] == 0
    assert report["threshold"]["chosen_on"] == "validation split"


@pytest.mark.parametrize("name", DETECTORS)
def test_checkpoint_describes_itself(name, tiny_assets):
    meta = load_detector(name, tiny_assets["checkpoints"]).metadata
    # A committee's members chose their own views; it records which member files it combines.
    own = ("members", "member_checkpoints") if get_spec(name).is_committee else ("test_time",)
    for key in (
        "architecture",
        "classes",
        "recipe",
        "initialisation",
        "data",
        "threshold",
        "validation",
        "training",
        "versions",
        *own,
    ):
        assert meta[key] not in (None, "", {}), key
    assert meta["classes"] == ["FAKE", "REAL"]
    assert len(meta["data"]["train_fingerprint"]) == 16
    assert "from scratch" in meta["initialisation"]
    if get_spec(name).is_torch:
        assert meta["preprocessing"]["crop"] in (24, 32) and len(meta["history"]) == meta["recipe"]["epochs"]


@pytest.mark.parametrize("name", DETECTORS)
def test_missing_checkpoint_names_the_file(name, tmp_path):
    with pytest.raises(CheckpointError, match=get_spec(name).checkpoint_file):
        load_detector(name, tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
@pytest.mark.parametrize("name", DETECTORS)
def test_corrupt_checkpoint_gives_a_clear_error(name, damage, tiny_assets, tmp_path):
    file = get_spec(name).checkpoint_file
    data = (tiny_assets["checkpoints"] / file).read_bytes()
    damaged = {"truncate": data[: len(data) // 2], "garbage": os.urandom(2048), "empty": b""}[damage]
    (tmp_path / file).write_bytes(damaged)
    with pytest.raises(CheckpointError, match=file):
        load_detector(name, tmp_path)


def test_a_checkpoint_with_the_wrong_weights_is_refused(tiny_assets, tmp_path):
    (tmp_path / "densenet121.safetensors").write_bytes((tiny_assets["checkpoints"] / "cnn.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="densenet121"):
        load_detector("densenet121", tmp_path)


class Sneaky:
    """A type no checkpoint of ours contains; loading it could run its code."""


def test_svm_file_with_an_untrusted_type_is_refused(tmp_path):
    import skops.io

    payload = {"estimator": Sneaky(), "metadata_json": "{}"}
    skops.io.dump(payload, tmp_path / "hog_svm.skops")
    with pytest.raises(CheckpointError, match="does not trust"):
        load_detector("hog_svm", tmp_path)


def test_networks_are_stored_in_half_precision(tiny_assets):
    tensors, meta = read_safetensors(tiny_assets["checkpoints"] / "resnet50.safetensors")
    assert tensors["fc.weight"].dtype == torch.float16 and meta["stored_dtype"] == "torch.float16"


IMAGENET = [name for name in DETECTORS if name in ("resnet50", "densenet121")]  # VGG-16's file is 528 MB


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_path_reads_weights_from_torch_home(name, tmp_path, monkeypatch):
    """torchvision reads $TORCH_HOME/hub/checkpoints/<file> before any download: a stand-in
    file with the right keys proves the path works offline, and that its values are used."""
    import torchvision

    spec = get_spec(name)
    weights_enum = {
        "resnet50": torchvision.models.ResNet50_Weights,
        "densenet121": torchvision.models.DenseNet121_Weights,
    }[name]
    builder = getattr(torchvision.models, name)
    stand_in = builder(weights=None).state_dict()
    stand_in = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in stand_in.items()}
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(stand_in, folder / os.path.basename(weights_enum.IMAGENET1K_V1.url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    module = spec.build_module(weights="imagenet")
    first_conv = next(p for n, p in module.named_parameters() if "conv" in n)
    assert torch.all(first_conv == 0.5)
    head = module.fc if name == "resnet50" else module.classifier
    assert head.out_features == 2 and not torch.all(head.weight == 0.5)


def test_imagenet_weights_unavailable_gives_a_clear_error(tmp_path, monkeypatch):
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ImageNetWeightsUnavailable, match=r"resnet50-.*\.pth.*--weights none"):
        get_spec("resnet50").build_module(weights="imagenet")


def test_the_papers_cnn_has_no_imagenet_weights():
    with pytest.raises(ValueError, match="no pretrained weights"):
        get_spec("cnn").build_module(weights="imagenet")


def stand_in(name: str, folder, metadata: dict) -> None:
    """An untrained checkpoint of ``name`` that records ``metadata``: loaders read it like any other."""
    spec = get_spec(name)
    path = folder / spec.checkpoint_file
    if spec.is_torch:
        TorchDetector(name, spec.build_module(), spec.preprocessing, metadata).save(path)
    elif spec.is_committee:  # on one member, itself a stand-in
        member = spec.members[0]
        stand_in(member, folder, {"detector": member})
        fitted_on = {
            member: {
                "file": get_spec(member).checkpoint_file,
                "sha256": file_sha256(folder / get_spec(member).checkpoint_file),
            }
        }
        CommitteeDetector(
            name,
            {member: Detector(member)},
            [member],
            [[True]],
            [[1.0, 0.0]],
            {**metadata, "member_checkpoints": fitted_on},
        ).save(path)
    else:
        SklearnDetector(name, StandardScaler(), metadata).save(path)


@pytest.mark.parametrize("name", ["cnn", "hog_svm", "committee"])
def test_a_checkpoint_recording_its_classes_in_another_order_is_refused(name, tmp_path):
    """Every detector reads its probability columns in CLASSES order, so a checkpoint recording
    (REAL, FAKE) would have its P(REAL) read as P(FAKE); the old loaders never compared."""
    stand_in(name, tmp_path, {"detector": name, "classes": list(CLASSES)[::-1]})
    with pytest.raises(CheckpointError, match=r"records its classes as \['REAL', 'FAKE'\]"):
        load_detector(name, tmp_path)


def test_the_svm_loader_refuses_another_detectors_file(tmp_path):
    """As the networks' and the committee's loaders do; the old one loaded it as hog_svm."""
    stand_in("hog_svm", tmp_path, {"detector": "cnn", "classes": list(CLASSES)})
    with pytest.raises(CheckpointError, match="holds the detector 'cnn', not 'hog_svm'"):
        load_detector("hog_svm", tmp_path)


RULE = {
    "test_time": {"mirror_average": True},
    "threshold": {"value": 0.5},
    "calibration": BetaCalibration().to_dict(),  # the identity
    "unsure": {"low": 0.5, "high": 0.5, "confidence": 0.5, "target_accuracy": 0.99},
}


def test_the_decision_rule_is_read_from_the_checkpoint_once_into_typed_fields(tmp_path):
    stand_in("cnn", tmp_path, {"detector": "cnn", "classes": list(CLASSES), **RULE})
    detector = load_detector("cnn", tmp_path)
    assert detector.views == Views(mirror_average=True) and detector.rule == DecisionRule.at(0.5)


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        *[(n, f) for n in ("cnn", "hog_svm", "committee") for f in ("threshold", "calibration", "unsure")],
        ("cnn", "test_time"),
        ("hog_svm", "test_time"),
    ],
)
def test_a_checkpoint_without_its_decision_rule_is_refused_by_file_and_field(name, missing, tmp_path):
    """No silent default (the old loaders served at threshold 0.5, uncalibrated, never unsure)."""
    stand_in(
        name, tmp_path, {"detector": name, "classes": list(CLASSES), **{k: v for k, v in RULE.items() if k != missing}}
    )
    with pytest.raises(
        CheckpointError, match=rf"{get_spec(name).checkpoint_file}.* no decision rule field '{missing}'"
    ):
        load_detector(name, tmp_path)


def test_predict_gives_labels_and_verdicts_give_the_three_way_answer():
    class Fixed(Detector):
        def single_view(self, batch):
            p = np.linspace(0, 1, len(batch))
            return np.stack([p, 1 - p], axis=1)  # P(FAKE) in column FAKE = 0

    detector = Fixed("fixed", rule=DecisionRule(BetaCalibration(), 0.5, UnsureBand(0.2, 0.8, 0.8)))
    images = [Image.new("RGB", (32, 32))] * 5  # P(FAKE) 0, 0.25, 0.5, 0.75, 1
    assert list(detector.predict(images)) == ["REAL", "REAL", "FAKE", "FAKE", "FAKE"]
    assert list(detector.verdicts(images)) == ["REAL", "UNSURE", "UNSURE", "UNSURE", "FAKE"]
    with pytest.raises(RuntimeError, match="no decision rule yet"):
        Fixed("unvalidated").predict(images)
