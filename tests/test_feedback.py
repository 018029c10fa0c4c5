""" "This verdict is wrong": the record, the bounded atomic local file, and the Hub only with a token and a dataset."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from cifake_models import feedback, get_spec
from cifake_models.checkpoint import file_sha256
from cifake_models.page.analysis import predict_file
from cifake_models.page.state import load_state
from cifake_models.uploads import UploadError


@pytest.fixture(scope="module")
def state(tiny_assets):
    return load_state(tiny_assets["checkpoints"], tiny_assets["reports"])


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(feedback.FEEDBACK_DIR_ENV, str(tmp_path / "feedback"))
    for name in ("HF_TOKEN", feedback.DATASET_ENV):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "feedback"


def image_file(tmp_path, seed: int, name: str = "cat.png"):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
    (tmp_path / name).write_bytes(buffer.getvalue())
    return tmp_path / name


@pytest.fixture()
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_a_flag_records_the_hash_every_answer_and_the_checkpoints_and_keeps_the_image_private(
    state, folder, tmp_path, offline
):
    image = image_file(tmp_path, 0)
    flag = feedback.flag_image(state, image, "FAKE", share=False)
    [record] = feedback.feedback_log().records()
    assert record["image_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest() == flag.image_sha256
    assert record["said"] == "FAKE" and record["image_file"] is None
    assert record["detectors"] == json.loads(json.dumps(predict_file(state, image)))
    assert record["checkpoints"] == {
        n: file_sha256(state.checkpoint_dir / get_spec(n).checkpoint_file) for n in state.detectors
    }
    assert sorted(p.name for p in folder.iterdir()) == [feedback.RECORDS]  # no copy of the image


def test_a_shared_image_is_stored_beside_its_record(state, folder, tmp_path, offline):
    image = image_file(tmp_path, 1)
    feedback.flag_image(state, image, "REAL", share=True)
    [record] = feedback.feedback_log().records()
    assert (folder / record["image_file"]).read_bytes() == image.read_bytes()


def test_a_file_that_is_no_image_or_a_bad_label_is_refused_and_nothing_is_written(state, folder, tmp_path):
    (tmp_path / "notes.txt").write_text("no image")
    with pytest.raises(UploadError):
        feedback.flag_image(state, tmp_path / "notes.txt", "REAL", share=True)
    with pytest.raises(ValueError, match="REAL"):
        feedback.flag_image(state, image_file(tmp_path, 2), "cat", share=False)
    assert not folder.exists() or not list(folder.rglob("*"))


def test_the_local_file_keeps_the_newest_records_and_their_images_only(tmp_path):
    log = feedback.FeedbackLog(tmp_path / "log", max_records=3)
    for i in range(5):
        image = image_file(tmp_path, i, f"{i}.png")
        log.add(feedback.Flag(str(i), "REAL", {}, {}, f"{feedback.IMAGES}/{i}.png", "t"), image)
    assert [r["image_sha256"] for r in log.records()] == ["2", "3", "4"]
    assert sorted(p.name for p in (tmp_path / "log" / feedback.IMAGES).iterdir()) == ["2.png", "3.png", "4.png"]
    left = sorted(p.name for p in (tmp_path / "log").iterdir())
    assert left == sorted([feedback.IMAGES, feedback.RECORDS])  # no partial file


def test_records_written_at_once_are_all_kept(tmp_path):
    log = feedback.FeedbackLog(tmp_path / "log")
    threads = [
        threading.Thread(target=log.add, args=(feedback.Flag(str(i), "FAKE", {}, {}, None, "t"), None))
        for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(r["image_sha256"]) for r in log.records()) == list(range(20))


class FakeScheduler:
    made: ClassVar[list[dict]] = []

    def __init__(self, **kwargs):
        self.lock = threading.Lock()
        FakeScheduler.made.append(kwargs)


@pytest.mark.parametrize("env", [{}, {"HF_TOKEN": "hf_x"}, {feedback.DATASET_ENV: "me/flags"}])
def test_without_a_token_and_a_dataset_nothing_is_sent(state, folder, tmp_path, monkeypatch, offline, env):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "CommitScheduler", FakeScheduler)
    FakeScheduler.made.clear()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    feedback.flag_image(state, image_file(tmp_path, 3), "FAKE", share=True)
    assert feedback.feedback_log().scheduler is None and FakeScheduler.made == []


def test_with_a_token_and_a_dataset_the_folder_goes_to_a_private_dataset(state, folder, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "CommitScheduler", FakeScheduler)
    FakeScheduler.made.clear()
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setenv(feedback.DATASET_ENV, "me/flags")
    feedback.flag_image(state, image_file(tmp_path, 4), "FAKE", share=False)
    [made] = FakeScheduler.made
    assert made["repo_id"] == "me/flags" and made["repo_type"] == "dataset" and made["private"] is True
    assert made["token"] == "hf_x" and made["folder_path"] == folder.resolve()
    assert set(made["allow_patterns"]) == {feedback.RECORDS, f"{feedback.IMAGES}/*"}
    assert feedback.feedback_log().lock is feedback.feedback_log().scheduler.lock
