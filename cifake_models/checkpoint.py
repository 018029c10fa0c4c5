"""Checkpoint files: atomic writes, safe loads, and the facts every checkpoint records."""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT_VERSION = 1
METADATA_KEY = "cifake"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or not what it claims to be."""


TEMPORARY_SUFFIX = ".partial"


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, make it durable, then move it into place: a crash or kill leaves
    the old file or the new one, never half a file. Temporary files that killed writers left
    beside ``path`` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; checkpoints are meant to be shared
        fsync(tmp)
        os.replace(tmp, path)
        fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def fsync(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_orphans(path: Path) -> None:
    """Remove the temporary files of :func:`atomic_write` for ``path`` whose writing process is gone."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TEMPORARY_SUFFIX}"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            tmp.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_json(path: str | Path, data) -> Path:
    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")

    return atomic_write(path, write)


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
    """Weights plus a JSON description in the safetensors header, which holds only strings."""
    header = {METADATA_KEY: json.dumps(metadata, allow_nan=False)}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    require_file(path)
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = json.loads((handle.metadata() or {})[METADATA_KEY])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise CheckpointError(f"{path} is not a valid checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path} is not a valid checkpoint (its {METADATA_KEY} metadata is not a JSON object)")
    return tensors, metadata


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train it with `python -m train` or restore it")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")


# Every library whose version can change what training, evaluation or a loaded checkpoint
# computes: pillow decodes the JPEGs and runs the upload-like augmentation, scikit-image computes
# HOG, scipy's L-BFGS fits the SVM, skops and safetensors read and write the files.
RECORDED_LIBRARIES = (
    "torch",
    "torchvision",
    "numpy",
    "scikit-learn",
    "scikit-image",
    "scipy",
    "pillow",
    "skops",
    "safetensors",
)


def library_versions() -> dict[str, str | None]:
    """Python's version and each of :data:`RECORDED_LIBRARIES`' (``None``: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    # torch's and torchvision's own versions name the build too (+cu128, +cpu), which the
    # package's metadata may not.
    versions["torch"], versions["torchvision"] = torch.__version__, torchvision.__version__
    return versions


def _cpu_name() -> str:
    """The CPU model where Linux names it (``platform.processor()`` there only says x86_64)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX-512 BF16 or AMX), without which bf16
    autocast is emulated. AVX-512 alone does not say: measured on two 2-core AVX-512 machines,
    native-32 trained 2.8x faster in bf16 than in float32 on an AMD EPYC with AVX-512 BF16, and
    2.4x slower (109 against 259 images/s) on an Intel Xeon without it."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def hardware(device: str | torch.device) -> str:
    """The machine ``device`` (where the work ran: ``cuda:0``, ``cpu``) belongs to. On a CPU the
    vector extension torch uses is named too, and whether it computes in bf16: CPUs of one model
    name differ in both, and they decide the speed."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    extension = torch.backends.cpu.get_cpu_capability() + (" with BF16" if cpu_computes_bf16() else "")
    return f"CPU: {_cpu_name()}, {extension}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
