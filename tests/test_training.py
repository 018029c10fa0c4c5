import dataclasses
import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import train_tiny

from cifake_models import CheckpointError, get_spec, list_detectors, load_detector
from cifake_models.checkpoint import file_sha256, hardware, library_versions, read_safetensors, save_safetensors
from cifake_models.data import Split, load_split
from cifake_models.detector import Detector, TorchDetector
from cifake_models.explain import hog_features
from cifake_models.labels import CLASSES
from cifake_models.preprocessing import Preprocessing
from cifake_models.reports import describe_recipe
from train.__main__ import main as train_main
from train.metadata import DataInfo
from train.revalidate import main as revalidate_main
from train.torch_fit import resume_path, teacher_logits, training_loss, training_step
from train.validation import record_validation

# A stage continuing a train_tiny checkpoint must hold out the validation split it held out.
TINY_SPLIT = ["--val-fraction", "0.25"]


def flags(**options) -> list[str]:
    """``--name value`` pairs for a command line, in order (``init_from`` gives ``--init-from``)."""
    return [word for key, value in options.items() for word in (f"--{key.replace('_', '-')}", str(value))]


class Interrupt(KeyboardInterrupt):
    """Stands for Ctrl-C arriving after an epoch has been saved."""


def interrupt_after(epoch: int):
    def hook(done: int, record: dict) -> None:
        if done == epoch:
            raise Interrupt

    return hook


@pytest.mark.parametrize("name", ["cnn", "resnet50"])
def test_resumed_run_equals_uninterrupted_run(name, tiny_data, tmp_path):
    whole = train_tiny(name, tiny_data / "packed", tmp_path / "whole", epochs=3)
    with pytest.raises(Interrupt):
        train_tiny(name, tiny_data / "packed", tmp_path / "cut", epochs=3, on_epoch_end=interrupt_after(2))
    assert resume_path(tmp_path / "cut", name).is_file()
    assert not (tmp_path / "cut" / get_spec(name).checkpoint_file).exists()
    resumed = train_tiny(name, tiny_data / "packed", tmp_path / "cut", epochs=3, resume=True)
    for key, value in whole.module.state_dict().items():
        torch.testing.assert_close(resumed.module.state_dict()[key], value, rtol=0, atol=0, msg=key)
    losses = lambda d: [h["train_loss"] for h in d.metadata["history"]]  # noqa: E731
    assert losses(resumed) == losses(whole) and len(losses(whole)) == 3
    assert not resume_path(tmp_path / "cut", name).exists()


def test_a_moving_average_of_the_weights_is_shipped_and_resumed(tiny_data, tmp_path):
    """With --ema the checkpoint holds the average (not the last weights), and a resumed run continues it exactly."""
    plain = train_tiny("cnn", tiny_data / "packed", tmp_path / "plain", epochs=2)
    whole = train_tiny("cnn", tiny_data / "packed", tmp_path / "whole", epochs=2, ema=0.5)
    with pytest.raises(Interrupt):
        train_tiny("cnn", tiny_data / "packed", tmp_path / "cut", epochs=2, ema=0.5, on_epoch_end=interrupt_after(1))
    resumed = train_tiny("cnn", tiny_data / "packed", tmp_path / "cut", epochs=2, ema=0.5, resume=True)
    assert whole.metadata["recipe"]["ema"] == 0.5
    weights = lambda d: torch.cat([p.flatten() for p in d.module.parameters()])  # noqa: E731
    torch.testing.assert_close(weights(resumed), weights(whole), rtol=0, atol=0)
    # The same steps as the plain run (same seed), averaged: other weights, not far from them.
    assert not torch.equal(weights(whole), weights(plain))
    assert whole.metadata["history"][0]["train_loss"] == plain.metadata["history"][0]["train_loss"]


@pytest.mark.parametrize("decay", ["1", "-0.1", "1.5"])
def test_a_decay_outside_zero_to_one_is_refused(decay, capsys):
    with pytest.raises(SystemExit):
        train_main(["cnn", "--ema", decay, "--list"])
    assert "--ema: DECAY must be at least 0 (off) and below 1" in capsys.readouterr().err


def test_a_fresh_run_over_an_interrupted_one_is_refused_and_the_state_kept(tiny_data, tmp_path):
    with pytest.raises(Interrupt):
        train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2, on_epoch_end=interrupt_after(1))
    before = file_sha256(resume_path(tmp_path, "cnn"))
    with pytest.raises(CheckpointError, match=r"continue it with --resume, or start a new run with another --out"):
        train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2)
    assert file_sha256(resume_path(tmp_path, "cnn")) == before


