"""Training under torchrun: two CPU processes (gloo) train as one process does, and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from cifake_models import load_detector
from train.__main__ import main as train_main
from train.distributed import Ranks
from train.torch_fit import resume_path

EPOCHS = 6
# A small learning rate keeps the losses changing from epoch to epoch, so that they can disagree;
# shifts make every batch draw augmentation, which must be the draws of one process.
ARGS = [
    "cnn",
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    "8",
    "--lr",
    "1e-4",
    "--translate",
    "2",
    "--device",
    "cpu",
    "--threads",
    "1",
]


def torchrun(data, out, *extra: str) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node 2 -m train ...``."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "train",
        *ARGS,
        "--data",
        str(data),
        "--out",
        str(out),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_workers(run: subprocess.Popen) -> None:
    """SIGKILL the training processes torchrun started (each in its own session), as a crash would."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == run.pid:
            os.kill(int(entry), signal.SIGKILL)
    run.wait(timeout=120)


def test_slices_of_a_batch_cover_it_once():
    batch = torch.arange(11)
    slices = [Ranks(rank, 3).shard(batch) for rank in range(3)]
    assert torch.equal(torch.cat(slices), batch) and [len(s) for s in slices] == [4, 4, 3]
    assert Ranks().shard(batch) is batch


def test_two_processes_train_as_one_and_resume_after_a_kill(tiny_data, tmp_path):
    data = tiny_data / "packed"
    assert train_main([*ARGS, "--data", str(data), "--out", str(tmp_path / "one")]) == 0
    one = load_detector("cnn", tmp_path / "one")

    # Two processes, killed once an epoch has been saved...
    run = torchrun(data, tmp_path / "two")
    state = resume_path(tmp_path / "two", "cnn")
    deadline = time.monotonic() + 300
    while not state.is_file() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    kill_workers(run)
    assert state.is_file() and not (tmp_path / "two" / "cnn.safetensors").exists(), run.stdout.read()
    # ...then resumed with torchrun again.
    resumed = torchrun(data, tmp_path / "two", "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "cnn: resuming after epoch" in output
    assert output.count(f"cnn epoch {EPOCHS}/{EPOCHS}") == 1  # rank 0 alone reports
    two = load_detector("cnn", tmp_path / "two")

    # The same run as one process: each epoch's losses, and the weights (stored in half precision).
    def history(d):
        return np.array(
            [[h["train_loss"], h["train_accuracy"], h["val_loss"], h["val_accuracy"]] for h in d.metadata["history"]]
        )

    assert len(two.metadata["history"]) == EPOCHS
    assert two.metadata["training"]["processes"] == 2 and one.metadata["training"]["processes"] == 1
    np.testing.assert_allclose(history(two), history(one), rtol=1e-4, atol=1e-6)
    for key, value in one.module.state_dict().items():
        torch.testing.assert_close(two.module.state_dict()[key], value, rtol=2e-3, atol=1e-4, msg=key)
    assert two.rule.threshold == pytest.approx(one.rule.threshold, abs=1e-4)
