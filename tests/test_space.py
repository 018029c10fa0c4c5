"""The Space works from what it receives, nothing else: the deploy set, written into an empty folder, served by
``python app.py`` there, answers /predict from every detector and fills the Compare tab."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from cifake_models import deploy, get_spec, list_detectors

START_SECONDS = 300  # seven detectors loaded and exported to ONNX on two shared cores take about 30 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url + "config", timeout=5)
            return
        except OSError:
            time.sleep(1)
    pytest.fail(f"app.py did not answer within {START_SECONDS} s")


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """``python -S app.py`` in a folder holding only the deploy set. -S: no site-packages .pth files, so the
    editable install's import hook is never set up; PYTHONPATH gives the installed libraries and nothing else."""
    folder = deploy.space_set().write(tmp_path_factory.mktemp("space"))
    if missing := [p for p, source in deploy.space_set().files.items() if not source.is_file()]:
        pytest.skip(f"the checkout lacks files of the set: {missing}")
    port, log = free_port(), folder.parent / "app.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        "HOME": str(folder.parent),
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(folder.parent / "gradio"),
        "OMP_NUM_THREADS": "1",
        "PYTHONVERBOSE": "1",
    }
    with open(log, "w") as out:
        # PYTHONVERBOSE: the log names the file of every module imported, for the check below.
        process = subprocess.Popen([sys.executable, "-S", "app.py"], cwd=folder, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, process, log)
        yield {"url": url, "folder": folder, "log": log}
    finally:
        process.terminate()
        process.wait(30)


def test_the_app_imports_nothing_from_the_checkout(space):
    ours = set(re.findall(r"(/\S*?)/cifake_models/\S*\.py\b", space["log"].read_text()))
    assert ours == {str(space["folder"])}, f"modules of this project loaded from {ours - {str(space['folder'])}}"


def test_every_detector_answers_predict(space, tmp_path):
    from gradio_client import Client, handle_file

    example = next((space["folder"] / "assets" / "examples").iterdir())
    client = Client(space["url"], verbose=False, download_files=str(tmp_path))
    answer = client.predict(handle_file(str(example)), api_name="/predict")
    assert set(answer) == set(list_detectors())
    for name, mapping in answer.items():
        assert mapping["REAL"] + mapping["FAKE"] == pytest.approx(1, abs=1e-6), name
        assert mapping["verdict"] in ("REAL", "FAKE", "UNSURE", "OUT_OF_SCOPE")
        assert isinstance(mapping["in_scope"], bool), name  # the scope score came with the Space


def test_the_compare_tab_has_a_row_per_detector(space):
    config = json.load(urllib.request.urlopen(space["url"] + "config", timeout=30))
    tables = [c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "compare-table"]
    assert len(tables) == 1
    rows = tables[0]["data"]
    assert [row[0] for row in rows] == [get_spec(n).title for n in list_detectors()]
    assert all(len(row) > 1 and all(cell not in ("", None) for cell in row[1:2]) for row in rows)
