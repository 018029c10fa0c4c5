"""One hostile client among ordinary ones: ``python -m scripts.benchmarks.hostile [--users 8 --requests 20]``

Serves the app (``serve app``: fair sharing on, each gradio_client user its own client) and runs
``--users`` ordinary users, each sending ``--requests`` test-split JPEG files one by one to
``/predict``: first alone, then while one more client sends the worst files the app allows, in a
loop: a 16-bit 8000x5000 PNG to ``/predict``, a TIFF of ``--pages`` pages to ``/predict``, the
PNG referenced ``MAX_BATCH_FILES`` times in one ``/predict_batch``, and a burst of ``--burst``
requests at once (a full queue). Prints the ordinary users' images/s, p50, p95 and errors in both
phases, the hostile client's answers, the server's peak resident memory (its process tree,
sampled every 50 ms), and each worst request's decoding CPU time, measured in this process.
"""

from __future__ import annotations

import struct
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from cifake_models.page.analysis import MAX_BATCH_FILES
from cifake_models.uploads import decode_many

from .common import (
    MemorySampler,
    client,
    common_arguments,
    free_port,
    jpeg_files,
    ordinary_users,
    print_table,
    serve_command,
    setup,
    start_server,
    stop,
    tree_rss,
)

WIDTH, HEIGHT = 8000, 5000  # uploads.MAX_PIXELS, the most an upload may have


def worst_files(folder: Path, pages: int) -> dict[str, Path]:
    """The 16-bit PNG of the most pixels allowed, and a TIFF of ``pages`` one-pixel pages after a 32x32 one."""
    deep = folder / "deep16.png"
    Image.frombytes("I;16", (WIDTH, HEIGHT), np.arange(WIDTH * HEIGHT, dtype="<u2").tobytes()).save(deep)
    tiff = folder / "pages.tif"
    tiff.write_bytes(many_page_tiff(pages))
    return {"deep": deep, "pages": tiff}


def many_page_tiff(pages: int) -> bytes:
    """A grayscale TIFF: a 32x32 page, then ``pages`` 1x1 pages sharing one byte of pixels, written
    directly (Pillow's save_all takes minutes for tens of thousands of pages)."""
    first, tiny = 8, 8 + 32 * 32
    start = tiny + 2  # the IFDs, each 2 + 8 x 12 + 4 bytes

    def ifd(size: int, data: int, next_ifd: int) -> bytes:
        tags = [
            (256, 4, size),
            (257, 4, size),
            (258, 3, 8),
            (259, 3, 1),
            (262, 3, 1),
            (273, 4, data),
            (278, 4, size),
            (279, 4, size * size),
        ]
        return (
            struct.pack("<H", len(tags))
            + b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags)
            + struct.pack("<I", next_ifd)
        )

    size = 2 + 8 * 12 + 4
    ifds = [ifd(32, first, start + size if pages else 0)]
    ifds += [ifd(1, tiny, start + (i + 2) * size if i + 1 < pages else 0) for i in range(pages)]
    return b"II*\0" + struct.pack("<I", start) + bytes([90]) * 1024 + b"\0\0" + b"".join(ifds)


