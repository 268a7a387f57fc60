"""A threaded loopback HTTP server with fault knobs and a request log.

The coderd and Kubernetes fakes are routes on top of this. Everything a test
wants to count or break lives here, so both fakes break the same way.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list -> JSON; bytes/str -> as is; None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None

    def encoded(self) -> tuple[bytes, str | None]:
        if self.body is None:
            return b"", self.content_type
        if isinstance(self.body, bytes):
            return self.body, self.content_type or "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), self.content_type or "application/json"


@dataclass
class Record:
    """One request as the fake saw it, and what it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int
    response: Any
    route: str  # the route pattern that matched, e.g. "GET /api/v2/users/first"
    time: float

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass
class Faults:
    """Failure knobs. All of them are off by default."""

    unavailable_until: float = 0.0  # time.monotonic() deadline
    unavailable_mode: str = "refuse"  # "refuse" (closed port) or "503"
    error_rate: float = 0.0  # fraction of requests answered 5xx
    error_statuses: tuple[int, ...] = (500, 502, 503, 504)
    latency: float = 0.0  # seconds added before every answer
    rate_limited: int = 0  # the next N requests get 429
    retry_after: int = 1
    reset_next: int = 0  # the next N requests get their connection dropped
    refuse_next: int = 0  # the next N connections are dropped at accept, before a byte is read
    unavailable_next: int = 0  # then the next N requests get 503
    only_paths: str | None = None  # regex: faults apply only to matching paths
    rng: random.Random = field(default_factory=lambda: random.Random(0))


Handler = Callable[[Request], Response]

# Called with (fake, record) for every request any fake answers: the test suite uses it to
# check every exchange against Coder's OpenAPI spec, even ones a test later clears.
RECORD_HOOKS: list[Callable[[FakeServer, Record], None]] = []


