"""cifake-deploy: the allow-listed file sets, the refusals, one commit through a fake Hub, and the model card."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, metadata_load

from cifake_models import deploy, get_spec, list_detectors, load_report
from cifake_models.metrics import percent
from cifake_models.model_card import CARD_METRICS, model_card
from cifake_models.paths import REPO_ROOT
from cifake_models.scope import SCOPE_FILE, SCOPE_REPORT

TRACKED = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
needs_git = pytest.mark.skipif(not TRACKED, reason="needs the git checkout")


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture()
def clean_checkout(tmp_path) -> Path:
    """A committed copy of the checkout's Space files; checkpoints are links to the shipped ones (not copied)."""
    root = tmp_path / "checkout"
    for path, source in deploy.space_set(REPO_ROOT).files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if source.suffix in (".safetensors", ".skops"):
            (root / path).symlink_to(source)
        else:
            shutil.copyfile(source, root / path)
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("")  # a file the Space must not receive
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    return root


class FakeHub:
    """Stands in for deploy.push: checks each upload's arguments and keeps what it was sent."""

    def __init__(self, repo_type: str, expected: set[str]):
        self.repo_type, self.expected, self.sent = repo_type, expected, []

    def __call__(self, upload: deploy.Upload) -> str:
        sent = {p.relative_to(upload.folder).as_posix() for p in upload.folder.rglob("*") if p.is_file()}
        assert upload.repo_type == self.repo_type
        assert sent == self.expected  # the allow-list, nothing more, nothing less
        assert upload.delete_patterns == ("*",)  # what is gone here goes there
        assert upload.commit_message.startswith("Deploy ") and len(upload.commit_message.split()[-1]) == 12
        self.sent.append({path: (upload.folder / path).read_bytes() for path in ("README.md",)})
        return f"https://huggingface.co/{upload.repo_id}/commit/0"


@needs_git
def test_the_space_set_is_what_the_app_needs_and_nothing_else():
    paths = set(deploy.space_set().files)
    names = list_detectors()
    assert {f"assets/checkpoints/{get_spec(n).checkpoint_file}" for n in names} < paths
    assert {f"assets/reports/{n}.json" for n in names} < paths
    assert {
        f"assets/checkpoints/{SCOPE_FILE}",
        f"assets/reports/{SCOPE_REPORT}",
    } < paths  # else nothing is out of scope
    assert {"app.py", "requirements.txt", "README.md", "LICENSE", ".gitattributes"} < paths
    assert "cifake_models/page/cards.css" in paths
    assert {p for p in TRACKED if p.startswith("cifake_models/")} <= paths  # the whole package
    assert paths <= set(TRACKED)  # nothing untracked: no caches, runs, data
    assert not [p for p in paths if p.split("/")[0] in ("tests", "train", "scripts", "data", "runs")]
    assert sum(deploy.space_set().sizes().values()) < deploy.MAX_SET_BYTES


@needs_git
def test_gitattributes_sends_every_shipped_binary_type_through_lfs():
    rules = (REPO_ROOT / ".gitattributes").read_text()
    binary = {
        Path(p).suffix
        for p in TRACKED
        if Path(p).suffix
        not in (".py", ".md", ".json", ".txt", ".toml", ".css", ".sh", ".gitignore", ".gitattributes", "")
    }
    assert binary and all(f"*{suffix} filter=lfs" in rules for suffix in binary)


def test_dry_run_lists_every_file_with_its_size_and_sends_nothing(clean_checkout, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "push", lambda upload: pytest.fail("a dry run reached the Hub"))
    assert deploy.main(["space", "me/space", "--dry-run", "--root", str(clean_checkout)]) == 0
    out = capsys.readouterr().out
    for path, size in deploy.space_set(clean_checkout).sizes().items():
        assert f"{size / 2**20:.2f} MB  {path}" in out
    assert f"in {len(deploy.space_set(clean_checkout).files)} files" in out and "tests/test_x.py" not in out


def test_space_goes_up_in_one_commit_naming_the_model_repo(clean_checkout, monkeypatch):
    hub = FakeHub("space", set(deploy.space_set(clean_checkout).files))
    monkeypatch.setattr(deploy, "push", hub)
    assert deploy.main(["space", "me/space", "--models", "me/weights", "--root", str(clean_checkout)]) == 0
    assert len(hub.sent) == 1
    readme = hub.sent[0]["README.md"].decode()
    assert "models:\n- me/weights\n" in readme and "sdk: gradio" in readme
    assert readme.split("---", 2)[2] == (clean_checkout / "README.md").read_text().split("---", 2)[2]


