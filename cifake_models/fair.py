"""One client cannot crowd out the others: an ASGI middleware in front of a Gradio app that limits
each client's requests in flight and their rate, each endpoint's waiting queue and the bytes of an
upload request, and refuses a file given as a URL (Gradio would fetch it). Every limit is a field of
:class:`FairLimits`, and each refusal says which limit and when to try again."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field

from gradio_client.utils import is_http_url_like

CLIENT_HEADER_ENV = "CIFAKE_CLIENT_IP_HEADER"  # e.g. x-forwarded-for behind a Space's proxy


@dataclass(frozen=True)
class FairLimits:
    """What one client may do at once, and how much the server queues."""

    in_flight: int = 4  # a client's events queued or running
    per_second: float = 4.0  # events a client may start per second, on average...
    burst: int = 20  # ...and in a burst
    upload_bytes_per_second: float = 10 * 2**20  # upload bytes a client may send per second, on average...
    upload_request_bytes: int = 100 * 2**20  # ...and in one upload request (all its files), also its burst
    queue_sizes: dict[str, int] = field(
        default_factory=lambda: {"predict": 32, "predict_batch": 4}
    )  # waiting, by endpoint
    queue_size: int = 8  # waiting, for every other endpoint (the page's own events)
    event_body_bytes: int = 2**20  # the JSON of one event


class Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``size``; starts full."""

    def __init__(self, rate: float, size: float):
        self.rate, self.size, self.tokens, self.at = rate, size, size, time.monotonic()

    def take(self, n: float) -> float:
        """Take ``n`` tokens and return 0, or take none and return the seconds until they are there."""
        now = time.monotonic()
        self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= min(n, self.size):
            self.tokens -= n
            return 0.0
        return (min(n, self.size) - self.tokens) / self.rate


class Refused(Exception):
    """A request this middleware answers itself: ``status`` and the message for the client."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def client_of(scope: dict) -> str | None:
    """Who sent the request: the last address in the header :data:`CLIENT_HEADER_ENV` names (the
    one the nearest proxy added), else the connection's address; None where neither is known."""
    header = os.environ.get(CLIENT_HEADER_ENV, "").strip().lower().encode()
    if header:
        for name, value in scope.get("headers", []):
            if name == header and value.strip():
                return value.decode("latin-1").split(",")[-1].strip()
    client = scope.get("client")
    return client[0] if client else None


def seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


class FairShare:
    """The middleware: ``FastAPI(middleware=[Middleware(FairShare, blocks=demo)])``, which is what
    ``launch(app_kwargs=...)`` passes on."""

    def __init__(self, app, blocks, limits: FairLimits | None = None):
        self.app, self.blocks, self.limits = app, blocks, limits or FairLimits()
        self.events: dict[str, Bucket] = {}
        self.uploads: dict[str, Bucket] = {}
        self.joining: dict[str, int] = {}  # events let through whose queue entry may not exist yet
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/")
        try:
            if direct_run(path):
                raise Refused(
                    404, "this endpoint takes requests through the queue only: use gradio_client or /call/NAME"
                )
            if path.endswith("/gradio_api/upload"):
                self.admit_upload(scope)
            elif "/gradio_api/mcp" in path:  # an MCP call carries its image: held to the upload limits
                self.admit_upload(scope)
                body = await read_body(receive, self.limits.upload_request_bytes)
                refuse_mcp_urls(body)
                return await self.app(scope, replayed(body, receive), send)
            elif api := event_endpoint(path):
                body = await read_body(receive, self.limits.event_body_bytes)
                key = self.admit_event(scope, api, body)
                return await self.pass_event(scope, body, send, key)
        except Refused as refusal:
            return await refuse(send, refusal)
        return await self.app(scope, receive, send)

    async def pass_event(self, scope, body: bytes, send, key: str) -> None:
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            await self.app(scope, replay, send)
        finally:
            with self.lock:
                self.joining[key] -= 1
                if not self.joining[key]:
                    del self.joining[key]

    def admit_upload(self, scope) -> None:
        length = header(scope, b"content-length")
        if length is None or not length.isdigit():
            raise Refused(411, "an upload must state its Content-Length")
        limit = self.limits.upload_request_bytes
        if int(length) > limit:
            raise Refused(
                413,
                f"this upload is {int(length) / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB per "
                "upload request (all its files together)",
            )
        key = client_of(scope) or "unknown"
        with self.lock:
            bucket = bucket_of(self.uploads, key, self.limits.upload_bytes_per_second, limit)
            wait = bucket.take(int(length))
        if wait:
            raise Refused(
                429,
                f"too many uploads from your address (at most {self.limits.upload_bytes_per_second / 2**20:.0f} MB "
                f"a second): try again in {seconds(wait)} s",
                wait,
            )

    def admit_event(self, scope, api: str, body: bytes) -> str:
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            raise Refused(400, "the request is not JSON") from None
        if not isinstance(request, dict):
            raise Refused(400, "the request is not a JSON object")
        if has_url_file(request.get("data")):
            raise Refused(
                400, "files given as URLs are not fetched: send each image as a file (gradio_client.handle_file(path))"
            )
        fn = self.function(api, request)
        key = client_of(scope) or f"session {request.get('session_hash')}"
        with self.lock:
            mine = self.joining.get(key, 0) + self.queued(lambda event: event_client(event) == key)
            if mine >= self.limits.in_flight:
                raise Refused(
                    429,
                    f"too many requests from your address: at most {self.limits.in_flight} at a time; "
                    "try again in 1 s, when one has finished",
                    1,
                )
            if fn is not None:
                size = self.limits.queue_sizes.get(fn.api_name, self.limits.queue_size)
                waiting = self.waiting(fn)
                if waiting >= size:
                    raise Refused(
                        503,
                        f"the queue of /{fn.api_name} is full ({waiting} waiting, the most it holds): try again in 2 s",
                        2,
                    )
            bucket = bucket_of(self.events, key, self.limits.per_second, self.limits.burst)
            wait = bucket.take(1)
            if wait:
                raise Refused(
                    429,
                    f"too many requests from your address (at most {self.limits.per_second:g} a second): "
                    f"try again in {seconds(wait)} s",
                    wait,
                )
            self.joining[key] = self.joining.get(key, 0) + 1
        return key

    def function(self, api: str, request: dict):
        """The Gradio function an event calls: by ``fn_index`` for a queue join, else by API name."""
        if api == "queue/join":
            index = request.get("fn_index")
            return self.blocks.fns.get(index) if isinstance(index, int) else None
        return next((fn for fn in self.blocks.fns.values() if fn.api_name == api), None)

    def queued(self, mine) -> int:
        queue = getattr(self.blocks, "_queue", None)
        return sum(1 for event in list(queue.event_ids_to_events.values()) if mine(event)) if queue else 0

    def waiting(self, fn) -> int:
        queue = getattr(self.blocks, "_queue", None)
        events = queue.event_queue_per_concurrency_id.get(fn.concurrency_id) if queue else None
        return sum(1 for event in list(events.queue) if event.fn is fn) if events else 0


