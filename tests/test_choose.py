import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from sklearn.preprocessing import StandardScaler

from cifake_models.checkpoint import atomic_write, read_safetensors, save_safetensors
from cifake_models.detector import SklearnDetector
from cifake_models.labels import CLASSES
from cifake_models.registry import get_spec
from train.choose import main

ROOT = Path(__file__).resolve().parents[1]


def write(
    folder, clean: float, suite_mean: float, worst_gap: float = 0.05, split: str = "split-0", name: str = "resnet50"
) -> None:
    """A stand-in checkpoint of ``name`` whose only content is what the rule reads."""
    folder.mkdir(parents=True, exist_ok=True)
    validation = {
        "accuracy": clean,
        # The suite's own clean accuracy (on its sample) taken as the whole split's.
        "robustness": {
            "clean_accuracy": clean,
            "mean_accuracy": suite_mean,
            "worst": {"accuracy": suite_mean - worst_gap},
        },
    }
    metadata = {"validation": validation, "data": {"val_fingerprint": split}}
    save_safetensors(folder / get_spec(name).checkpoint_file, {"w": torch.zeros(1)}, metadata)


def shipped_clean(folder) -> float:
    return read_safetensors(folder / get_spec("resnet50").checkpoint_file)[1]["validation"]["accuracy"]


def test_the_most_robust_eligible_candidate_ships(tmp_path):
    # ResNet-50's paper accuracy is 94.95%, below the shipped 95.8%: candidates must stay above it.
    write(tmp_path / "shipped", 0.958, 0.80)
    write(tmp_path / "below_paper", 0.949, 0.95)  # within 1.5 points, but under the paper
    write(tmp_path / "too_far", 0.942, 0.96)  # 1.6 points below the shipped one
    write(tmp_path / "good", 0.952, 0.90)
    write(tmp_path / "better", 0.951, 0.92)
    folders = [str(tmp_path / f) for f in ("below_paper", "too_far", "good", "better")]
    assert main(["resnet50", *folders, "--checkpoints", str(tmp_path / "shipped")]) == 0
    assert shipped_clean(tmp_path / "shipped") == 0.958  # without --ship nothing moves
    assert main(["resnet50", *folders, "--checkpoints", str(tmp_path / "shipped"), "--ship"]) == 0
    assert shipped_clean(tmp_path / "shipped") == 0.951


def test_the_shipped_checkpoint_stays_when_no_candidate_is_more_robust(tmp_path, capsys):
    write(tmp_path / "shipped", 0.958, 0.93)
    write(tmp_path / "weaker", 0.957, 0.92)
    assert (
        main(
            [
                "resnet50",
                str(tmp_path / "weaker"),
                str(tmp_path / "missing"),
                "--checkpoints",
                str(tmp_path / "shipped"),
                "--ship",
            ]
        )
        == 0
    )
    assert shipped_clean(tmp_path / "shipped") == 0.958
    assert "skipped" in capsys.readouterr().out  # a folder without a checkpoint is reported, not fatal


def test_a_candidate_validated_on_another_split_is_skipped(tmp_path, capsys):
    write(tmp_path / "shipped", 0.958, 0.90)
    write(tmp_path / "other_split", 0.962, 0.95, split="split-1")  # better on paper, on other images
    assert main(["resnet50", str(tmp_path / "other_split"), "--checkpoints", str(tmp_path / "shipped"), "--ship"]) == 0
    assert shipped_clean(tmp_path / "shipped") == 0.958
    assert "validated on another split" in capsys.readouterr().out


def test_the_worst_case_counts_as_much_as_the_mean(tmp_path):
    write(tmp_path / "shipped", 0.958, 0.9447, worst_gap=0.0507)  # worst 89.40%
    write(tmp_path / "steadier", 0.958, 0.9443, worst_gap=0.0323)  # mean 0.04 lower, worst 1.8 higher
    write(tmp_path / "higher_mean", 0.958, 0.9460, worst_gap=0.0700)  # mean 0.13 higher, worst 2.0 lower
    folders = [str(tmp_path / f) for f in ("steadier", "higher_mean")]
    assert main(["resnet50", *folders, "--checkpoints", str(tmp_path / "shipped"), "--ship"]) == 0
    shipped = read_safetensors(tmp_path / "shipped" / get_spec("resnet50").checkpoint_file)[1]["validation"][
        "robustness"
    ]
    assert shipped["worst"]["accuracy"] == 0.9443 - 0.0323


def test_the_accuracy_rule_ships_the_most_accurate_within_the_robustness_bar_and_beyond_the_credit(tmp_path):
    # native-32 has no paper figure; the shipped one is robust (drops 1 and 3 points).
    shipped = tmp_path / "shipped"
    write(shipped, 0.970, 0.960, worst_gap=0.02, name="native32")
    # Over the bar: a mean drop of 2.7 points; a worst drop of 5.9 points. Within the credit: 0.08 points more.
    write(tmp_path / "over_bar", 0.985, 0.958, worst_gap=0.02, name="native32")
    write(tmp_path / "worst_over", 0.984, 0.965, worst_gap=0.04, name="native32")
    write(tmp_path / "within_credit", 0.9708, 0.955, worst_gap=0.02, name="native32")
    folders = [str(tmp_path / f) for f in ("over_bar", "worst_over", "within_credit")]
    assert main(["native32", *folders, "--checkpoints", str(shipped), "--rule", "accuracy", "--ship"]) == 0
    assert read_safetensors(shipped / "native32.safetensors")[1]["validation"]["accuracy"] == 0.970
    write(tmp_path / "more_accurate", 0.975, 0.957, worst_gap=0.025, name="native32")  # less robust than shipped
    folders.append(str(tmp_path / "more_accurate"))
    assert main(["native32", *folders, "--checkpoints", str(shipped), "--ship"]) == 0  # the robustness rule
    assert read_safetensors(shipped / "native32.safetensors")[1]["validation"]["accuracy"] == 0.970
    assert main(["native32", *folders, "--checkpoints", str(shipped), "--rule", "accuracy", "--ship"]) == 0
    assert read_safetensors(shipped / "native32.safetensors")[1]["validation"]["accuracy"] == 0.975