class FakeServer:
    """Subclasses register routes with `self.route(method, pattern, fn)`.

    Patterns use `{name}` placeholders for one path segment.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], str, Handler]] = []
        self.log: list[Record] = []
        self.faults = Faults()
        self.lock = threading.RLock()  # guards the fake's state and log
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._reopen_timer: threading.Timer | None = None
        self._closed = False

    # -- routing -----------------------------------------------------------
    def route(self, method: str, pattern: str, fn: Handler) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method, re.compile(regex), f"{method} {pattern}", fn))

    def not_found(self, request: Request) -> Response:
        return Response(404, {"message": "Route not found."})

    def default_headers(self) -> dict[str, str]:
        return {}

    clock_offset: float = 0.0  # seconds; shifts the fake's clock (and its Date header)

    def now(self) -> float:
        return time.time() + self.clock_offset

    # -- lifecycle ---------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FakeServer:
        self._listen()
        return self

    def stop(self) -> None:
        self._closed = True
        if self._reopen_timer:
            self._reopen_timer.cancel()
        self._close_listener()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        fake = self

        class _Handler(_RequestHandler):
            server_fake = fake

        httpd = _Server(("127.0.0.1", self._port), _Handler)
        httpd.fake = self
        httpd.daemon_threads = True
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="fake-http")
        self._thread.start()

    def _close_listener(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    # -- fault knobs -------------------------------------------------------
    def unavailable_for(self, seconds: float, mode: str = "refuse") -> None:
        """Connection refused (port closed) or 503 for the next `seconds`."""
        with self.lock:
            self.faults.unavailable_until = time.monotonic() + seconds
            self.faults.unavailable_mode = mode
        if mode == "refuse":
            self._close_listener()

            def reopen() -> None:
                if not self._closed:
                    self._listen()

            self._reopen_timer = threading.Timer(seconds, reopen)
            self._reopen_timer.daemon = True
            self._reopen_timer.start()

    def down_for_requests(self, refuse: int = 0, unavailable: int = 0) -> None:
        """An outage counted in requests, not seconds, so a slow machine cannot miss it:
        the next `refuse` connections are dropped at accept (to the client, a server that is
        not there), then the next `unavailable` requests get 503."""
        with self.lock:
            self.faults.refuse_next = refuse
            self.faults.unavailable_next = unavailable

    def random_errors(self, rate: float, seed: int = 0, statuses: tuple[int, ...] = (500, 502, 503, 504)) -> None:
        with self.lock:
            self.faults.error_rate = rate
            self.faults.rng = random.Random(seed)
            self.faults.error_statuses = statuses

    def clear_faults(self) -> None:
        with self.lock:
            self.faults = Faults()

    # -- request log -------------------------------------------------------
    def writes(self, path_regex: str | None = None) -> list[Record]:
        with self.lock:
            return [r for r in self.log if r.is_write and (path_regex is None or re.search(path_regex, r.path))]

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[Record]:
        with self.lock:
            return [
                r
                for r in self.log
                if (method is None or r.method == method) and (path_regex is None or re.search(path_regex, r.path))
            ]

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    # -- dispatch ----------------------------------------------------------
    def _injected_fault(self, path: str) -> Response | str | None:
        f = self.faults
        with self.lock:
            if f.only_paths and not re.search(f.only_paths, path):
                return None
            if f.unavailable_until and time.monotonic() < f.unavailable_until and f.unavailable_mode == "503":
                return Response(503, "upstream connect error", content_type="text/plain")
            if f.unavailable_next > 0:
                f.unavailable_next -= 1
                return Response(503, "upstream connect error", content_type="text/plain")
            if f.reset_next > 0:
                f.reset_next -= 1
                return "reset"
            if f.rate_limited > 0:
                f.rate_limited -= 1
                return Response(
                    429,
                    {"message": "You've been rate limited for sending more than 512 requests in 1m0s."},
                    headers={"Retry-After": str(f.retry_after)},
                )
            if f.error_rate and f.rng.random() < f.error_rate:
                status = f.rng.choice(f.error_statuses)
                return Response(status, f"injected fault {status}", content_type="text/plain")
        return None

    def dispatch(self, request: Request) -> tuple[Response, str]:
        for method, regex, name, fn in self._routes:
            if method != request.method:
                continue
            m = regex.match(request.path)
            if m:
                request.params = m.groupdict()
                return fn(request), name
        return self.not_found(request), "unmatched"


class _Server(ThreadingHTTPServer):
    fake: FakeServer

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.fake.lock:
            if self.fake.faults.refuse_next <= 0:
                return True
            self.fake.faults.refuse_next -= 1
        # RST at once (linger 0), as close as user space gets to a closed port.
        request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False


class _RequestHandler(BaseHTTPRequestHandler):
    server_fake: FakeServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every keep-alive request waits ~40 ms for a delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header follows the fake's clock, so tests can skew it.
        return super().date_time_string(self.server_fake.now() if timestamp is None else timestamp)

    def _handle(self) -> None:
        fake = self.server_fake
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        if fake.faults.latency:
            time.sleep(fake.faults.latency)
        injected = fake._injected_fault(split.path)
        if injected == "reset":
            # Drop the connection without an answer, as a crashing pod would.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        route = "fault"
        if isinstance(injected, Response):
            response = injected
        else:
            try:
                response, route = fake.dispatch(request)
            except Exception as exc:  # a bug in the fake must be loud, not a hang
                response = Response(500, {"message": "fake crashed", "detail": repr(exc)})
        payload, ctype = response.encoded()
        with fake.lock:
            record = Record(
                method=request.method,
                path=request.path,
                query=request.query,
                headers=request.headers,
                body=body,
                status=response.status,
                response=response.body,
                route=route,
                time=time.time(),
            )
            fake.log.append(record)
        for hook in RECORD_HOOKS:
            hook(fake, record)
        self.send_response(response.status)
        headers = {**fake.default_headers(), **response.headers}
        for k, v in headers.items():
            self.send_header(k, v)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle
