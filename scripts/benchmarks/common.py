"""What every benchmark shares: servers started and stopped, a crowd of gradio_client users, the
server's memory sampled, timings and tables."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch

from cifake_models.data import default_data_dir, stored_files
from cifake_models.fair import CLIENT_HEADER_ENV
from cifake_models.paths import REPO_ROOT
from train.evaluate import best_seconds

# Every benchmark's server sees each gradio_client user as its own client, as a Space's proxy
# tells them apart: the users state an address of their own in this header.
CLIENT_HEADER = "x-forwarded-for"


def common_arguments(description: str) -> argparse.ArgumentParser:
    """The switches every benchmark takes."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoints", type=Path, default=None, help="default: $CIFAKE_CHECKPOINTS or assets/checkpoints"
    )
    parser.add_argument("--reports", type=Path, default=None, help="default: $CIFAKE_REPORTS or assets/reports")
    parser.add_argument(
        "--data", type=Path, default=None, help="CIFAKE (test split images are the inputs; default: as python -m train)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--startup-timeout", type=float, default=180)
    return parser


def setup(args) -> dict:
    """Apply the common switches to this process; returns the environment for servers it starts."""
    env = dict(os.environ)
    if args.checkpoints:
        env["CIFAKE_CHECKPOINTS"] = str(args.checkpoints.resolve())
    if args.reports:
        env["CIFAKE_REPORTS"] = str(args.reports.resolve())
    env.update({"GRADIO_ANALYTICS_ENABLED": "False", CLIENT_HEADER_ENV: CLIENT_HEADER})
    os.environ.update({k: v for k, v in env.items() if k.startswith("CIFAKE_") or k.startswith("GRADIO_")})
    if args.threads:
        torch.set_num_threads(args.threads)
    args.data = args.data or default_data_dir()
    return env


def serve_command(mode: str) -> list[str]:
    """The command that serves the app in ``mode`` (see ``scripts.benchmarks.serve``)."""
    return [sys.executable, "-m", "scripts.benchmarks.serve", mode]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], env: dict, port: int, timeout: float) -> tuple[float, subprocess.Popen]:
    """Start a Gradio server and return the seconds until ``GET /`` answers, and the process."""
    env = {
        **env,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    start = time.perf_counter()
    log = tempfile.NamedTemporaryFile(
        "w+", prefix="cifake-server-", suffix=".log", delete=False
    )  # a pipe nobody reads would fill
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited with {process.returncode}: {Path(log.name).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - start, process
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise TimeoutError(f"{command} did not answer on {url} within {timeout:.0f} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@contextlib.contextmanager
def torch_threads(n: int):
    """torch computes on ``n`` threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def best_ms_per_image(fn, n: int, repeats: int) -> float:
    return 1000 * best_seconds(fn, repeats) / n


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)))


def file_name(dataset_name: str) -> str:
    """``test/REAL/0042 (3).jpg`` -> ``REAL_0042_(3).jpg``: one flat folder holds both classes."""
    return f"{dataset_name.split('/')[1]}_{Path(dataset_name).name.replace(' ', '_')}"


def jpeg_files(data_dir: Path) -> dict[str, bytes]:
    """The test split's original JPEG files, byte for byte, by :func:`file_name` (from either layout)."""
    return {file_name(name): data for name, _, data in stored_files(data_dir, "test")}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def client(url: str, address: str):
    """A gradio_client user that the server tells apart by ``address`` (:data:`CLIENT_HEADER`)."""
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, headers={CLIENT_HEADER: address})


def crowd(url: str, paths: list[str], users: int, requests: int, corrupt: str) -> dict:
    """``users`` clients sending ``requests`` images each, and one client sending corrupt files."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    clients = [client(url, f"10.0.0.{i + 1}") for i in range(users + 1)]
    corrupt_answers = {"refused": 0, "answered": 0}
    done = threading.Event()

    def vandal() -> None:
        while not done.is_set():
            try:
                clients[users].predict(handle_file(corrupt), api_name="/predict")
                corrupt_answers["answered"] += 1  # the instant app does not read the file
            except AppError:
                corrupt_answers["refused"] += 1

    spoiler = threading.Thread(target=vandal)
    spoiler.start()
    try:
        result = ordinary_users(clients[:users], paths, requests)
    finally:
        done.set()
        spoiler.join()
    return {**result, "corrupt": corrupt_answers}


def ordinary_users(clients: list, paths: list[str], requests: int) -> dict:
    """Each of ``clients`` sends ``requests`` of ``paths`` to /predict one by one: images/s, p50, p95, errors."""
    from gradio_client import handle_file

    latencies: list[float] = []
    errors: list[str] = []

    def user(i: int) -> None:
        for j in range(requests):
            start = time.perf_counter()
            try:
                clients[i].predict(handle_file(paths[(i * requests + j) % len(paths)]), api_name="/predict")
                latencies.append(time.perf_counter() - start)
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(clients))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "images/s": len(latencies) / wall,
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
        "errors": errors,
    }


class MemorySampler:
    """The resident memory of a process and all its descendants, sampled every ``every`` seconds
    from /proc (pages shared between them count once per process: an upper bound)."""

    def __init__(self, pid: int, every: float = 0.05):
        self.pid, self.every, self.peak, self.samples = pid, every, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = tree_rss(self.pid)
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            time.sleep(self.every)


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and its descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in tree]
        tree.update(children)
        frontier = children
    total = 0
    for p in tree:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total
