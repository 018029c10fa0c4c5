"""How fast is the app on this machine? ``python scripts/benchmark_app.py [--checkpoints DIR --reports DIR]``

Reports, as a small table:

* start-up: seconds from launching ``python app.py`` until its server answers HTTP;
* per detector and for all of them together, milliseconds per image for a batch of 1 and of 64
  (``predict_proba_arrays`` on 32x32 arrays, best of ``--repeats``);
* end to end in-process: decoding PNG uploads, every detector, the result cards and the CSV;
* through HTTP with ``gradio_client``: ``/predict`` with one image, ``/predict_batch`` with 64.

Not a test: timings depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
from train.evaluate import best_seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_startup(env: dict, port: int, timeout: float) -> tuple[float, subprocess.Popen]:
    """Start ``python app.py`` and return the seconds until ``GET /`` answers, and the process."""
    env = {**env, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "app.py")], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - start, process
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise TimeoutError(f"app.py did not answer on {url} within {timeout:.0f} s")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=None, help="default: $CIFAKE_CHECKPOINTS or assets/checkpoints")
    parser.add_argument("--reports", type=Path, default=None, help="default: $CIFAKE_REPORTS or assets/reports")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--startup-timeout", type=float, default=180)
    args = parser.parse_args(argv)

    env = dict(os.environ)
    if args.checkpoints:
        env["CIFAKE_CHECKPOINTS"] = str(args.checkpoints.resolve())
    if args.reports:
        env["CIFAKE_REPORTS"] = str(args.reports.resolve())
    os.environ.update({k: v for k, v in env.items() if k.startswith("CIFAKE_")})
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

    rows: list[tuple[str, str, str]] = []
    port = free_port()
    startup, process = time_startup(env, port, args.startup_timeout)
    rows.append(("python app.py until HTTP answers", f"{startup:.1f} s", ""))
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        import app

        bank = app.demo.bank
        rng = np.random.default_rng(0)
        batch = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
        for name, detector in bank.detectors.items():
            one = best_ms_per_image(lambda: detector.predict_proba_arrays(batch[:1]), 1, args.repeats)
            many = best_ms_per_image(lambda: detector.predict_proba_arrays(batch), 64, args.repeats)
            rows.append((f"  {bank.title(name)}", f"{one:.2f} ms", f"{many:.2f} ms"))
        one = best_ms_per_image(lambda: bank.predict(batch[:1]), 1, args.repeats)
        many = best_ms_per_image(lambda: bank.predict(batch), 64, args.repeats)
        rows.append((f"all {len(bank.detectors)} detectors (arrays)", f"{one:.1f} ms", f"{many:.2f} ms"))

        folder = Path(tempfile.mkdtemp(prefix="cifake-bench-"))
        paths = []
        for i, pixels in enumerate(batch):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            (folder / f"{i:02d}.png").write_bytes(buffer.getvalue())
            paths.append(str(folder / f"{i:02d}.png"))
        one = best_ms_per_image(lambda: app.detect_outputs(bank, paths[:1]), 1, args.repeats)
        many = best_ms_per_image(lambda: app.detect_outputs(bank, paths), 64, args.repeats)
        rows.append(("decode + detectors + cards + CSV", f"{one:.1f} ms", f"{many:.2f} ms"))

        from gradio_client import Client, handle_file

        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        one = median_ms(lambda: client.predict(handle_file(paths[0]), api_name="/predict"), args.repeats)
        many = median_ms(lambda: client.predict([handle_file(p) for p in paths], api_name="/predict_batch"), max(1, args.repeats // 2)) / 64
        rows.append(("gradio_client /predict, /predict_batch", f"{one:.1f} ms", f"{many:.2f} ms"))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()

    import torch

    print(f"\nCIFAKE app benchmark: {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads; "
          f"checkpoints {bank.checkpoint_dir}; {len(bank.detectors)} detectors loaded"
          + (f", unavailable: {', '.join(bank.unavailable)}" if bank.unavailable else ""))
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'1 image':>12}  {'per image, batch 64':>20}")
    for label, one, many in rows:
        print(f"{label:{width}}  {one:>12}  {many:>20}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
