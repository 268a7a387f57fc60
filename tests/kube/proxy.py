"""A loopback fault proxy in front of the real kube-apiserver.

Clients get a kubeconfig that points here (plain HTTP on 127.0.0.1); every request is
forwarded, with the client's own credentials, to the real server over TLS. The fault
knobs are the ones every fake here has (`fakes.base.Faults`), all counted in requests;
what the real server answers is never made up, except where a knob says so.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from fakes.base import FakeServer, Request, Response

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host", "date", "server"}


def query_string(request: Request) -> str:
    return urlencode([(k, v) for k, vs in request.query.items() for v in vs])


@dataclass
class _FailRule:
    status: int
    left: int
    path_regex: str | None
    method: str | None
    query_regex: str | None = None
    body: dict | Callable[[Request], dict] | None = None

    def matches(self, request: Request) -> bool:
        return (self.method is None or self.method == request.method) and (
            self.path_regex is None or re.search(self.path_regex, request.path) is not None) and (
            self.query_regex is None or re.search(self.query_regex, query_string(request)) is not None)


def status_body(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


# The API server's message when etcd compacted past a list's continue token (k8s.io/apiserver
# pkg/storage/etcd3/errors.go, v0.33.13), with a token to go on inconsistently at the latest version.
INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of the "
    "results. Continuing with the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show up in the list.")


def expired_continue_status(request: Request) -> dict:
    """The 410 a list with an expired `continue` gets: reason Expired, and a continue token at rv -1."""
    token = request.arg("continue") or ""
    decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    decoded["rv"] = -1
    body = status_body(410, "Expired", INCONSISTENT_CONTINUE)
    body["metadata"] = {"continue": base64.urlsafe_b64encode(json.dumps(decoded, separators=(",", ":")).encode())
                        .decode().rstrip("=")}
    return body


REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
           410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
           503: "ServiceUnavailable", 504: "Timeout"}


class FaultProxy(FakeServer):
    def __init__(self, upstream_port: int, ca: str) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.ssl = ssl.create_default_context(cafile=ca)
        self._local = threading.local()
        self._fail_rules: list[_FailRule] = []
        # Called with the request before it is forwarded (e.g. a racing writer); may return a Response.
        self.before_forward: list[Callable[[Request], Response | None]] = []

    def fail_next(self, status: int = 500, n: int = 1, path_regex: str | None = None, method: str | None = None,
                  query_regex: str | None = None, body: dict | Callable[[Request], dict] | None = None) -> None:
        """The next `n` matching requests get a `Status` failure with that code, without reaching
        the server (429/503 carry Retry-After: 1, as API Priority and Fairness answers).
        `query_regex` also matches the urlencoded query (e.g. `(^|&)continue=`); `body` (a
        Status, or a function of the request giving one) replaces the generic Status."""
        with self.lock:
            self._fail_rules.append(_FailRule(status, n, path_regex, method.upper() if method else None,
                                              query_regex, body))

    def _injected_fault(self, path: str) -> Response | str | None:
        """The shared knobs; a 429 is the API server's own (API Priority and Fairness) Status."""
        injected = super()._injected_fault(path)
        if isinstance(injected, Response) and injected.status == 429:
            retry = injected.headers.get("Retry-After", "1")
            body = status_body(429, "TooManyRequests", "Too many requests, please try again later.")
            body["details"] = {"retryAfterSeconds": int(retry)}
            injected = Response(429, body, headers={"Retry-After": retry})
        return injected

    def clear_faults(self) -> None:
        super().clear_faults()
        with self.lock:
            self._fail_rules.clear()
            self.before_forward.clear()

    def dispatch(self, request: Request) -> tuple[Response, str]:
        with self.lock:
            rule = next((r for r in self._fail_rules if r.left > 0 and r.matches(request)), None)
            if rule:
                rule.left -= 1
        if rule:
            headers = {"Retry-After": "1"} if rule.status in (429, 503) else {}
            if rule.body is None:
                body = status_body(rule.status, REASONS.get(rule.status, "InternalError"), f"injected fault {rule.status}")
            else:
                body = rule.body(request) if callable(rule.body) else rule.body
            return Response(rule.status, body, headers=headers), "fault"
        for hook in list(self.before_forward):
            answer = hook(request)
            if answer is not None:
                return answer, "hook"
        return self._forward(request), "forwarded"

    def _connection(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.upstream_port, context=self.ssl, timeout=60)
            self._local.conn = conn
        return conn

    def _forward(self, request: Request) -> Response:
        target = request.path
        if request.query:
            target += "?" + query_string(request)
        headers = {k: v for k, v in request.headers.items() if k not in HOP_BY_HOP}
        for attempt in (1, 2):  # a pooled connection the server closed is reopened once
            conn = self._connection()
            try:
                conn.request(request.method, target, body=request.body or None, headers=headers)
                upstream = conn.getresponse()
                payload = upstream.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        out = {k: v for k, v in upstream.getheaders() if k.lower() not in HOP_BY_HOP and k.lower() != "content-type"}
        ctype = upstream.getheader("Content-Type") or ""
        body: object = payload
        if ctype.startswith("application/json") and payload:
            body = json.loads(payload)  # so the request log reads like every fake's
        return Response(upstream.status, body, headers=out, content_type=ctype or None)
