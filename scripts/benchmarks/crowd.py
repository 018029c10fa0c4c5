"""Many users at once: ``python -m scripts.benchmarks.crowd [--users 8 --requests 20]``

``--users`` gradio_client users on this machine, each sending ``--requests`` test images one by one
to ``/predict``, against the app (``serve app``), the app running its detectors one after another
on all threads each (``serve one-after-another``), and a Gradio app with the same endpoint that
answers instantly (``serve instant``), while one more client keeps sending corrupt files:
images per second, p50/p95 latency, errors.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from cifake_models.data import load_split

from .common import (
    common_arguments,
    crowd,
    file_name,
    free_port,
    jpeg_files,
    print_table,
    serve_command,
    setup,
    start_server,
    stop,
)

MODES = {
    "app": "the app (detectors side by side, one thread each: served)",
    "one-after-another": "the app (detectors one after another)",
    "instant": "an app that answers instantly",
}


def main(argv: list[str] | None = None) -> int:
    parser = common_arguments(__doc__)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="images each user sends")
    parser.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=list(MODES), help="servers to measure (default: all)"
    )
    args = parser.parse_args(argv)
    env = setup(args)
    work = Path(tempfile.mkdtemp(prefix="cifake-crowd-"))
    test = load_split(args.data, "test")
    split_files = jpeg_files(args.data)
    jpegs = []
    for name in test.names[
        np.sort(np.random.default_rng(0).choice(len(test), args.users * args.requests, replace=False))
    ]:
        jpegs.append(str(work / file_name(name)))
        Path(jpegs[-1]).write_bytes(split_files[file_name(name)])
    corrupt = work / "corrupt.jpg"
    corrupt.write_bytes(Path(jpegs[0]).read_bytes()[:300])  # a JPEG cut short
    results = {}
    for mode in args.modes:
        port = free_port()
        _, server = start_server(serve_command(mode), env, port, args.startup_timeout)
        try:
            results[mode] = crowd(f"http://127.0.0.1:{port}/", jpegs, args.users, args.requests, str(corrupt))
        finally:
            stop(server)
    print_crowd(args, results)
    return 0


def print_crowd(args, results: dict[str, dict]) -> None:
    rows = []
    for mode, r in results.items():
        rows.append(
            [
                MODES[mode],
                f"{r['images/s']:.1f}",
                f"{r['p50']:.2f}",
                f"{r['p95']:.2f}",
                str(len(r["errors"])),
                f"{r['corrupt']['refused']} refused, {r['corrupt']['answered']} answered",
            ]
        )
    if "app" in results and "instant" in results:
        served, baseline = results["app"], results["instant"]
        rows.append(
            [
                "app / instant",
                f"{served['images/s'] / baseline['images/s']:.0%}",
                "",
                f"{served['p95'] / baseline['p95']:.2f}x",
                "",
                "",
            ]
        )
    print_table(
        f"{args.users} gradio_client users x {args.requests} test images to /predict, plus one sending corrupt files",
        ["", "images/s", "p50 s", "p95 s", "errors", "corrupt files"],
        rows,
    )
    for error in [e for r in results.values() for e in r["errors"]][:5]:
        print(f"   error: {error}")


if __name__ == "__main__":
    raise SystemExit(main())
