"""``python -m train replay``: the shipped chains re-run on tiny data (--smoke), in their recorded order."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_cifake

from cifake_models.checkpoint import file_sha256, read_safetensors
from cifake_models.paths import CHECKPOINT_DIR, REPO_ROOT
from cifake_models.registry import get_spec
from cifake_models.scope import SCOPE_FILE
from train import lineage, replay
from train.__main__ import main as train_main
from train.lineage import Lineage
from train.replay import Smoke, profile_lineage, with_overrides
from train.scope_fit import ScopeOptions


@pytest.fixture(scope="module")
def replay_data(tmp_path_factory):
    """Enough tiny images that the smoke's limit leaves both classes in every split."""
    return write_tiny_cifake(tmp_path_factory.mktemp("replay_data"), {"train": 100, "test": 20}) / "packed"


@pytest.fixture(scope="module")
def smoke_all(replay_data, tmp_path_factory):
    """``python -m train replay --all --smoke``: every shipped chain, the committee, the scope score and the reports."""
    out = tmp_path_factory.mktemp("replay")
    options = ["--smoke", "--out", str(out), "--data", str(replay_data), "--threads", "1"]
    assert train_main(["replay", "--all", *options]) == 0
    return out


def shipped(name: str) -> Lineage:
    return Lineage.from_dict(json.loads(lineage.sidecar_path(name).read_text())["lineage"])


def assert_same_chain(replayed: Lineage, recorded: Lineage) -> None:
    """Stage for stage: the same detectors, links, preprocessing and recipes but for the smoke's recorded sizes."""
    assert len(replayed.stages) == len(recorded.stages)
    keys = recorded.keys()
    sizes = ("epochs", "images_per_epoch", "batch_size", "precision", "n_components")
    allowed = {f"recipe.{k}" for k in sizes} | {"data.limit"}
    for key, again, before in zip(keys, replayed.stages, recorded.stages):
        links = ("detector", "parent", "teacher", "members")
        assert [getattr(again, k) for k in links] == [getattr(before, k) for k in links]
        assert again.replayed.of == key and again.replayed.profile == "cpu"
        assert set(again.replayed.overrides) <= allowed and again.replayed.overrides["data.limit"] == Smoke().limit
        assert again.recipe == with_overrides(before, again.replayed.overrides).recipe
        assert (again.preprocessing, again.weights) == (before.preprocessing, before.weights)
        assert again.files and not again.assumed


def test_a_smoke_replay_rebuilds_every_shipped_chain_stage_for_stage(smoke_all):
    for name in ("cnn", "resnet50", "vgg16_bn", "densenet121", "native32", "hog_svm", "committee"):
        path = smoke_all / "checkpoints" / get_spec(name).checkpoint_file
        replayed = lineage.of_checkpoint(path)
        assert_same_chain(replayed, shipped(name))
    report = json.loads((smoke_all / "reports" / "committee.json").read_text())
    assert report["checkpoint"]["sha256"] == file_sha256(smoke_all / "checkpoints" / "committee.safetensors")


def test_a_smoke_replay_fits_the_scope_score_on_its_native32_with_the_shipped_options(smoke_all):
    checkpoints = smoke_all / "checkpoints"
    fitted = read_safetensors(checkpoints / SCOPE_FILE)[1]
    assert fitted["checkpoint_sha256"] == file_sha256(checkpoints / "native32.safetensors")
    shipped_scope = read_safetensors(CHECKPOINT_DIR / SCOPE_FILE)[1]
    sizes = {"fit_images": Smoke().scope_fit_images, "val_images": Smoke().scope_val_images}
    assert fitted["replayed"] == {"of": file_sha256(CHECKPOINT_DIR / SCOPE_FILE), "overrides": sizes, "profile": "cpu"}
    assert ScopeOptions(**fitted["options"]) == dataclasses.replace(ScopeOptions.recorded(shipped_scope), **sizes)
    report = json.loads((smoke_all / "reports" / "scope.json").read_text())
    assert report["scope_file"]["sha256"] == file_sha256(checkpoints / SCOPE_FILE)


def test_a_replay_run_again_keeps_every_finished_stage_and_the_scope_score(smoke_all, replay_data, caplog, capsys):
    caplog.set_level(logging.INFO, logger="train")  # the trainer reports through logging
    before = {
        p: file_sha256(p)
        for p in (*(smoke_all / "stages").glob("*/*.safetensors"), smoke_all / "checkpoints" / SCOPE_FILE)
    }
    options = ["--smoke", "--out", str(smoke_all), "--data", str(replay_data), "--threads", "1", "--no-reports"]
    assert train_main(["replay", "cnn", "native32", *options]) == 0
    assert caplog.text.count("already trained") == 2  # native-32, then the CNN it teaches
    assert "already fitted" in capsys.readouterr().out
    assert {p: file_sha256(p) for p in before} == before