def hostile(url: str, files: dict[str, Path], burst: int, done: threading.Event) -> tuple[Counter, list[float]]:
    """The hostile client's loop until ``done``: what each request got, and each one's seconds."""
    from gradio_client import handle_file

    me = client(url, "10.9.9.9")
    outcomes: Counter = Counter()
    seconds: list[float] = []

    def send(api: str, payload) -> None:
        start = time.perf_counter()
        try:
            me.predict(payload, api_name=api)
            outcomes[f"{api} answered"] += 1
        except Exception as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            outcomes[f"{api} refused ({status or type(error).__name__})"] += 1
        seconds.append(time.perf_counter() - start)

    deep, pages = handle_file(str(files["deep"])), handle_file(str(files["pages"]))
    while not done.is_set():
        send("/predict", deep)
        send("/predict", pages)
        send("/predict_batch", [deep] * MAX_BATCH_FILES)
        threads = [threading.Thread(target=send, args=("/predict", deep)) for _ in range(burst)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return outcomes, seconds


def decode_cpu(files: dict[str, Path]) -> list[list[str]]:
    """Each worst request's decoding, in this process (idle otherwise): its CPU seconds, all threads."""
    rows = []
    for label, paths in (
        ("16-bit 8000x5000 PNG", [files["deep"]]),
        ("many-page TIFF", [files["pages"]]),
        (f"the PNG {MAX_BATCH_FILES} times in one request", [files["deep"]] * MAX_BATCH_FILES),
    ):
        start = time.process_time()
        results = decode_many(paths)
        rows.append([label, f"{time.process_time() - start:.2f} s", results[0].__class__.__name__])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = common_arguments(__doc__)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="images each ordinary user sends, per phase")
    parser.add_argument("--pages", type=int, default=40_000, help="pages of the hostile TIFF")
    parser.add_argument("--burst", type=int, default=16, help="requests the hostile client sends at once")
    args = parser.parse_args(argv)
    env = setup(args)
    work = Path(tempfile.mkdtemp(prefix="cifake-hostile-"))
    jpegs = []
    for name, data in list(jpeg_files(args.data).items())[: args.users * args.requests]:
        jpegs.append(str(work / name))
        Path(jpegs[-1]).write_bytes(data)
    files = worst_files(work, args.pages)
    cpu_rows = decode_cpu(files)
    port = free_port()
    _, process = start_server(serve_command("app"), env, port, args.startup_timeout)
    url = f"http://127.0.0.1:{port}/"
    try:
        start_rss = tree_rss(process.pid)
        with MemorySampler(process.pid) as memory:
            users = [client(url, f"10.0.0.{i + 1}") for i in range(args.users)]
            alone = ordinary_users(users, jpegs, args.requests)
            alone_peak = memory.peak
            done, answers = threading.Event(), {}
            spoiler = threading.Thread(
                target=lambda: answers.update(zip(("outcomes", "seconds"), hostile(url, files, args.burst, done)))
            )
            spoiler.start()
            time.sleep(2)  # the hostile client's first requests are in
            crowded = ordinary_users(users, jpegs, args.requests)
            done.set()
            spoiler.join()
    finally:
        stop(process)
    report(args, alone, crowded, answers, memory, start_rss, alone_peak, cpu_rows)
    return 0


def report(args, alone: dict, crowded: dict, answers: dict, memory, start_rss: int, alone_peak: int, cpu_rows) -> None:
    gib = 2**30
    rows = [
        [label, f"{r['images/s']:.1f}", f"{r['p50']:.3f}", f"{r['p95']:.3f}", str(len(r["errors"]))]
        for label, r in (("ordinary users alone", alone), ("ordinary users beside the hostile client", crowded))
    ]
    rows.append(["with / without", "", "", f"{crowded['p95'] / alone['p95']:.2f}x", ""])
    print_table(
        f"Hostile crowd: {args.users} ordinary gradio_client users x {args.requests} test images to /predict, "
        "alone and beside one hostile client",
        ["", "images/s", "p50 s", "p95 s", "errors"],
        rows,
    )
    for error in (alone["errors"] + crowded["errors"])[:5]:
        print(f"   error: {error}")
    outcomes = answers.get("outcomes", Counter())
    seconds = answers.get("seconds", [])
    print_table(
        "The hostile client's requests",
        ["", "count"],
        [[k, str(v)] for k, v in sorted(outcomes.items())]
        + [["longest request (wall)", f"{max(seconds, default=0):.1f} s"]],
    )
    print_table(
        "Server memory (resident, process tree)",
        ["", "GiB"],
        [
            ["at the start", f"{start_rss / gib:.2f}"],
            ["peak, ordinary users alone", f"{alone_peak / gib:.2f}"],
            ["peak over the whole run", f"{memory.peak / gib:.2f}"],
        ],
    )
    print_table("Decoding CPU per worst request (this process)", ["", "CPU", "first result"], cpu_rows)


if __name__ == "__main__":
    raise SystemExit(main())
