"""Fair sharing, through gradio_client against a real server on loopback: one client's requests in
flight and rate are limited, each endpoint's queue has its size, an upload request its bytes, and a
file given as a URL is refused before Gradio would fetch it."""

from __future__ import annotations

import socket
import threading
import time

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.utils import QueueError, Status

from cifake_models import fair
from cifake_models.fair import Bucket, FairLimits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(monkeypatch):
    """A Gradio app with a ``/hold`` endpoint that answers when the test says, behind FairShare
    with small limits; clients tell their address in X-Forwarded-For, as a Space's proxy does."""
    monkeypatch.setenv(fair.CLIENT_HEADER_ENV, "x-forwarded-for")
    release = threading.Event()
    calls = []

    def hold(image: gr.FileData | None = None) -> str:
        calls.append(image)
        release.wait(30)
        return "done"

    with gr.Blocks(analytics_enabled=False) as demo:
        gr.api(hold, api_name="hold", concurrency_limit=1)
    demo.queue(max_size=64)
    limits = FairLimits(in_flight=2, per_second=1000, burst=1000, queue_sizes={"hold": 3}, upload_request_bytes=1000)
    port = free_port()
    fair.launch(demo, limits=limits, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", release, calls
    finally:
        release.set()
        demo.close()


def client(url: str, address: str) -> Client:
    return Client(url, verbose=False, download_files=False, headers={"X-Forwarded-For": address})


def joined(job, timeout: float = 10):
    """``job`` once the server has queued it (or run it)."""
    deadline = time.monotonic() + timeout
    while job.status().code not in (Status.IN_QUEUE, Status.PROCESSING) and time.monotonic() < deadline:
        time.sleep(0.02)
    return job


def test_one_client_gets_only_its_share_of_requests_in_flight(server):
    url, release, _calls = server
    greedy, other = client(url, "10.0.0.1"), client(url, "10.0.0.2")
    jobs = [joined(greedy.submit(api_name="/hold")) for _ in range(2)]
    with pytest.raises(httpx.HTTPStatusError) as refused:
        greedy.submit(api_name="/hold").result(timeout=10)
    assert refused.value.response.status_code == 429
    assert "at most 2 at a time; try again in 1 s" in refused.value.response.json()["detail"]
    assert refused.value.response.headers["retry-after"] == "1"
    served = other.submit(api_name="/hold")  # another client is still let in
    release.set()
    assert [job.result(timeout=10) for job in [*jobs, served]] == ["done"] * 3


def test_each_endpoint_has_its_own_queue_size(server):
    url, release, _ = server
    jobs = [joined(client(url, f"10.0.1.{i}").submit(api_name="/hold")) for i in range(4)]  # one runs, three wait
    with pytest.raises(QueueError):
        client(url, "10.0.1.9").submit(api_name="/hold").result(timeout=10)
    release.set()
    assert [job.result(timeout=10) for job in jobs] == ["done"] * 4


def test_a_file_given_as_a_url_is_refused_not_fetched(server):
    url, _, calls = server
    with pytest.raises(httpx.HTTPStatusError) as refused:
        client(url, "10.0.2.1").predict(
            {"path": "https://example.com/a.png", "meta": {"_type": "gradio.FileData"}}, api_name="/hold"
        )
    assert refused.value.response.status_code == 400 and "URLs are not fetched" in refused.value.response.text
    assert calls == []


def test_an_upload_request_over_its_byte_limit_is_refused(server, tmp_path):
    url, _release, calls = server
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 2000)
    with pytest.raises(httpx.HTTPStatusError) as refused:
        client(url, "10.0.3.1").predict(handle_file(str(big)), api_name="/hold")
    assert (
        refused.value.response.status_code == 413
        and "the limit is 0 MB per upload request" in refused.value.response.text
    )
    assert calls == []


def test_a_direct_run_past_the_queue_is_refused(server):
    url, _release, calls = server  # the fixture's queue leaves Gradio's direct runs open (api_open)
    for path in ("gradio_api/run/hold", "gradio_api/api/hold"):
        answer = httpx.post(url + path, json={"data": [None]}, headers={"X-Forwarded-For": "10.0.4.1"}, timeout=10)
        assert answer.status_code == 404 and "through the queue only" in answer.text
    assert calls == []


def test_an_mcp_request_is_held_to_the_upload_limits(server):
    url, _release, _calls = server
    body = (
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"image": "data:image/png;base64,' + b"A" * 2000
    )
    answer = httpx.post(
        url + "gradio_api/mcp/", content=body + b'"}}', headers={"X-Forwarded-For": "10.0.5.1"}, timeout=10
    )
    assert answer.status_code == 413 and "the limit is 0 MB per upload request" in answer.text


def test_an_mcp_tool_call_naming_a_url_is_refused_not_fetched(server):
    url, _release, calls = server
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    call["params"] = {"name": "predict", "arguments": {"image": " https://example.com/big.png"}}
    answer = httpx.post(url + "gradio_api/mcp/", json=call, headers={"X-Forwarded-For": "10.0.6.1"}, timeout=10)
    assert answer.status_code == 400 and "URLs are not fetched" in answer.text
    assert calls == []


def test_a_bucket_refills_at_its_rate_and_says_how_long_to_wait(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(fair.time, "monotonic", lambda: now[0])
    bucket = Bucket(rate=2.0, size=4)
    assert [bucket.take(1) for _ in range(4)] == [0.0] * 4
    assert bucket.take(1) == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take(1) == 0.0


def test_idle_clients_buckets_are_dropped_when_there_are_too_many(monkeypatch):
    monkeypatch.setattr(fair, "MAX_CLIENTS", 3)
    buckets = {}
    for key in "abc":
        fair.bucket_of(buckets, key, 0.001, 2).take(1)
    buckets["c"].tokens = 2  # full again: idle
    fair.bucket_of(buckets, "d", 0.001, 2)
    assert sorted(buckets) == ["a", "b", "d"]