def test_resume_refuses_a_changed_recipe(tiny_data, tmp_path):
    with pytest.raises(Interrupt):
        train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2, on_epoch_end=interrupt_after(1))
    with pytest.raises(CheckpointError, match="another recipe"):
        train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2, lr=0.5, resume=True)


def test_resume_keeps_a_finished_checkpoint_and_refuses_to_replace_it_with_another_recipe(tiny_data, tmp_path, caplog):
    """Re-running an interrupted batch of runs with --resume must not train again what finished."""
    caplog.set_level(logging.INFO, logger="train")
    checkpoint = tmp_path / "cnn.safetensors"
    train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2)
    before = file_sha256(checkpoint)
    caplog.clear()
    kept = train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2, resume=True)
    out = caplog.text
    assert f"already trained: {checkpoint}" in out and "epoch" not in out
    assert file_sha256(checkpoint) == before and len(kept.metadata["history"]) == 2
    with pytest.raises(CheckpointError, match=r"finished, but by another recipe.*recipe\.lr: 0\.01 -> 0\.5"):
        train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2, lr=0.5, resume=True)
    assert file_sha256(checkpoint) == before


def test_resume_reads_states_and_checkpoints_written_before_a_field_was_recorded(tiny_data, tmp_path, caplog):
    # A recipe field added since (distill_temperature) and the process count, as older code wrote them.
    with pytest.raises(Interrupt):
        train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2, on_epoch_end=interrupt_after(1))
    state_file = resume_path(tmp_path, "cnn")
    state = torch.load(state_file, weights_only=True)
    identity = json.loads(state["identity"])
    del identity["processes"], identity["recipe"]["distill_temperature"]
    torch.save({**state, "identity": json.dumps(identity)}, state_file)
    finished = train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2, resume=True)
    assert len(finished.metadata["history"]) == 2
    checkpoint = tmp_path / "cnn.safetensors"
    tensors, metadata = read_safetensors(checkpoint)
    del metadata["recipe"]["distill_temperature"], metadata["training"]["processes"]
    save_safetensors(checkpoint, tensors, metadata)
    caplog.set_level(logging.INFO, logger="train")
    train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2, resume=True)
    assert "already trained" in caplog.text


def test_resume_keeps_a_fitted_svm(tiny_data, tmp_path, caplog):
    args = [
        "hog_svm",
        "--data",
        str(tiny_data / "packed"),
        "--out",
        str(tmp_path),
        "--svm-components",
        "10",
        *TINY_SPLIT,
        "--resume",
    ]
    assert train_main(args) == 0
    before = file_sha256(tmp_path / "hog_svm.skops")
    caplog.set_level(logging.INFO, logger="train")
    assert train_main(args) == 0
    assert "hog_svm: already trained" in caplog.text and file_sha256(tmp_path / "hog_svm.skops") == before
    with pytest.raises(CheckpointError, match="n_components: 10 -> 12"):
        train_main([*args, "--svm-components", "12"])


def test_resuming_with_another_process_count_is_refused(tiny_data, tmp_path):
    with pytest.raises(Interrupt):
        train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2, on_epoch_end=interrupt_after(1))
    state_file = resume_path(tmp_path, "cnn")
    state = torch.load(state_file, weights_only=True)
    assert json.loads(state["identity"])["processes"] == 1
    # As torchrun --nproc_per_node 2 would have saved it.
    state["identity"] = json.dumps({**json.loads(state["identity"]), "processes": 2})
    torch.save(state, state_file)
    with pytest.raises(CheckpointError, match=r"saved by a run of 2 processes, and this one has 1.*--nproc_per_node 2"):
        train_tiny("cnn", tiny_data / "packed", tmp_path, epochs=2, resume=True)


def test_the_history_records_the_rate_each_epoch_trained_at(tiny_data, tmp_path):
    detector = train_tiny(
        "cnn", tiny_data / "packed", tmp_path, epochs=2, lr=0.01, step_size=1
    )  # StepLR: x0.1 after each epoch
    assert [h["lr"] for h in detector.metadata["history"]] == pytest.approx([0.01, 0.001])