MAX_CLIENTS = 10_000  # buckets kept; beyond it, those of clients idle long enough to be full again go


def bucket_of(buckets: dict[str, Bucket], key: str, rate: float, size: float) -> Bucket:
    if key not in buckets and len(buckets) >= MAX_CLIENTS:
        now = time.monotonic()
        for idle in [k for k, b in buckets.items() if b.tokens + (now - b.at) * b.rate >= b.size]:
            del buckets[idle]
    return buckets.setdefault(key, Bucket(rate, size))


def event_client(event) -> str | None:
    request = getattr(event, "request", None)
    scope = getattr(request, "scope", None)
    return (client_of(scope) if scope else None) or f"session {event.session_hash}"


def event_endpoint(path: str) -> str | None:
    """``queue/join``, or the API name of a ``/call/NAME`` request; None for other paths."""
    if path.endswith("/gradio_api/queue/join"):
        return "queue/join"
    for prefix in ("/gradio_api/call/v2/", "/gradio_api/call/"):
        if prefix in path:
            rest = path.split(prefix, 1)[1]
            return rest if rest and "/" not in rest else None
    return None


def direct_run(path: str) -> bool:
    """Whether ``path`` runs a function without the queue (Gradio's ``/run/NAME`` and ``/api/NAME``),
    and so past every limit here: refused, whatever the app's ``api_open``."""
    return any(prefix in path for prefix in ("/gradio_api/run/", "/gradio_api/api/"))


def replayed(body: bytes, receive):
    """A ``receive`` that gives ``body`` (already read) first, then whatever the client sends next
    (its disconnect, which a streamed answer listens for)."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def refuse_mcp_urls(body: bytes) -> None:
    """An MCP tool call whose arguments name a URL is refused: Gradio would fetch it, unbounded."""
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return  # not JSON: the MCP server answers that itself
    for message in request if isinstance(request, list) else [request]:
        if isinstance(message, dict) and message.get("method") == "tools/call" and has_url(message.get("params")):
            raise Refused(400, "images given as URLs are not fetched: send each image as a data: URI")


def has_url(data) -> bool:
    """Whether any string in ``data`` (nested dicts and lists) is an http(s) URL."""
    if isinstance(data, str):
        return is_http_url_like(data.strip())
    values = data.values() if isinstance(data, dict) else data if isinstance(data, list) else []
    return any(has_url(v) for v in values)


def has_url_file(data) -> bool:
    """Whether a file in ``data`` (any dict with a ``path``) names a URL."""
    if isinstance(data, dict):
        path = data.get("path")
        return (isinstance(path, str) and is_http_url_like(path.strip())) or any(has_url_file(v) for v in data.values())
    if isinstance(data, list):
        return any(has_url_file(v) for v in data)
    return False


def header(scope, name: bytes) -> str | None:
    return next((value.decode("latin-1") for key, value in scope.get("headers", []) if key == name), None)


async def read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the request is larger than {limit // 2**10} KB; send images as files")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def refuse(send, refusal: Refused) -> None:
    headers = [(b"content-type", b"application/json")]
    if refusal.retry_after:
        headers.append((b"retry-after", str(seconds(refusal.retry_after)).encode()))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps({"detail": refusal.message}).encode()})


def launch(demo, limits: FairLimits | None = None, **options):
    """``demo.launch(**options)`` behind :class:`FairShare`."""
    from starlette.middleware import Middleware

    app_kwargs = {**options.pop("app_kwargs", {})}
    app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(FairShare, blocks=demo, limits=limits)]
    return demo.launch(app_kwargs=app_kwargs, **options)