def test_a_full_replay_refuses_data_other_than_the_recorded(replay_data, tmp_path, capsys):
    assert train_main(["replay", "native32", "--out", str(tmp_path), "--data", str(replay_data)]) == 2
    assert "is not the data native32 trained on" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["replay", "--out", str(tmp_path)])  # neither a checkpoint nor --all


def test_the_gpu_profile_is_one_stage_a_network_teachers_first_and_replays(replay_data, tmp_path):
    plan, named = profile_lineage(["committee"])
    assert named == {"committee": len(plan.stages) - 1}
    names = [s.detector for s in plan.stages]
    assert sorted(names) == sorted((*get_spec("committee").members, "committee"))
    for i, stage in enumerate(plan.stages):
        assert stage.parent is None and (stage.teacher is None or stage.teacher < i)
        if get_spec(stage.detector).gpu:
            assert stage.recipe == json.loads(json.dumps(get_spec(stage.detector).gpu.recipe.to_dict()))
    # Through the script a lent GPU machine runs (the replay is the same): its files come back under OUT.
    out, run = tmp_path / "out", tmp_path / "run"
    assert device_script("cnn", "--threads", "1", OUT=out, RUN=run, CIFAKE_DATA=replay_data).returncode == 0
    replayed = lineage.of_checkpoint(run / "checkpoints" / "cnn.safetensors")
    assert [s.detector for s in replayed.stages] == ["native32", "cnn"] and replayed.final.teacher == 0
    assert all(s.replayed.profile == "gpu" and s.replayed.overrides["recipe.epochs"] == 1 for s in replayed.stages)
    back = sorted(p.relative_to(out).as_posix() for p in (out / "stages").glob("*/*.safetensors"))
    assert back == sorted(p.relative_to(run).as_posix() for p in (run / "stages").glob("*/*.safetensors"))
    assert len(back) == 2 and "replay: 2 stages" in (out / "log.txt").read_text()


def device_script(*args: str, **env) -> subprocess.CompletedProcess:
    """``scripts/device_gpu_profile.sh`` on tiny sizes, with this Python, ``env`` added (paths as str)."""
    for folder in ("OUT", "RUN"):
        if folder in env:
            Path(env[folder]).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SMOKE": "1", "PYTHON": sys.executable, **{k: str(v) for k, v in env.items()}}
    script = REPO_ROOT / "scripts" / "device_gpu_profile.sh"
    return subprocess.run(["bash", str(script), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True)


def test_the_device_script_stops_at_its_budget_to_be_continued_and_refuses_missing_data(replay_data, tmp_path):
    cut = device_script("native32", OUT=tmp_path / "out", RUN=tmp_path / "run", CIFAKE_DATA=replay_data, BUDGET=1)
    assert cut.returncode == 0 and "stopped at the budget of 1s" in cut.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()
    missing = device_script("native32", OUT=tmp_path / "out", CIFAKE_DATA=tmp_path / "nothing")
    assert missing.returncode == 2 and "no CIFAKE at" in missing.stderr


def test_precision_overrides_the_network_stages_recorded_arithmetic_only(tmp_path):
    target, _ = replay.recorded_lineage([CHECKPOINT_DIR / get_spec("cnn").checkpoint_file])
    chosen = replay.Replay(tmp_path, tmp_path, None, "cpu", "cpu", precision="fp32")
    native32, cnn = target.stages  # native-32 recorded bf16, the CNN fp32
    assert (native32.recipe["precision"], cnn.recipe["precision"]) == ("bf16", "fp32")
    assert chosen.precision_override(native32) == {"recipe.precision": "fp32"}
    assert chosen.precision_override(cnn) == {}
    assert replay.Replay(tmp_path, tmp_path, None, "cpu", "cpu").precision_override(native32) == {}


def test_reuse_takes_a_teacher_that_is_the_recorded_file_and_trains_the_named_stage(replay_data, tmp_path, capsys):
    options = ["--smoke", "--out", str(tmp_path), "--data", str(replay_data), "--threads", "1", "--no-reports"]
    assert train_main(["replay", "cnn", "--reuse", str(CHECKPOINT_DIR), *options]) == 0
    assert "native32 taken from" in capsys.readouterr().out
    assert [p.name.split("-")[0] for p in (tmp_path / "stages").iterdir()] == ["cnn"]
    replayed, recorded = lineage.of_checkpoint(tmp_path / "checkpoints" / "cnn.safetensors"), shipped("cnn")
    teacher = replayed.stages[replayed.final.teacher]
    assert file_sha256(CHECKPOINT_DIR / get_spec("native32").checkpoint_file) in teacher.files
    assert teacher.replayed is None and replayed.final.replayed.of == recorded.keys()[-1]
    assert replayed.keys()[0] == recorded.keys()[0]  # the teacher's stage, as recorded