def test_the_accuracy_rule_at_its_edges(tmp_path, capsys):
    """Accuracies on 1,000 and 10,000 images are whole counts: a drop of exactly the bar meets it, and
    a candidate exactly the credit above the shipped file ties it, and the shipped file stays."""
    shipped = tmp_path / "shipped"
    write(shipped, 0.970, 0.947, worst_gap=0.02, name="native32")  # mean drop 2.3 points: over the bar itself
    write(tmp_path / "at_bar", 0.960, 0.940, worst_gap=0.03, name="native32")  # drops of exactly 2 and 5 points
    rule = ["--checkpoints", str(shipped), "--rule", "accuracy", "--ship"]
    assert main(["native32", str(tmp_path / "at_bar"), *rule]) == 0  # 1.0 point less, but within the bar
    assert "over the robustness bar" in capsys.readouterr().out
    assert read_safetensors(shipped / "native32.safetensors")[1]["validation"]["accuracy"] == 0.960
    write(tmp_path / "at_credit", 0.961, 0.950, worst_gap=0.01, name="native32")  # 10 images more, more robust
    assert main(["native32", str(tmp_path / "at_credit"), *rule]) == 0
    assert read_safetensors(shipped / "native32.safetensors")[1]["validation"]["accuracy"] == 0.960


def test_the_svm_is_chosen_by_the_same_rule(tmp_path, capsys):
    """The SVM's checkpoint is a skops file, read through the registry's safe loader."""
    spec = get_spec("hog_svm")

    def write_svm(folder, clean: float, suite_mean: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        validation = {
            "accuracy": clean,
            "robustness": {"mean_accuracy": suite_mean, "worst": {"accuracy": suite_mean - 0.05}},
        }
        metadata = {"detector": spec.name, "classes": list(CLASSES), "validation": validation}
        SklearnDetector(spec.name, StandardScaler(), metadata).save(folder / spec.checkpoint_file)

    write_svm(tmp_path / "shipped", 0.819, 0.80)
    write_svm(tmp_path / "augmented", 0.815, 0.81)
    assert main(["hog_svm", str(tmp_path / "augmented"), "--checkpoints", str(tmp_path / "shipped"), "--ship"]) == 0
    assert spec.stored_metadata(tmp_path / "shipped")["validation"]["accuracy"] == 0.815
    assert "shipped" in capsys.readouterr().out


def test_a_shipped_checkpoint_without_robustness_figures_is_a_clear_error(tmp_path, capsys):
    folder = tmp_path / "shipped"
    folder.mkdir()
    save_safetensors(
        folder / get_spec("resnet50").checkpoint_file,
        {"w": torch.zeros(1)},
        {"validation": {"accuracy": 0.958}, "data": {"val_fingerprint": "split-0"}},
    )  # from before the suite was recorded
    write(tmp_path / "too_far", 0.90, 0.95)
    assert main(["resnet50", str(tmp_path / "too_far"), "--checkpoints", str(folder), "--ship"]) == 2
    err = capsys.readouterr().err
    assert "records no 'robustness'" in err and "python -m train.revalidate resnet50" in err


KILLED_MID_COPY = """
import shutil, sys, time
from pathlib import Path

def half_then_hang(src, dst, *args, **kwargs):  # a copy that a kill interrupts half-way
    data = Path(src).read_bytes()
    with open(dst, "wb") as handle:
        handle.write(data[: len(data) // 2])
    Path(sys.argv[1]).touch()
    time.sleep(60)

shutil.copyfile = half_then_hang
from train.choose import main
main(sys.argv[2:])
"""


def test_a_kill_in_mid_ship_leaves_the_shipped_checkpoint_whole(tmp_path):
    write(tmp_path / "shipped", 0.958, 0.80)
    write(tmp_path / "better", 0.951, 0.92)
    halfway = tmp_path / "halfway"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_MID_COPY,
            str(halfway),
            "resnet50",
            str(tmp_path / "better"),
            "--checkpoints",
            str(tmp_path / "shipped"),
            "--ship",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not halfway.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert halfway.exists(), "the ship never started"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert shipped_clean(tmp_path / "shipped") == 0.958  # the old file, whole
    left = list((tmp_path / "shipped").glob(".*"))
    assert len(left) == 1  # the killed writer's temporary file...
    assert main(["resnet50", str(tmp_path / "better"), "--checkpoints", str(tmp_path / "shipped"), "--ship"]) == 0
    assert shipped_clean(tmp_path / "shipped") == 0.951
    assert list((tmp_path / "shipped").glob(".*")) == []  # ...is removed by the next write


def test_atomic_write_syncs_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    atomic_write(tmp_path / "a.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    assert len(synced) == 2 and Path(synced[0]).parent == tmp_path and synced[0] != str(tmp_path / "a.bin")
    assert synced[1] == str(tmp_path)
