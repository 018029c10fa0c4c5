"""How fast is the app on this machine? ``python scripts/benchmark_app.py [--checkpoints DIR --reports DIR]``

Measures side by side, in one run, and prints as tables:

1. **One image, in-process**: a plain ResNet-50 forward pass at 32x32 (batch 1, PyTorch), then
   every detector and all of them on one image, for each way of running them: two forward passes
   per image (image, then mirror: how the app ran before), both views in one pass, that plus
   channels-last, a frozen TorchScript graph, and ONNX Runtime (what the app and ``cifake-score``
   now use), with its threads busy-waiting between operators and without; with the largest
   difference in probability from the two-pass PyTorch answer over ``--check-images`` test
   images. Also per image for a batch of 64. Then all detectors as the app serves them: side by
   side, ONNX Runtime on one thread each (``cifake_models.serving``).
2. **The app**: start-up of ``python app.py`` until HTTP answers; decode + detectors + cards +
   CSV in-process; ``gradio_client`` ``/predict`` and ``/predict_batch``.
3. **Many users at once**: ``--users`` gradio_client users on this machine, each sending
   ``--requests`` test images one by one to ``/predict``, against the app, the app running its
   detectors one after another on all threads each, as before (``--serve-one-after-another``), and a Gradio app with the
   same endpoint that answers instantly (``--serve-instant``), while one more client keeps sending
   corrupt files: images per second, p50/p95 latency, errors.
4. **A folder** (``--folder-images``, default all 20,000 test images, as their original JPEG
   files): ``cifake-score`` killed part-way and resumed, its images per second (over both runs
   with their start-ups, and the resumed run's own rate once loaded) against the in-process batch
   speed, and its CSV against the app's for the same files.

5. **Stability and heatmaps** (``--extras``, instead of 1-4): one image through every detector as
   the app serves them, then with :mod:`cifake_models.stability`'s check, with
   :mod:`cifake_models.explain`'s heatmaps, and with both; ms per image, median of ``--repeats``,
   in wall time and in the process's CPU time (less sensitive to other jobs on the machine), in
   total and per detector; and each heatmap's completeness error (IG's check of its own accuracy).

Not a test: timings depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import gradio as gr  # at module level: gr.api reads the hint gr.FileData from this module's names
import numpy as np
import torch
from PIL import Image

from cifake_models.committee import CommitteeDetector
from cifake_models.data import default_data_dir, load_split, stored_files
from cifake_models.images import mirror
from cifake_models.onnx_runtime import SPINNING
from cifake_models.page.analysis import MAX_BATCH_FILES
from cifake_models.paths import REPO_ROOT
from train.evaluate import best_seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], env: dict, port: int, timeout: float) -> tuple[float, subprocess.Popen]:
    """Start a Gradio server and return the seconds until ``GET /`` answers, and the process."""
    env = {**env, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited with {process.returncode}: {process.stderr.read()[-2000:]}")
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


def serve_instant() -> None:
    """A Gradio app with the app's ``/predict`` endpoint (same ``gr.api`` typing, queue and
    concurrency) that answers at once without reading the file: what Gradio and the clients cost by themselves."""
    import app

    answer = {name: {"REAL": 0.5, "FAKE": 0.5} for name in app.demo.app_state.detectors}

    def predict(image: gr.FileData) -> dict[str, dict[str, float]]:
        return answer

    with gr.Blocks(analytics_enabled=False) as demo:
        gr.api(predict, api_name="predict", concurrency_limit=app.PREDICT_CONCURRENCY)
    demo.queue(max_size=64)
    demo.launch(max_file_size=app.SERVER_MAX_FILE_SIZE)


def serve_one_after_another() -> None:
    """The app with the detectors of each pass run one after another, each on all of torch's
    threads (``serving.SIDE_BY_SIDE`` off: how it served before), so both ways meet the same crowd."""
    from cifake_models import serving

    serving.SIDE_BY_SIDE = False
    import app

    app.main()


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


# --------------------------------------------------------------------------- 1. one image, in-process


class ChannelsLast(torch.nn.Module):
    """A network run on channels-last tensors (oneDNN's preferred layout on CPUs)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.inner = module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous(memory_format=torch.channels_last))


def variants(name: str, checkpoint_dir: Path) -> dict[str, object]:
    """``{way of running: function(uint8 batch) -> probabilities}`` for one detector, each loaded
    afresh from its checkpoint; the candidates replace the forward pass (``TorchDetector.network``)."""
    from cifake_models import load_detector

    plain = load_detector(name, checkpoint_dir)

    def two_passes(batch: np.ndarray) -> np.ndarray:  # calibrated, as every other way answers
        if not plain.views.mirror_average:
            return plain.calibrate(plain.single_view(batch))
        return plain.calibrate((plain.single_view(batch) + plain.single_view(mirror(batch))) / 2)

    ways = {"two passes (before)": two_passes, "one pass": plain.probabilities}
    if not hasattr(plain, "module"):
        return ways  # HOG + SVM: scikit-learn, nothing else to try
    last = load_detector(name, checkpoint_dir)
    last.network = ChannelsLast(last.module)
    ways["one pass, channels-last"] = last.probabilities
    frozen = load_detector(name, checkpoint_dir)
    with torch.no_grad():
        example = frozen.preprocessing.eval_transform(np.zeros((2, 32, 32, 3), np.uint8))
        frozen.network = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(frozen.module, example)))
    ways["one pass, TorchScript frozen"] = frozen.probabilities
    ways["one pass, ONNX Runtime"] = load_detector(name, checkpoint_dir).prepare_for_serving().probabilities
    other = load_detector(name, checkpoint_dir).prepare_for_serving(spinning=not SPINNING)
    ways[f"one pass, ONNX Runtime, spinning {'off' if SPINNING else 'on'}"] = other.probabilities
    return ways


