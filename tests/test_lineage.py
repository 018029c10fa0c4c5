"""Recorded lineages: the shipped lineage files against the checkpoints, and what the trainer records."""

from __future__ import annotations

import json

import pytest
from conftest import train_tiny

from cifake_models import list_detectors
from cifake_models.checkpoint import file_sha256
from cifake_models.paths import CHECKPOINT_DIR
from cifake_models.preprocessing import Preprocessing
from cifake_models.registry import REGISTRY, get_spec
from train import lineage
from train.__main__ import main as train_main
from train.lineage import Lineage, filled, own_chain


def shipped_lineage(name: str) -> tuple[dict, Lineage]:
    data = json.loads(lineage.sidecar_path(name).read_text())
    return data, Lineage.from_dict(data["lineage"])


@pytest.mark.parametrize("name", [n for n in list_detectors() if get_spec(n).is_torch or get_spec(n).is_committee])
def test_each_shipped_lineage_file_is_its_checkpoints_chain_stage_for_stage(name):
    spec = get_spec(name)
    data, target = shipped_lineage(name)
    metadata = spec.stored_metadata()
    assert data["sha256"] == file_sha256(CHECKPOINT_DIR / spec.checkpoint_file)
    assert target.final.files == (data["sha256"],)
    records = [*metadata["earlier_stages"], {**metadata, "sha256": data["sha256"]}]
    chain = own_chain(target)
    assert len(chain) == len(records)
    for i, record in zip(chain, records):
        stage = target.stages[i]
        assert stage.detector == name and stage.files[0] == record["sha256"]
        assert stage.recipe == json.loads(json.dumps(filled(record["recipe"], type(spec.recipe))[0]))
        if spec.is_torch:
            assert stage.preprocessing == json.loads(json.dumps(filled(record["preprocessing"], Preprocessing)[0]))
        assert stage.data["train_fingerprint"] == record["data"]["train_fingerprint"]
        assert stage.epochs == record["recipe"].get("epochs")
        teacher = record.get("teacher")
        if teacher:  # the teacher's own chain comes first, and wrote the very file the stage learned from
            assert stage.teacher < i and teacher["sha256"] in target.stages[stage.teacher].files
            assert target.stages[stage.teacher].detector == teacher["detector"]
        else:
            assert stage.teacher is None
    for member, i in zip(metadata.get("member_checkpoints", {}).items(), target.final.members):
        assert member[1]["sha256"] in target.stages[i].files and target.stages[i].detector == member[0]
    own_time = metadata["training"]["wall_time_s"] - sum(r["training"]["wall_time_s"] for r in records[:-1])
    assert target.final.wall_time_s == pytest.approx(own_time, abs=0.06)


def test_the_committees_lineage_holds_every_shipped_chain_teachers_first():
    _, committee = shipped_lineage("committee")
    keys = committee.keys()
    for name in list_detectors()[:-1]:
        _, member = shipped_lineage(name)
        assert set(member.keys()) <= set(keys)
    for i, stage in enumerate(committee.stages):
        assert all(j < i for j in (stage.parent, stage.teacher, *stage.members) if j is not None)
    # ResNet-50's seventh and eighth stages learned from an earlier native-32, whose two files (a
    # recalibration apart) hold the same weights: it is one stage, trained before them.
    old = [s for s in committee.stages if s.detector == "native32" and len(s.files) == 2]
    assert len(old) == 1 and old[0].epochs == 24


@pytest.mark.parametrize("name", [n for n, spec in REGISTRY.items() if spec.gpu])
def test_a_gpu_profile_keeps_its_shipped_stages_augmentation_and_distillation_and_trains_longer(name):
    profile = get_spec(name).gpu
    _, target = shipped_lineage(name)
    final = target.final
    assert json.loads(json.dumps(profile.preprocessing.to_dict())) == final.preprocessing
    teacher = target.stages[final.teacher].detector if final.teacher is not None else None
    assert profile.teacher == teacher
    for field in ("distill_weight", "distill_temperature"):
        assert getattr(profile.recipe, field) == final.recipe[field]
    chain = [target.stages[i].recipe for i in own_chain(target)]
    seen = sum(recipe["epochs"] * (recipe["images_per_epoch"] or 90_000) for recipe in chain)
    assert profile.recipe.epochs * (profile.recipe.images_per_epoch or 90_000) > seen


def test_the_trainer_records_the_whole_chain_of_a_distilled_second_stage(tiny_data, tmp_path):
    data = tiny_data / "packed"
    teacher = train_tiny("native32", data, tmp_path / "teacher")
    train_tiny("cnn", data, tmp_path / "first")
    first, teacher_file = tmp_path / "first" / "cnn.safetensors", tmp_path / "teacher" / "native32.safetensors"
    assert (
        train_main(
            [
                "cnn",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "second"),
                "--epochs",
                "1",
                "--val-fraction",
                "0.25",
                "--init-from",
                str(first),
                "--distill-from",
                str(teacher_file),
                "--distill-weight",
                "0.5",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    recorded = lineage.of_checkpoint(tmp_path / "second" / "cnn.safetensors")
    assert [s.detector for s in recorded.stages] == ["cnn", "native32", "cnn"]
    first_stage, teacher_stage, own = recorded.stages
    assert first_stage.files == (file_sha256(first),) and teacher_stage.files == (file_sha256(teacher_file),)
    second = file_sha256(tmp_path / "second" / "cnn.safetensors")
    assert (own.parent, own.teacher, own.files, own.seed, own.recipe["distill_weight"]) == (0, 1, (second,), 3, 0.5)
    assert teacher_stage.recipe == json.loads(json.dumps(teacher.metadata["recipe"]))
    assert own.data["train_fingerprint"] == teacher.metadata["data"]["train_fingerprint"] and own.epochs == 1
    assert own.hardware.startswith("CPU") and own.wall_time_s > 0 and not own.assumed and not recorded.gaps
    # The chain of a file the trainer read is taken whole from its record, not rebuilt.
    assert "lineage" in teacher.metadata and lineage.of_metadata(teacher.metadata).final == teacher_stage.__class__(
        **{**teacher_stage.__dict__, "files": ()}
    )


def test_a_checkpoint_without_a_record_is_rebuilt_from_its_metadata_and_says_what_it_cannot_recover():
    _, shipped = shipped_lineage("resnet50")
    metadata = get_spec("resnet50").stored_metadata()
    alone = lineage.of_metadata(metadata, lambda sha: None)
    assert len(own_chain(alone)) == len(own_chain(shipped))
    assert any("teacher" in gap and "no file with this SHA-256" in gap for gap in alone.gaps)


def test_the_docs_table_of_the_shipped_chains_is_the_commands():
    text = (lineage.REPO_ROOT / "docs" / "reproduce.md").read_text()
    table = text.split("<!-- chains:start (python -m train.lineage --table) -->\n")[1].split("\n<!-- chains:end -->")[0]
    assert table == lineage.chain_table()