def test_models_go_up_with_their_card(clean_checkout, monkeypatch):
    names = list_detectors()
    expected = {
        "LICENSE",
        ".gitattributes",
        "README.md",
        *(f"reports/{n}.json" for n in names),
        *(f"checkpoints/{get_spec(n).checkpoint_file}" for n in names),
        f"checkpoints/{SCOPE_FILE}",
        f"reports/{SCOPE_REPORT}",
    }
    hub = FakeHub("model", expected)
    monkeypatch.setattr(deploy, "push", hub)
    assert deploy.main(["models", "me/weights", "--root", str(clean_checkout)]) == 0
    assert hub.sent[0]["README.md"].decode().startswith("---\n")


@pytest.mark.parametrize("spoil", ["stale report", "stale scope report", "dirty tree", "missing checkpoint"])
def test_refuses_a_stale_report_a_dirty_tree_or_a_missing_file(clean_checkout, monkeypatch, capsys, spoil):
    monkeypatch.setattr(deploy, "push", lambda upload: pytest.fail("a refused set reached the Hub"))
    report = clean_checkout / "assets" / "reports" / "cnn.json"
    if spoil == "stale report":
        data = json.loads(report.read_text())
        data["checkpoint"]["sha256"] = "0" * 64
        report.write_text(json.dumps(data))
        git(clean_checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "retrained")
    elif spoil == "stale scope report":
        scope_report = clean_checkout / "assets" / "reports" / SCOPE_REPORT
        data = json.loads(scope_report.read_text())
        data["scope_file"]["sha256"] = "0" * 64
        scope_report.write_text(json.dumps(data))
        git(clean_checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "refitted")
    elif spoil == "dirty tree":
        (clean_checkout / "app.py").write_text("# changed\n")
    else:
        (clean_checkout / "assets" / "checkpoints" / "cnn.safetensors").unlink()
    assert deploy.main(["space", "me/space", "--root", str(clean_checkout)]) == 1
    err = capsys.readouterr().err
    assert {
        "stale report": "stale report cnn.json",
        "stale scope report": f"stale report {SCOPE_REPORT}",
        "dirty tree": "uncommitted:  M app.py",
        "missing checkpoint": "missing: assets/checkpoints/cnn.safetensors",
    }[spoil] in err


def test_models_without_a_report_are_refused(clean_checkout, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "push", lambda upload: pytest.fail("a refused set reached the Hub"))
    (clean_checkout / "assets" / "reports" / "cnn.json").unlink()
    assert deploy.main(["models", "me/weights", "--root", str(clean_checkout)]) == 1
    assert "cnn.json" in capsys.readouterr().err


def test_push_is_the_only_way_to_the_hub():
    source = Path(deploy.__file__).read_text()
    assert source.count("HfApi") == 2 and source.count("upload_folder(") == 1  # the import and one call, in push


@pytest.fixture(scope="module")
def shipped_reports() -> dict[str, dict]:
    reports = {}
    for name in list_detectors():
        try:
            reports[name] = load_report(name)
        except FileNotFoundError:
            pytest.skip("the shipped reports are not in this checkout")
    return reports


def test_model_card_parses_with_the_hubs_api_and_its_figures_are_the_reports(shipped_reports, tmp_path):
    path = tmp_path / "README.md"
    path.write_text(model_card(shipped_reports, "me/space"))
    card = ModelCard.load(path)  # validates the model-index
    assert card.data.license == "mit" and card.data.pipeline_tag == "image-classification"
    assert card.data.library_name and card.data.tags and card.data.datasets == ["cifake"]
    index = {entry["name"]: entry for entry in metadata_load(path)["model-index"]}
    assert list(index) == list_detectors()
    for name, report in shipped_reports.items():
        metrics = {m["type"]: m["value"] for m in index[name]["results"][0]["metrics"]}
        assert metrics == {metric: report["test"][key] for metric, key in CARD_METRICS}
        assert index[name]["results"][0]["dataset"]["split"] == "test"
        assert f"| {percent(report['test']['accuracy'])} | {report['test']['roc_auc']:.4f} |" in card.text
    assert len(card.data.eval_results) == len(CARD_METRICS) * len(shipped_reports)
    for section in (
        "Intended use",
        "Out-of-scope use",
        "Training data and recipe",
        "Evaluation, robustness and calibration",
        "Limitations",
        "Citation",
    ):
        assert f"\n## {section}\n" in card.text