def one_image(checkpoint_dir: Path, titles: dict[str, str], images: np.ndarray, repeats: int, served) -> None:
    """``served``: the app's ``AppState.predict`` (its detectors side by side, one thread each)."""
    torch.manual_seed(0)
    from torchvision.models import resnet50

    plain = resnet50(num_classes=2).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        reference = best_ms_per_image(lambda: plain(x), 1, 3 * repeats)
    one, batch64 = images[:1], images[np.arange(64) % len(images)]
    ways = {name: variants(name, checkpoint_dir) for name in titles}
    labels = list(dict.fromkeys(label for w in ways.values() for label in w))
    rows, totals, totals64 = [], dict.fromkeys(labels, 0.0), dict.fromkeys(labels, 0.0)
    befores = {}
    for name, way in ways.items():
        before = befores[name] = way["two passes (before)"](images)
        for label in labels:
            fn = way.get(label, way["one pass"])  # the SVM has one way to run in one pass
            ms1 = best_ms_per_image(lambda: fn(one), 1, repeats)
            ms64 = best_ms_per_image(lambda: fn(batch64), 64, max(2, repeats // 2))
            diff = float(np.abs(fn(images) - before).max())
            totals[label] += ms1
            totals64[label] += ms64
            rows.append([f"{titles[name]}: {label}", f"{ms1:.2f}", f"{ms64:.2f}", f"{diff:.1e}"])
    for label in labels:
        rows.append([f"all {len(titles)} detectors: {label}", f"{totals[label]:.1f}", f"{totals64[label]:.2f}",
                     f"{totals[label] / reference:.1f}x"])
    ms1, ms64 = best_ms_per_image(lambda: served(one), 1, repeats), best_ms_per_image(lambda: served(batch64), 64, max(2, repeats // 2))
    rows.append([f"all {len(titles)} detectors: side by side, ONNX Runtime one thread each (served)", f"{ms1:.1f}", f"{ms64:.2f}",
                 f"{ms1 / reference:.1f}x"])
    probas = served(images)[0]  # in (FAKE, REAL) order, as every way answers: CLASSES
    side_diff = max(float(np.abs(probas[name] - befores[name]).max()) for name in titles)
    print_table(f"1. One image in-process (ms). Plain ResNet-50 forward at 32x32, batch 1, PyTorch: {reference:.2f} ms.\n"
                f"   Last column: largest |P difference| from 'two passes (before)' over {len(images)} test images; "
                "for all detectors, the time in multiples of the plain ResNet-50 forward.",
                ["", "1 image", "per image, batch 64", "diff / ratio"], rows)
    print(f"   Side by side (served): largest |P difference| from 'two passes (before)': {side_diff:.1e}\n", flush=True)


# --------------------------------------------------------------------------- 5. stability and heatmaps


def median_wall_cpu_ms(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU (all of this process's threads) milliseconds of ``fn()``, after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def extras(checkpoint_dir: Path | None, data_dir: Path, repeats: int, n_images: int) -> None:
    """Issue 14's additions against what one image costs today, on the served detectors."""
    from captum.attr import IntegratedGradients

    from cifake_models import explain, stability
    from cifake_models.data import decode_rgb
    from cifake_models.detector import TorchDetector
    from cifake_models.page.state import load_state

    threads = torch.get_num_threads()
    state = load_state(checkpoint_dir)  # as the app loads and serves them
    detectors = state.detectors
    files = jpeg_files(data_dir)
    names = sorted(files)
    images = np.stack([decode_rgb(files[names[i]]) for i in np.random.default_rng(0).choice(len(names), n_images, replace=False)])

    def cost(fn) -> tuple[float, float]:  # per image, over the sample, one image per call
        per_image = [median_wall_cpu_ms(lambda: fn(image), repeats) for image in images]
        return statistics.median(w for w, _ in per_image), statistics.median(c for _, c in per_image)

    def row(label: str, fn) -> list[str]:
        wall, cpu = cost(fn)
        return [label, f"{wall:.0f}", f"{cpu:.0f}"]

    def checked(image: np.ndarray) -> list:  # as the page does: the copies only, beside the image's own answers
        return stability.check(detectors, image[None], answers=state.predict(image[None]), predict=state.predict)

    both = lambda image: (checked(image), explain.heatmaps(detectors, image, executor=state.serving.executor))
    rows = [
        row("all detectors (today)", lambda image: state.predict(image[None])),
        row(f"+ stability ({len(stability.CHANGES)} changed copies, one pass)", checked),
        row("+ heatmaps", lambda image: (state.predict(image[None]), explain.heatmaps(detectors, image, executor=state.serving.executor))),
        row("+ both", both),
    ]
    for name, detector in detectors.items():
        if not isinstance(detector, CommitteeDetector):  # a committee has no map (explain.NO_HEATMAP)
            rows.append(row(f"  heatmap: {name}", lambda image: explain.heatmaps({name: detector}, image)))
    print_table(f"5. One image (ms, median over {len(images)} test images of the median of {repeats} runs): "
                f"{os.cpu_count()} CPU cores, {threads} torch threads"
                + (", detectors side by side on one thread each" if state.serving.executor else ""),
                ["", "wall", "CPU"], rows)

    # Are explain.STEPS path points enough? IG's own check, completeness (the attributions sum to
    # the FAKE-minus-REAL logit of the image less the black image's), and whether the map shown
    # has converged: its correlation with the map from four times as many points. Medians over the images.
    rows = []
    for name, detector in detectors.items():
        if isinstance(detector, TorchDetector):
            x = detector.preprocessing.eval_transform(torch.as_tensor(images))
            base = detector.preprocessing.eval_transform(torch.zeros((1, 32, 32, 3), dtype=torch.uint8))
            margin = explain.FakeMargin(detector.module.eval())  # what the page's maps attribute
            _, delta = IntegratedGradients(margin).attribute(x, baselines=base, n_steps=explain.STEPS, return_convergence_delta=True)
            with torch.no_grad():
                gap = margin(x) - margin(base)
            similar = [np.corrcoef(explain.integrated_gradients(detector, image).values.ravel(),
                                   explain.integrated_gradients(detector, image, 4 * explain.STEPS).values.ravel())[0, 1]
                       for image in images]
            rows.append([name, f"{float((delta.abs() / gap.abs()).median()):.3f}", f"{np.median(similar):.3f}"])
    print_table(f"   Integrated Gradients with {explain.STEPS} steps (one view)",
                ["", "|sum - margin gap| / |gap|", f"map's correlation with {4 * explain.STEPS} steps'"], rows)


# --------------------------------------------------------------------------- 3. many users


def crowd(url: str, paths: list[str], users: int, requests: int, corrupt: str) -> dict:
    """``users`` clients sending ``requests`` images each, and one client sending corrupt files."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    clients = [Client(url, verbose=False, download_files=False) for _ in range(users + 1)]
    latencies: list[float] = []
    errors: list[str] = []
    corrupt_answers = {"refused": 0, "answered": 0}
    done = threading.Event()

    def user(i: int) -> None:
        for j in range(requests):
            start = time.perf_counter()
            try:
                clients[i].predict(handle_file(paths[(i * requests + j) % len(paths)]), api_name="/predict")
                latencies.append(time.perf_counter() - start)
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}")

    def vandal() -> None:
        while not done.is_set():
            try:
                clients[users].predict(handle_file(corrupt), api_name="/predict")
                corrupt_answers["answered"] += 1  # the instant app does not read the file
            except AppError:
                corrupt_answers["refused"] += 1

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    spoiler = threading.Thread(target=vandal)
    spoiler.start()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    done.set()
    spoiler.join()
    ordered = sorted(latencies)
    return {"images/s": len(latencies) / wall, "p50": ordered[len(ordered) // 2] if ordered else float("nan"),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan"),
            "errors": errors, "corrupt": corrupt_answers}


# --------------------------------------------------------------------------- 4. a folder


def score_folder(folder: Path, out: Path, env: dict, kill_after: float | None) -> tuple[float, int, str]:
    """Run ``cifake-score`` on ``folder``; SIGKILL it after ``kill_after`` seconds if given.
    Returns the wall time, the exit code (-9 when killed) and the command's last line (its summary)."""
    command = [sys.executable, "-m", "cifake_models.score", str(folder), "--out", str(out)]
    log = out.with_suffix(".log")
    start = time.perf_counter()
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
    lines = log.read_text().replace("\r", "\n").strip().splitlines()
    return time.perf_counter() - start, process.returncode, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=None, help="default: $CIFAKE_CHECKPOINTS or assets/checkpoints")
    parser.add_argument("--reports", type=Path, default=None, help="default: $CIFAKE_REPORTS or assets/reports")
    parser.add_argument("--data", type=Path, default=None, help="CIFAKE (test split images are the inputs; default: as python -m train)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--check-images", type=int, default=500, help="test images on which the ways of running are compared")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="images each user sends")
    parser.add_argument("--folder-images", type=int, default=20_000, help="0 skips the folder test")
    parser.add_argument("--kill-after", type=float, default=60, help="seconds before the folder run is killed, then resumed")
    parser.add_argument("--startup-timeout", type=float, default=180)
    parser.add_argument("--parts", type=int, nargs="+", choices=(1, 2, 3, 4), default=(1, 2, 3, 4), help="which measurements (default: all)")
    parser.add_argument("--extras", action="store_true", help="measure the stability check and heatmaps (5) instead of 1-4")
    parser.add_argument("--extras-images", type=int, default=8, help="test images the extras are measured on")
    parser.add_argument("--serve-instant", action="store_true", help=argparse.SUPPRESS)  # the instant app, as a server
    parser.add_argument("--serve-one-after-another", action="store_true", help=argparse.SUPPRESS)  # the app, served as before
    args = parser.parse_args(argv)
    if args.serve_instant:
        serve_instant()
        return 0
    if args.serve_one_after_another:
        serve_one_after_another()
        return 0
    if args.extras:
        if args.threads:
            torch.set_num_threads(args.threads)
        checkpoints = args.checkpoints or os.environ.get("CIFAKE_CHECKPOINTS")
        extras(Path(checkpoints) if checkpoints else None, args.data or default_data_dir(), args.repeats, args.extras_images)
        return 0

    env = dict(os.environ)
    if args.checkpoints:
        env["CIFAKE_CHECKPOINTS"] = str(args.checkpoints.resolve())
    if args.reports:
        env["CIFAKE_REPORTS"] = str(args.reports.resolve())
    os.environ.update({k: v for k, v in env.items() if k.startswith("CIFAKE_")})
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()  # before the app's detectors take one each (serving.side_by_side)
    test = load_split(args.data or default_data_dir(), "test")
    rng = np.random.default_rng(0)
    sample = test.images[np.sort(rng.choice(len(test), args.check_images, replace=False))]

    work = Path(tempfile.mkdtemp(prefix="cifake-bench-"))
    port = free_port()
    startup, process = start_server([sys.executable, str(REPO_ROOT / "app.py")], env, port, args.startup_timeout)
    try:
        import app

        state = app.demo.app_state
        print(f"CIFAKE app benchmark: {os.cpu_count()} CPU cores, {threads} torch threads; "
              f"checkpoints {state.checkpoint_dir}; {len(state.detectors)} detectors loaded"
              + (f", unavailable: {', '.join(state.unavailable)}" if state.unavailable else ""), flush=True)
        if 1 in args.parts:
            # A committee runs no network of its own: in the app it combines its members' answers.
            members = {n: state.title(n) for n, d in state.detectors.items() if not isinstance(d, CommitteeDetector)}
            with torch_threads(threads):  # the ways compare on the process's threads; the app set them to one
                one_image(state.checkpoint_dir, members, sample, args.repeats, state.predict)
            for committee in (d for d in state.detectors.values() if isinstance(d, CommitteeDetector)):
                answers = {m: np.array([0.5]) for m in committee.members}
                ms = best_ms_per_image(lambda: committee.combine(answers), 1, args.repeats)
                print(f"{state.title(committee.name)}: combining its {len(answers)} members' answers for one image: {ms:.3f} ms "
                      "(no forward pass of its own)\n", flush=True)
        if 2 in args.parts:
            the_app(app, state, port, sample, startup, work, args.repeats)
        if 3 in args.parts:
            served, jpegs, corrupt = many_users(args, test, rng, port, work)
    finally:
        stop(process)
    if 3 in args.parts:
        others = {}
        for flag in ("--serve-one-after-another", "--serve-instant"):
            other_port = free_port()
            _, other = start_server([sys.executable, str(Path(__file__).resolve()), flag], env, other_port, args.startup_timeout)
            try:
                others[flag] = crowd(f"http://127.0.0.1:{other_port}/", jpegs, args.users, args.requests, str(corrupt))
            finally:
                stop(other)
        print_crowd(args, served, others["--serve-one-after-another"], others["--serve-instant"])
    if 4 in args.parts and args.folder_images:
        folder_test(args, env, state, test, work)
    return 0


def the_app(app, state, port: int, sample: np.ndarray, startup: float, work: Path, repeats: int) -> None:
    from gradio_client import Client, handle_file

    paths = []
    for i, pixels in enumerate(sample[:64]):
        paths.append(str(work / f"{i:02d}.png"))
        Image.fromarray(pixels).save(paths[-1])
    rows = [["python app.py until HTTP answers", f"{startup:.1f} s", ""]]
    one = best_ms_per_image(lambda: app.detect_outputs(state, paths[:1]), 1, repeats)
    many = best_ms_per_image(lambda: app.detect_outputs(state, paths), 64, repeats)
    rows.append(["decode + detectors + cards + CSV", f"{one:.1f} ms", f"{many:.2f} ms"])
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
    one = median_ms(lambda: client.predict(handle_file(paths[0]), api_name="/predict"), repeats)
    many = median_ms(lambda: client.predict([handle_file(p) for p in paths], api_name="/predict_batch"), max(1, repeats // 2)) / 64
    rows.append(["gradio_client /predict, /predict_batch", f"{one:.1f} ms", f"{many:.2f} ms"])
    print_table("2. The app", ["", "1 image", "per image, batch 64"], rows)


def many_users(args, test, rng, port: int, work: Path) -> tuple[dict, list[str], Path]:
    """The crowd against the app; returns its figures, the files sent, and the corrupt file."""
    split_files = jpeg_files(args.data or default_data_dir())
    jpegs = []
    for name in test.names[np.sort(rng.choice(len(test), args.users * args.requests, replace=False))]:
        jpegs.append(str(work / file_name(name)))
        Path(jpegs[-1]).write_bytes(split_files[file_name(name)])
    corrupt = work / "corrupt.jpg"
    corrupt.write_bytes(Path(jpegs[0]).read_bytes()[:300])  # a JPEG cut short
    return crowd(f"http://127.0.0.1:{port}/", jpegs, args.users, args.requests, str(corrupt)), jpegs, corrupt


def print_crowd(args, served: dict, before: dict, baseline: dict) -> None:
    rows = []
    for label, r in (("the app (detectors side by side, one thread each: served)", served),
                     ("the app (detectors one after another: before)", before), ("an app that answers instantly", baseline)):
        rows.append([label, f"{r['images/s']:.1f}", f"{r['p50']:.2f}", f"{r['p95']:.2f}", str(len(r["errors"])),
                     f"{r['corrupt']['refused']} refused, {r['corrupt']['answered']} answered"])
    rows.append(["app / instant", f"{served['images/s'] / baseline['images/s']:.0%}", "", f"{served['p95'] / baseline['p95']:.2f}x", "", ""])
    print_table(f"3. {args.users} gradio_client users x {args.requests} test images to /predict, plus one sending corrupt files",
                ["", "images/s", "p50 s", "p95 s", "errors", "corrupt files"], rows)
    for error in (served["errors"] + before["errors"] + baseline["errors"])[:5]:
        print(f"   error: {error}")


def file_name(dataset_name: str) -> str:
    """``test/REAL/0042 (3).jpg`` -> ``REAL_0042_(3).jpg``: one flat folder holds both classes."""
    return f"{dataset_name.split('/')[1]}_{Path(dataset_name).name.replace(' ', '_')}"


def jpeg_files(data_dir: Path) -> dict[str, bytes]:
    """The test split's original JPEG files, byte for byte, by :func:`file_name` (from either layout)."""
    return {file_name(name): data for name, _, data in stored_files(data_dir, "test")}


def folder_test(args, env: dict, state, test, work: Path) -> None:
    import app

    folder = work / "test-split"
    folder.mkdir()
    files = jpeg_files(args.data or default_data_dir())
    names = [file_name(n) for n in test.names[np.sort(np.random.default_rng(1).permutation(len(test))[: args.folder_images])]]
    for name in names:
        (folder / name).write_bytes(files[name])
    out = work / "scores.csv"
    killed_after, code, _ = score_folder(folder, out, env, args.kill_after)
    written = max(0, sum(1 for _ in open(out, encoding="utf-8")) - 1) if out.exists() else 0
    resumed_in, code2, summary = score_folder(folder, out, env, None)
    # The resumed run's own rate, from its summary: files scored per second once the detectors are loaded.
    own = re.search(r"in ([\d.]+) s \(([\d.]+) files/s\) after ([\d.]+) s of start-up", summary)
    with open(out, encoding="utf-8", newline="") as handle:
        table = list(csv.reader(handle))
    unique = len({row[0] for row in table[1:]})
    wall = killed_after + resumed_in
    # In-process batch speed: every detector (as served) on the same images as arrays, in batches
    # of 64 and of cifake-score's 256.
    arrays = test.images[: min(len(names), 2048)]
    in_process = {}
    for size in (64, 256):
        start = time.perf_counter()
        for i in range(0, len(arrays), size):
            state.predict(arrays[i : i + size])
        in_process[size] = len(arrays) / (time.perf_counter() - start)
    sample = sorted(folder.iterdir())[:MAX_BATCH_FILES]
    _, _, download = app.detect_outputs(state, [str(p) for p in sample])
    apps = list(csv.reader(open(download["value"], encoding="utf-8", newline="")))
    ours = {row[0]: row for row in table[1:]}
    same = apps[0] == table[0] and all(ours[row[0]] == row for row in apps[1:])
    rows = [
        ["first run, killed (SIGKILL)", f"{killed_after:.0f} s", f"{written} rows written" + (" (finished before the kill)" if code == 0 else "")],
        ["same command again (resumes)", f"{resumed_in:.0f} s", f"exit {code2}; {len(table) - 1} rows, {unique} distinct files"],
        ["cifake-score, both runs", f"{len(names) / wall:.0f} images/s", "including start-up (load + ONNX export) twice"],
        ["cifake-score, resumed run, once loaded", f"{float(own[2]):.0f} images/s" if own else "?",
         f"{own[1]} s scoring after {own[3]} s of start-up (its own summary)" if own else f"no summary: {summary!r}"],
        *([f"in-process batches of {size} (served detectors)", f"{rate:.0f} images/s", f"on {len(arrays)} arrays, no decoding"]
          for size, rate in in_process.items()),
        [f"CSV vs the app's for {len(sample)} of the files", "identical" if same else "DIFFERENT", ""],
    ]
    print_table(f"4. cifake-score on {len(names):,} test-split JPEG files", ["", "", ""], rows)


if __name__ == "__main__":
    sys.exit(main())
