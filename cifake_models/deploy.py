"""Publish the app as a Hugging Face Space, or the detectors as a model repo with a card, in one commit each.

``cifake-deploy space OWNER/NAME`` / ``cifake-deploy models OWNER/NAME`` (or ``python -m cifake_models.deploy``).
The file sets are allow-lists; ``--dry-run`` lists one and touches no network, ``--out DIR`` writes it to DIR.
Every call to the Hub goes through :func:`push`."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import metadata_load, metadata_save

from .checkpoint import file_sha256
from .model_card import model_card
from .paths import CHECKPOINT_DIR, REPO_ROOT, REPORT_DIR
from .registry import get_spec, list_detectors
from .reports import load_report, stale_report
from .scope import FEATURES_OF, SCOPE_FILE, SCOPE_REPORT, ScopeModel

# What the Space runs on: the app, the package (code and stylesheet), the pins the Space installs, its README
# (whose front matter configures it), the licence, the LFS rules, the examples and the README's screenshots.
# Checkpoints and reports come from the registry (space_set), one of each per detector.
SPACE_FILES = (
    "app.py",
    "requirements.txt",
    "README.md",
    "LICENSE",
    ".gitattributes",
    "cifake_models/**/*.py",
    "cifake_models/**/*.css",
    "assets/examples/*.png",
    "docs/screenshots/*.png",
)
MODEL_FILES = ("LICENSE", ".gitattributes")
# Remote files that this commit does not upload are deleted (the Hub always keeps .gitattributes).
DELETE_PATTERNS = ("*",)
MAX_SET_BYTES = 200 * 2**20
REPO_TYPES = {"space": "space", "models": "model"}


@dataclass(frozen=True)
class FileSet:
    """A repo's files: path in the repo -> file here, and files made for it (path -> text)."""

    files: dict[str, Path]
    made: dict[str, str] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        sizes = {path: source.stat().st_size if source.is_file() else 0 for path, source in self.files.items()}
        return dict(sorted({**sizes, **{path: len(text.encode()) for path, text in self.made.items()}}.items()))

    def write(self, folder: Path) -> Path:
        """Copy the set into ``folder`` (made if missing; it must hold nothing else)."""
        folder.mkdir(parents=True, exist_ok=True)
        if any(folder.iterdir()):
            raise SystemExit(f"{folder} is not empty: write the set into an empty folder")
        for path, source in self.files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / path)
        for path, text in self.made.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
        return folder


@dataclass(frozen=True)
class Upload:
    """One commit to the Hub: what :func:`push` is asked to do."""

    repo_id: str
    repo_type: str  # "space" or "model"
    folder: Path
    commit_message: str
    delete_patterns: tuple[str, ...] = DELETE_PATTERNS


def push(upload: Upload) -> str:
    """The one place that reaches the Hub: make the repo if it is missing, then upload the folder in one commit."""
    from huggingface_hub import HfApi

    api = HfApi()
    sdk = {"space_sdk": "gradio"} if upload.repo_type == "space" else {}
    api.create_repo(upload.repo_id, repo_type=upload.repo_type, exist_ok=True, **sdk)
    info = api.upload_folder(
        repo_id=upload.repo_id,
        folder_path=upload.folder,
        repo_type=upload.repo_type,
        commit_message=upload.commit_message,
        delete_patterns=list(upload.delete_patterns),
    )
    return str(info.commit_url)