def test_the_final_checkpoint_is_written_once_with_its_validation_choices(tiny_data, tmp_path, monkeypatch):
    """A checkpoint without its threshold must never sit at the final path (a kill would leave it serving at 0.5)."""
    import cifake_models.detector

    written = []
    save = cifake_models.detector.save_safetensors

    def recording(path, tensors, metadata):
        written.append((Path(path), "threshold" in metadata and "calibration" in metadata))
        return save(path, tensors, metadata)

    monkeypatch.setattr(cifake_models.detector, "save_safetensors", recording)
    train_tiny("cnn", tiny_data / "packed", tmp_path)
    assert [complete for path, complete in written if path.parent == tmp_path] == [True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_final_validation_runs_on_the_training_device(tiny_data, tmp_path, monkeypatch):
    import train.torch_fit

    devices = []
    validate = train.torch_fit.record_validation

    def recording(detector, val):
        devices.append(next(detector.module.parameters()).device.type)
        return validate(detector, val)

    monkeypatch.setattr(train.torch_fit, "record_validation", recording)
    split = load_split(tiny_data / "packed", "train")
    detector = train.torch_fit.fit_torch(
        get_spec("cnn"),
        split,
        split,
        dataclasses.replace(get_spec("cnn").recipe, epochs=1, batch_size=8),
        tmp_path,
        DataInfo.of("tiny", split, split, 0.25, 0),
        device="cuda",
    )
    assert devices == ["cuda"]
    assert next(detector.module.parameters()).device.type == "cpu"
    assert detector.metadata["training"]["hardware"].startswith("GPU: ")


def test_command_line_trains_and_records_the_recipe(tiny_data, tmp_path):
    code = train_main(
        [
            "cnn",
            "hog_svm",
            "--data",
            str(tiny_data / "kaggle"),
            "--out",
            str(tmp_path),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--lr",
            "0.002",
            "--optimizer",
            "adamw",
            "--weight-decay",
            "0.01",
            "--svm-components",
            "10",
            "--svm-cells",
            "8",
            "16",
            "--svm-smoothing",
            "1",
            "--val-fraction",
            "0.25",
        ]
    )
    assert code == 0
    _, meta = read_safetensors(tmp_path / "cnn.safetensors")
    assert meta["recipe"]["epochs"] == 2 and meta["recipe"]["lr"] == 0.002 and meta["recipe"]["batch_size"] == 8
    assert meta["recipe"]["optimizer"] == "adamw" and meta["recipe"]["weight_decay"] == 0.01
    assert "; AdamW 0.002, weight decay 0.01, batch 8; 2 epochs" in describe_recipe(meta)
    assert meta["data"]["n_train"] == 36 and meta["data"]["n_val"] == 12
    assert len(meta["history"]) == 2
    svm_recipe = load_detector("hog_svm", tmp_path).metadata["recipe"]
    assert (
        svm_recipe["n_components"] == 10
        and svm_recipe["pixels_per_cell"] == [8, 16]
        and svm_recipe["smoothing"] == [1.0]
    )
    assert hog_features(load_detector("hog_svm", tmp_path)).smoothing == (1.0,)

    # Revalidation rebuilds the same validation split, so it remakes the same choices; weights stay.
    weights, _ = read_safetensors(tmp_path / "cnn.safetensors")
    assert revalidate_main(["cnn", "hog_svm", "--data", str(tiny_data / "packed"), "--checkpoints", str(tmp_path)]) == 0
    weights_after, meta_after = read_safetensors(tmp_path / "cnn.safetensors")
    assert all(torch.equal(weights[k], weights_after[k]) for k in weights)
    assert meta_after["test_time"] == meta["test_time"] and meta_after["threshold"] == meta["threshold"]
    assert meta_after["validation"] == meta["validation"]


def test_revalidation_refuses_a_checkpoint_whose_validation_split_it_cannot_rebuild(tiny_data, tmp_path, capsys):
    assert (
        train_main(
            ["cnn", "--data", str(tiny_data / "packed"), "--out", str(tmp_path), "--epochs", "1", "--limit", "20"]
        )
        == 0
    )
    assert revalidate_main(["cnn", "--data", str(tiny_data / "packed"), "--checkpoints", str(tmp_path)]) == 1
    assert "cannot be rebuilt" in capsys.readouterr().err


def test_command_line_help_and_bad_detector():
    help_text = subprocess.run(
        [sys.executable, "-m", "train", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--resume" in help_text and "--weights" in help_text and "densenet121" in help_text
    assert "data/cifake/, then ../shared/data/cifake/" in " ".join(help_text.split())  # where default_data_dir looks
    assert "default 0: off" not in help_text  # native32's recipe shifts, smooths labels and changes uploads
    with pytest.raises(SystemExit):
        train_main(["alexnet"])


def test_the_list_names_every_detector_and_its_weights(capsys):
    assert train_main(["--list"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in rows] == list_detectors()
    kinds = {row[0]: (row[1], row[2]) for row in rows}
    assert kinds["resnet50"] == ("network", "none,imagenet") and kinds["native32"] == ("network", "none")
    assert kinds["hog_svm"][0] == "svm" and kinds["committee"][0] == "committee"


@pytest.mark.parametrize("detectors", [[], ["cnn"], ["resnet50", "native32"]])
def test_imagenet_weights_for_a_detector_without_them_are_refused_before_any_work(detectors, tmp_path, capsys):
    with pytest.raises(SystemExit):  # before the (missing) data is looked for
        train_main([*detectors, "--weights", "imagenet", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert "only resnet50, vgg16_bn, densenet121 have ImageNet weights" in capsys.readouterr().err


def test_the_committee_reads_its_members_where_it_is_written(tiny_data, tmp_path, capsys):
    """It loads them from beside its own file, so it has no other folder to read them from."""
    with pytest.raises(SystemExit):
        train_main(["committee", *flags(data=tiny_data / "packed", members=tmp_path, out=tmp_path / "elsewhere")])
    assert "unrecognized arguments: --members" in capsys.readouterr().err


def test_the_hardware_recorded_is_the_device_used(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    assert hardware("cuda:0") == "GPU: Test GPU"
    assert hardware("cpu").startswith("CPU: ")
    # The SVM fits on the CPU, wherever a GPU is.
    svm = train_tiny("hog_svm", tiny_data / "packed", tmp_path)
    assert svm.metadata["training"]["hardware"].startswith("CPU: ")


def test_checkpoints_record_every_library_that_shapes_them(monkeypatch):
    versions = library_versions()
    for library in ("torch", "numpy", "scikit-learn", "pillow", "scikit-image", "scipy", "skops", "safetensors"):
        assert versions[library], library
    assert (versions["torch"], versions["torchvision"]) == (
        torch.__version__,
        torchvision.__version__,
    )  # with the build tag
    monkeypatch.setattr("cifake_models.checkpoint.RECORDED_LIBRARIES", ("numpy", "no-such-library"))
    assert library_versions()["no-such-library"] is None


def test_train_transform_is_seeded_and_crops_to_the_networks_size():
    pre = get_spec("resnet50").preprocessing
    batch = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8)
    a = pre.train_transform(batch, torch.Generator().manual_seed(1))
    b = pre.train_transform(batch, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 24, 24) and torch.equal(a, b)
    assert pre.eval_transform(batch.numpy()).shape == (6, 3, 24, 24)


def test_a_full_scale_crop_keeps_the_image():
    from cifake_models.preprocessing import random_resized_crop

    x = torch.rand(4, 3, 32, 32)
    out = random_resized_crop(x, 32, (1.0, 1.0), torch.Generator().manual_seed(0), ratio=(1.0, 1.0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_translation_moves_pixels_without_resampling_them():
    from cifake_models.preprocessing import random_translate

    x = torch.rand(64, 3, 32, 32)
    out = random_translate(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4,) * 4, mode="reflect")
    offsets = set()
    for image, shifted in zip(padded, out):
        # Each output is one 32x32 window of its own padded image, at an offset within 4 pixels.
        match = [
            (dy, dx) for dy in range(9) for dx in range(9) if torch.equal(image[:, dy : dy + 32, dx : dx + 32], shifted)
        ]
        assert match
        offsets.add(match[0])
    assert len(offsets) > 10  # offsets are drawn per image


def test_a_stage_may_add_translation_and_records_it(tiny_data, tmp_path):
    code = train_main(
        ["cnn", "--data", str(tiny_data / "packed"), "--out", str(tmp_path), "--epochs", "1", "--translate", "2"]
    )
    assert code == 0
    detector = load_detector("cnn", tmp_path)
    assert detector.preprocessing.translate == 2
    assert "shift up to 2 px (reflect pad)" in describe_recipe(detector.metadata)


def test_grayscale_matches_pil():
    from PIL import Image

    from cifake_models.preprocessing import Preprocessing

    pixels = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    ours = Preprocessing(grayscale=True, mean=(0.0,), std=(1.0,)).eval_transform(pixels)[0, 0].numpy() * 255
    pil = np.asarray(Image.fromarray(pixels[0]).convert("L"), dtype=np.float32)
    assert np.abs(ours - pil).max() <= 1.0  # PIL rounds to integers


def test_a_second_stage_continues_from_the_checkpoint_and_keeps_the_first_on_record(tiny_data, tmp_path):
    data = tiny_data / "packed"
    first = train_tiny("cnn", data, tmp_path / "first", epochs=2)
    first_file = tmp_path / "first" / "cnn.safetensors"
    # A zero learning rate keeps the weights: the second stage must start from the first's.
    code = train_main(
        [
            "cnn",
            *flags(data=data, out=tmp_path / "second", init_from=first_file, epochs=1, batch_size=8, lr=0),
            *TINY_SPLIT,
        ]
    )
    assert code == 0
    second = load_detector("cnn", tmp_path / "second")
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(second.probabilities(images), first.probabilities(images), atol=1e-3)
    meta = second.metadata
    [stage] = meta["earlier_stages"]
    assert stage["sha256"] == file_sha256(first_file) and stage["recipe"]["epochs"] == 2
    assert [(h["epoch"], h["stage"]) for h in meta["history"]] == [(1, 1), (2, 1), (3, 2)]
    assert meta["training"]["wall_time_s"] >= stage["training"]["wall_time_s"]  # the total, rounded to 0.1 s
    assert meta["initialisation"].startswith("random") and "2 stages" in meta["initialisation"]
    assert describe_recipe(meta).startswith("stage 1: ") and " → stage 2: " in describe_recipe(meta)

    # A third stage keeps both earlier ones, each with its own wall time, which add up to the total.
    code = train_main(
        [
            "cnn",
            *flags(
                data=data,
                out=tmp_path / "third",
                epochs=1,
                batch_size=8,
                init_from=tmp_path / "second" / "cnn.safetensors",
            ),
            *TINY_SPLIT,
        ]
    )
    assert code == 0
    third = load_detector("cnn", tmp_path / "third").metadata
    assert [s["sha256"] for s in third["earlier_stages"]] == [
        file_sha256(first_file),
        file_sha256(tmp_path / "second" / "cnn.safetensors"),
    ]
    assert third["earlier_stages"][1]["training"]["wall_time_s"] == pytest.approx(
        meta["training"]["wall_time_s"] - stage["training"]["wall_time_s"], abs=0.11
    )
    own_times = sum(s["training"]["wall_time_s"] for s in third["earlier_stages"])
    assert own_times <= third["training"]["wall_time_s"] + 0.11
    assert [h["stage"] for h in third["history"]] == [1, 1, 2, 3]

    # A stage holding out another split would validate on images the earlier stages trained on.
    with pytest.raises(CheckpointError, match="another validation split"):
        train_main(
            [
                "cnn",
                *flags(data=data, out=tmp_path / "fourth", epochs=1, batch_size=8),
                *TINY_SPLIT,
                *flags(split_seed=1, init_from=first_file),
            ]
        )


def test_a_second_stage_refuses_another_networks_checkpoint(tiny_data, tmp_path):
    train_tiny("cnn", tiny_data / "packed", tmp_path)
    with pytest.raises(CheckpointError, match="holds the detector 'cnn'"):
        train_main(
            ["resnet50", *flags(data=tiny_data / "packed", out=tmp_path / "r", init_from=tmp_path / "cnn.safetensors")]
        )
    with pytest.raises(SystemExit):  # one network at a time, never the SVM
        train_main(["hog_svm", "--init-from", str(tmp_path / "cnn.safetensors")])


def test_a_second_stage_may_change_the_crop(tiny_data, tmp_path):
    data = tiny_data / "packed"
    train_tiny("resnet50", data, tmp_path / "first")  # the paper's 24x24 crop
    code = train_main(
        [
            "resnet50",
            *flags(
                data=data,
                out=tmp_path / "second",
                epochs=1,
                batch_size=8,
                init_from=tmp_path / "first" / "resnet50.safetensors",
                crop=32,
            ),
            *("--crop-scale", "1", "1"),
            *TINY_SPLIT,
        ]
    )
    assert code == 0
    second = load_detector("resnet50", tmp_path / "second")
    assert second.preprocessing.crop == 32 and second.preprocessing.crop_scale == (1.0, 1.0)
    assert second.metadata["earlier_stages"][0]["preprocessing"]["crop"] == 24
    assert describe_recipe(second.metadata).startswith("stage 1: RGB 24x24")


def test_a_second_stage_starts_from_its_parents_preprocessing(tiny_data, tmp_path, capsys):
    data = tiny_data / "packed"
    first = ["cnn", "--data", str(data), "--epochs", "1", "--batch-size", "8", *TINY_SPLIT]
    only_blur = [
        arg for family in ("jpeg", "enlarge", "downscale", "shift", "crop") for arg in ("--upload-weight", family, "0")
    ]
    assert (
        train_main(
            [
                *first,
                "--out",
                str(tmp_path / "first"),
                "--translate",
                "1",
                "--upload-augment",
                "0.25",
                "--upload-range",
                "blur",
                "0.3",
                "1.5",
                "--upload-weight",
                "blur",
                "3",
                *only_blur,
            ]
        )
        == 0
    )
    parent = tmp_path / "first" / "cnn.safetensors"
    assert (
        train_main(
            [
                *first,
                "--out",
                str(tmp_path / "second"),
                "--init-from",
                str(parent),
                "--upload-augment",
                "0.5",
                "--upload-weight",
                "crop",
                "2",
                "--upload-weight",
                "jpeg",
                "1",
            ]
        )
        == 0
    )
    second = load_detector("cnn", tmp_path / "second").preprocessing
    assert second.translate == 1 and ("blur", 0.3, 1.5) in second.upload_ranges  # the parent's, not the registry's 0
    assert second.upload_augment == 0.5  # given, so it overrides the parent's
    # The parent's weights, with the given ones replacing theirs; recorded in the families' order,
    # a weight of 1 left out.
    assert second.upload_weights == (("enlarge", 0.0), ("downscale", 0.0), ("blur", 3.0), ("shift", 0.0), ("crop", 2.0))
    # Weights that, with the parent's, leave no family to draw are refused before training.
    assert (
        train_main(
            [*first, "--out", str(tmp_path / "third"), "--init-from", str(parent), "--upload-weight", "blur", "0"]
        )
        == 2
    )
    assert (
        "every family would weigh 0" in capsys.readouterr().err
        and not (tmp_path / "third" / "cnn.safetensors").exists()
    )
    # A stage never overwrites its parent: it is written elsewhere and shipped by the validation rule.
    with pytest.raises(SystemExit):
        train_main([*first, "--out", str(tmp_path / "first"), "--init-from", str(parent)])
    assert "python -m train.choose cnn DIR --ship" in capsys.readouterr().err


class LeftHalfDetector(Detector):
    """Judges by the left half of an image only: P(FAKE) rises with its brightness there."""

    def single_view(self, batch: np.ndarray) -> np.ndarray:
        fake = 1 / (1 + np.exp(-(batch[:, :, :16].mean(axis=(1, 2, 3)) - 128) / 10))
        return np.stack([fake, 1 - fake], axis=1)


def half_lit_split(sides: str, n: int = 40) -> Split:
    """One half of each image tells its class (FAKE bright, REAL dark), the other is mid-grey;
    ``sides`` says which half: always the left, or either at random."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = np.full((n, 32, 32, 3), 128, np.uint8)
    for image, label in zip(images, labels):
        half = slice(0, 16) if sides == "left" or rng.random() < 0.5 else slice(16, 32)
        image[:, half] = 200 if CLASSES[label] == "FAKE" else 50
    return Split(images, labels, np.array([str(i) for i in range(n)]))


@pytest.mark.parametrize("sides, averaged", [("left", False), ("either", True)])
def test_validation_chooses_mirror_averaging_only_where_it_raises_accuracy(sides, averaged):
    """A detector blind to the right half misses a quarter of the either-side images on its own
    (the half it sees is grey) and none with its mirror view; where the telling half is always
    on the left, the mirror adds nothing and the cheaper single view is kept."""
    detector, val = LeftHalfDetector("left_half"), half_lit_split(sides)
    figures = record_validation(detector, val)
    assert detector.views.mirror_average is averaged
    assert detector.metadata["test_time"]["validation_accuracy"]["mirror_average"] == 1.0
    assert detector.metadata["test_time"]["validation_accuracy"]["single"] == (
        1.0 if sides == "left" else pytest.approx(0.75, abs=0.1)
    )
    assert figures["accuracy"] == 1.0
    verdicts = detector.decide(detector.probabilities(val.images))
    assert np.all(verdicts == np.array(CLASSES)[val.labels])


def test_the_distillation_loss_mixes_cross_entropy_with_the_softened_teacher():
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(6, 2, requires_grad=True), torch.randn(6, 2), torch.randint(0, 2, (6,))
    recipe = get_spec("native32").recipe  # label smoothing 0.1
    plain = torch.nn.functional.cross_entropy(student, labels, label_smoothing=0.1)
    assert torch.equal(training_loss(student, labels, recipe), plain)
    # Weight 1, T 2: T^2 times the KL divergence from the teacher's softened distribution, by hand.
    soft = dataclasses.replace(recipe, distill_weight=1.0, distill_temperature=2.0)
    p_teacher, log_p_student = torch.softmax(teacher / 2, 1), torch.log_softmax(student / 2, 1)
    by_hand = 4 * (p_teacher * (torch.log(p_teacher) - log_p_student)).sum(1).mean()
    torch.testing.assert_close(training_loss(student, labels, soft, teacher), by_hand)
    # A student that already answers as the teacher has nothing left to learn from it.
    same = teacher.clone().requires_grad_(True)
    training_loss(same, labels, soft, teacher).backward()
    assert same.grad.abs().max() < 1e-6
    half = dataclasses.replace(soft, distill_weight=0.5)
    torch.testing.assert_close(training_loss(student, labels, half, teacher), 0.5 * plain + 0.5 * by_hand)


def assert_distillation_refusals(data, tmp_path, teacher, capsys):
    """The distillation test's refusals: a teacher of the wrong input size, one that saw the
    student's validation images, and a teacher without a weight."""
    # A teacher that cannot take the student's input size is refused before training starts.
    with pytest.raises(CheckpointError, match="cannot take resnet50's 24x24 training views"):
        train_main(
            [
                "resnet50",
                *flags(
                    data=data,
                    out=tmp_path / "small",
                    val_fraction=0.25,
                    distill_from=tmp_path / "cnn.safetensors",
                    distill_weight=0.5,
                ),
            ]
        )
    # With the default tenth held out, part of this run's validation split trained the teacher.
    with pytest.raises(CheckpointError, match="held out another validation split"):
        train_main(["cnn", *flags(data=data, out=tmp_path / "leaky", distill_from=teacher, distill_weight=0.5)])
    with pytest.raises(SystemExit):
        train_main(["cnn", "--distill-from", str(teacher)])  # no weight
    assert "needs both --distill-from" in capsys.readouterr().err


def test_a_distillation_stage_records_its_teacher_and_refuses_one_that_saw_its_validation_images(
    tiny_data, tmp_path, capsys, monkeypatch
):
    data = tiny_data / "packed"
    train_tiny("native32", data, tmp_path / "teacher")  # holds out a quarter of train
    teacher = tmp_path / "teacher" / "native32.safetensors"
    assert (
        train_main(
            [
                "densenet121",
                *flags(
                    data=data,
                    out=tmp_path,
                    epochs=1,
                    batch_size=8,
                    val_fraction=0.25,
                    crop=32,
                    distill_from=teacher,
                    distill_weight=0.5,
                    distill_temperature=2,
                ),
            ]
        )
        == 0
    )
    meta = load_detector("densenet121", tmp_path).metadata
    assert meta["teacher"]["detector"] == "native32" and meta["teacher"]["sha256"] == file_sha256(teacher)
    assert meta["recipe"]["distill_weight"] == 0.5 and meta["recipe"]["distill_temperature"] == 2
    assert "distilled from Native-32 CNN (ours) (weight 0.5, T 2)" in describe_recipe(meta)
    # A grayscale student learns from a colour teacher: at every step the teacher answers the very
    # views the student trains on, each network encoding them its own way.
    answered, steps = {}, []

    def recording_teacher(teacher, views, use_amp):
        logits = teacher_logits(teacher, views, use_amp)
        answered[id(logits)] = views
        return logits

    def recording_step(*args, **kwargs):
        steps.append((args[2], kwargs["teacher_logits"]))
        return training_step(*args, **kwargs)

    monkeypatch.setattr("train.torch_fit.teacher_logits", recording_teacher)
    monkeypatch.setattr("train.torch_fit.training_step", recording_step)
    assert (
        train_main(
            [
                "cnn",
                *flags(
                    data=data,
                    out=tmp_path,
                    epochs=1,
                    val_fraction=0.25,
                    upload_augment=1,
                    distill_from=teacher,
                    distill_weight=0.5,
                ),
            ]
        )
        == 0
    )  # random views: a second draw would differ
    assert load_detector("cnn", tmp_path).metadata["teacher"]["sha256"] == file_sha256(teacher)
    assert steps and all(logits is not None and id(logits) in answered for _, logits in steps)
    for x, logits in steps:
        assert answered[id(logits)].shape[1] == 3 and x.shape[1] == 1
        assert torch.equal(get_spec("cnn").preprocessing.encode(answered[id(logits)]), x)
    monkeypatch.undo()
    assert_distillation_refusals(data, tmp_path, teacher, capsys)


def test_the_teacher_answers_the_students_views_as_it_answers_the_images_themselves():
    """Un-augmented training views, encoded by each network, are exactly its test-time input."""
    torch.manual_seed(0)
    batch = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    plain = Preprocessing(grayscale=True, crop=32, crop_scale=(1.0, 1.0), hflip=False, mean=(0.0,), std=(1.0,))
    views = plain.train_views(batch, torch.Generator().manual_seed(0))
    assert views.shape == (5, 3, 32, 32)  # still colour
    torch.testing.assert_close(plain.encode(views), plain.eval_transform(batch))
    spec = get_spec("native32")
    teacher = TorchDetector(spec.name, spec.build_module().eval(), spec.preprocessing)
    with torch.no_grad():
        own_input = teacher.module(teacher.preprocessing.eval_transform(batch))
    torch.testing.assert_close(teacher_logits(teacher, views, use_amp=False), own_input)


@pytest.mark.parametrize("computes_bf16", [True, False])
def test_bf16_on_a_cpu_without_bf16_arithmetic_warns_and_the_checkpoint_says_which_cpu(
    computes_bf16, tiny_data, tmp_path, monkeypatch
):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: computes_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    args = [
        "cnn",
        "--data",
        str(tiny_data / "packed"),
        "--out",
        str(tmp_path),
        "--epochs",
        "1",
        "--limit",
        "20",
        "--precision",
        "bf16",
        "--device",
        "cpu",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_main(args) == 0
    assert any("bf16 is emulated" in str(w.message) for w in caught) == (not computes_bf16)
    hardware = read_safetensors(tmp_path / "cnn.safetensors")[1]["training"]["hardware"]
    assert ("with BF16" in hardware) == computes_bf16


def test_a_smoothing_sigma_of_zero_or_less_is_refused(capsys):
    with pytest.raises(SystemExit):
        train_main(["hog_svm", "--svm-smoothing", "1", "0"])
    assert "--svm-smoothing: each SIGMA must be above 0, not 0" in capsys.readouterr().err


class Reached(Exception):
    """Stands for a command's work: raised where it would start, once the pools are read."""


@pytest.mark.parametrize(
    "entry, module, step, argv",
    [
        ("train.__main__", "train.__main__", "run", ["cnn"]),
        ("train.__main__", "train.replay", "targets_of", ["replay", "--all", "--out", "unused"]),
        ("train.evaluate", "train.evaluate", "load_split", ["cnn", "--data", "unused"]),
        ("train.scope_fit", "train.scope_fit", "load_detector", []),
    ],
)
def test_threads_caps_the_blas_and_openmp_pools_as_well_as_torch(entry, module, step, argv, monkeypatch):
    """--threads reaches NumPy's and SciPy's BLAS and scikit-learn's OpenMP (the SVM, calibration and scope fits)."""
    import importlib

    from threadpoolctl import threadpool_info, threadpool_limits

    pools = {}

    def reached(*args, **kwargs):
        pools.update({(p["user_api"], p["filepath"]): p["num_threads"] for p in threadpool_info()})
        raise Reached

    monkeypatch.setattr(importlib.import_module(module), step, reached)
    torch_threads = torch.get_num_threads()
    with threadpool_limits(2):  # whatever an earlier test left, more than one thread before the command
        try:
            with pytest.raises(Reached):
                importlib.import_module(entry).main([*argv, "--threads", "1"])
        finally:
            torch.set_num_threads(torch_threads)
    assert {api for api, _ in pools} == {"blas", "openmp"}
    assert set(pools.values()) == {1}, pools
