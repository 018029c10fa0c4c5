""" "This verdict is wrong": what a person says an image is, beside every detector's answer for it.

Always kept in a local JSONL file (rewritten atomically, the newest MAX_RECORDS only); sent to a Hub dataset
by huggingface_hub's CommitScheduler only where HF_TOKEN and $CIFAKE_FEEDBACK_DATASET are both set. The image
itself is stored only when the person ticks "share the image"; otherwise its SHA-256 stands for it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from .checkpoint import file_sha256
from .labels import CLASSES
from .page.analysis import predict_file
from .page.state import AppState
from .paths import REPO_ROOT
from .registry import get_spec

MAX_RECORDS = 5000  # the local file keeps the newest flags only; about 1 kB each
FEEDBACK_DIR_ENV, DATASET_ENV = "CIFAKE_FEEDBACK_DIR", "CIFAKE_FEEDBACK_DATASET"
DEFAULT_DIR = REPO_ROOT / "feedback"
RECORDS, IMAGES = "flags.jsonl", "images"
SHARED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")  # kept on a shared copy
SYNC_MINUTES = 10  # how often the scheduler commits to the dataset, where it runs


@dataclass(frozen=True)
class Flag:
    """One "this verdict is wrong": the image's hash, what the person says, and what each detector said."""

    image_sha256: str
    said: str  # one of CLASSES: what the person says the image is
    detectors: dict[str, dict]  # {detector: {"REAL": p, "FAKE": p, "verdict": v}}, as /predict answers
    checkpoints: dict[str, str]  # {detector: SHA-256 of the checkpoint file that answered}
    image_file: str | None  # the stored copy, relative to the feedback folder; None unless shared
    time: str


class FeedbackLog:
    """The local file of flags (and shared images), bounded, and the scheduler that copies it to the Hub, if any."""

    def __init__(self, folder: Path, scheduler=None, max_records: int = MAX_RECORDS):
        self.folder, self.scheduler, self.max_records = folder, scheduler, max_records
        # The scheduler uploads under its own lock; writing under it keeps a half-written file off the Hub.
        self.lock = scheduler.lock if scheduler is not None else threading.Lock()

    @property
    def path(self) -> Path:
        return self.folder / RECORDS

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.is_file() else []

    def add(self, flag: Flag, image: Path | None) -> None:
        with self.lock:
            if image is not None and flag.image_file:
                (self.folder / flag.image_file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image, self.folder / flag.image_file)
            kept = [*self.records(), asdict(flag)][-self.max_records :]
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{RECORDS}.partial")
            partial.write_text("".join(json.dumps(record) + "\n" for record in kept))
            os.replace(partial, self.path)  # readers see the old file or the new one, never a mix
            self._drop_unreferenced_images(kept)

    def _drop_unreferenced_images(self, kept: list[dict]) -> None:
        referenced = {record["image_file"] for record in kept if record.get("image_file")}
        for path in (self.folder / IMAGES).glob("*") if (self.folder / IMAGES).is_dir() else ():
            if f"{IMAGES}/{path.name}" not in referenced:
                path.unlink()


def hub_scheduler(folder: Path):
    """A CommitScheduler to the dataset $CIFAKE_FEEDBACK_DATASET with $HF_TOKEN; None unless both are set."""
    token, dataset = os.environ.get("HF_TOKEN"), os.environ.get(DATASET_ENV)
    if not (token and dataset):
        return None
    from huggingface_hub import CommitScheduler

    folder.mkdir(parents=True, exist_ok=True)
    return CommitScheduler(
        repo_id=dataset,
        repo_type="dataset",
        folder_path=folder,
        every=SYNC_MINUTES,
        token=token,
        private=True,
        allow_patterns=[RECORDS, f"{IMAGES}/*"],
    )


_LOGS: dict[Path, FeedbackLog] = {}
_LOGS_LOCK = threading.Lock()


def feedback_log() -> FeedbackLog:
    """The log of ``$CIFAKE_FEEDBACK_DIR`` (default feedback/ beside the app), made once per folder."""
    folder = Path(os.environ.get(FEEDBACK_DIR_ENV) or DEFAULT_DIR).resolve()
    with _LOGS_LOCK:
        if folder not in _LOGS:
            _LOGS[folder] = FeedbackLog(folder, hub_scheduler(folder))
        return _LOGS[folder]


_HASHES: dict[tuple[str, int, int], str] = {}


def checkpoint_hashes(state: AppState) -> dict[str, str]:
    """SHA-256 of each loaded detector's checkpoint file, hashed once per file version."""
    hashes = {}
    for name in state.detectors:
        path = state.checkpoint_dir / get_spec(name).checkpoint_file
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        hashes[name] = _HASHES.get(key) or _HASHES.setdefault(key, file_sha256(path))
    return hashes


def flag_image(state: AppState, image: str | Path, said: str, share: bool) -> Flag:
    """Record that ``image`` is ``said`` (REAL or FAKE) with every detector's answer; copy it only if ``share``."""
    if said not in CLASSES:
        raise ValueError(f"say what the image is: one of {', '.join(CLASSES)}")
    image = Path(image)
    answers = predict_file(state, image)  # raises UploadError for a file that is no usable image
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    suffix = image.suffix.lower() if image.suffix.lower() in SHARED_SUFFIXES else ""
    flag = Flag(
        digest,
        said,
        answers,
        checkpoint_hashes(state),
        f"{IMAGES}/{digest}{suffix}" if share else None,
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    feedback_log().add(flag, image if share else None)
    return flag