def _globbed(root: Path, patterns: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                found[path.relative_to(root).as_posix()] = path
    return found


def detector_files(root: Path, checkpoints: str, reports: str) -> dict[str, Path]:
    """Every registered detector's checkpoint and report, and the scope score's (without which every
    image is answered as in scope), under the repo folders ``checkpoints`` and ``reports``."""
    found = {}
    for name in list_detectors():
        found[f"{checkpoints}/{get_spec(name).checkpoint_file}"] = checkpoint_dir(root) / get_spec(name).checkpoint_file
        found[f"{reports}/{name}.json"] = report_dir(root) / f"{name}.json"
    found[f"{checkpoints}/{SCOPE_FILE}"] = checkpoint_dir(root) / SCOPE_FILE
    found[f"{reports}/{SCOPE_REPORT}"] = report_dir(root) / SCOPE_REPORT
    return found


def checkpoint_dir(root: Path) -> Path:
    return root / CHECKPOINT_DIR.relative_to(REPO_ROOT)


def report_dir(root: Path) -> Path:
    return root / REPORT_DIR.relative_to(REPO_ROOT)


def space_set(root: Path = REPO_ROOT) -> FileSet:
    """What the Space receives: the app's files and every detector's checkpoint and report where the app reads them."""
    relative = (checkpoint_dir(root).relative_to(root).as_posix(), report_dir(root).relative_to(root).as_posix())
    return FileSet({**_globbed(root, SPACE_FILES), **detector_files(root, *relative)})


def model_set(root: Path = REPO_ROOT, space_repo: str | None = None) -> FileSet:
    """What the model repo receives: checkpoints, reports, licence, LFS rules, and a card made from the reports."""
    reports = {name: load_report(name, report_dir(root)) for name in list_detectors()}
    files = {**_globbed(root, MODEL_FILES), **detector_files(root, "checkpoints", "reports")}
    return FileSet(files, {"README.md": model_card(reports, space_repo)})


def name_model_repo(folder: Path, model_repo: str) -> None:
    """Point the written Space README's front matter (``models:``) at ``model_repo``."""
    readme = folder / "README.md"
    metadata_save(readme, {**(metadata_load(readme) or {}), "models": [model_repo]})


def problems(root: Path, files: FileSet) -> list[str]:
    """Why this set must not be published: missing files, stale reports, a dirty tree, too many bytes."""
    found = [f"missing: {path}" for path, source in files.files.items() if not source.is_file()]
    for name in list_detectors():
        report, checkpoint = report_dir(root) / f"{name}.json", checkpoint_dir(root) / get_spec(name).checkpoint_file
        if (
            report.is_file()
            and checkpoint.is_file()
            and (why := stale_report(load_report(name, report.parent), checkpoint))
        ):
            found.append(f"stale report {report.name}: {why}")
    found += scope_problems(checkpoint_dir(root), report_dir(root))
    found += dirty(root)
    if not found and (total := sum(files.sizes().values())) > MAX_SET_BYTES:
        found.append(f"the set is {total / 2**20:.1f} MB, over {MAX_SET_BYTES / 2**20:.0f} MB")
    return found


def scope_problems(checkpoints: Path, reports: Path) -> list[str]:
    """A scope score fitted on another native-32 than the shipped one, or a scope report of another scope file."""
    scope, report = checkpoints / SCOPE_FILE, reports / SCOPE_REPORT
    if not (scope.is_file() and report.is_file() and (checkpoints / get_spec(FEATURES_OF).checkpoint_file).is_file()):
        return []  # a missing file is reported as missing
    fitted_on = ScopeModel.load(scope).metadata.get("checkpoint_sha256")
    shipped = file_sha256(checkpoints / get_spec(FEATURES_OF).checkpoint_file)
    found = (
        []
        if fitted_on == shipped
        else [f"stale {SCOPE_FILE}: fitted on another {FEATURES_OF} (python -m train.scope_fit)"]
    )
    if json.loads(report.read_text()).get("scope_file", {}).get("sha256") != file_sha256(scope):
        found.append(
            f"stale report {SCOPE_REPORT}: made for another {SCOPE_FILE} (python -m train.evaluate --only scope)"
        )
    return found


def dirty(root: Path) -> list[str]:
    """Uncommitted changes under ``root`` (git status), so that what is published is a commit."""
    try:
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        return [f"cannot check the git tree at {root} ({error}): deploy from a git checkout"]
    return [f"uncommitted: {line}" for line in status.stdout.splitlines()]


def git_head(root: Path) -> str:
    result = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.stdout.strip() or "an unknown commit"


def listing(files: FileSet) -> str:
    sizes = files.sizes()
    lines = [f"{size / 2**20:10.2f} MB  {path}" for path, size in sizes.items()]
    return "\n".join([*lines, f"{sum(sizes.values()) / 2**20:10.2f} MB  in {len(sizes)} files"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cifake-deploy", description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=REPO_TYPES, help="space: the app; models: checkpoints, reports and a card")
    parser.add_argument("repo_id", help="OWNER/NAME on the Hub")
    parser.add_argument("--dry-run", action="store_true", help="list the files and their sizes; no network")
    parser.add_argument("--out", type=Path, help="write the set into this empty folder instead of uploading it")
    parser.add_argument(
        "--models", help="space: the model repo its front matter names (default OWNER/cifake-detectors)"
    )
    parser.add_argument("--space", help="models: the Space the card links to")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.root.resolve()
    try:
        files = space_set(root) if args.target == "space" else model_set(root, args.space)
    except FileNotFoundError as error:  # a report the card is made from
        print(f"will not publish: {error}", file=sys.stderr)
        return 1
    print(listing(files))
    if found := problems(root, files):
        print("will not publish:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    if args.dry_run:
        return 0
    model_repo = args.models or f"{args.repo_id.split('/')[0]}/cifake-detectors"
    if args.out:
        return _finish(files.write(args.out), args, model_repo, None)
    with tempfile.TemporaryDirectory(prefix="cifake-deploy-") as folder:
        return _finish(files.write(Path(folder)), args, model_repo, git_head(root))


def _finish(folder: Path, args: argparse.Namespace, model_repo: str, head: str | None) -> int:
    if args.target == "space":
        name_model_repo(folder, model_repo)
    if head is None:
        print(f"written to {folder}")
        return 0
    upload = Upload(args.repo_id, REPO_TYPES[args.target], folder, f"Deploy {args.target} from {head}")
    print(f"committed: {push(upload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
