"""The one Kubernetes helper module: a dedicated ApiClient, the namespace, and small typed calls.

The official `kubernetes` client gives us configuration (in-cluster or kubeconfig, token refresh)
and transport (`ApiClient.call_api`: TLS, auth headers, urllib3's pool and retries). The calls
themselves are plain paths with JSON bodies, parsed here into small typed values: the client's
typed `CoreV1Api`/`AppsV1Api` classes build a pydantic validator for each of their methods at
import, which tripled a job's start-up CPU (benchmarks/KUBE_CLIENT.md).

Error policy, shared by every helper:
* a non-2xx answer becomes a `KubeAPIError` (a `JobError`, exit 1) carrying the HTTP status, the
  Status `reason` and the Status `message` from the response. Never the request body (it may hold
  Secret data), never the raw response body or headers;
* safe reads (GET/list) are retried a few times on connection errors and 5xx, with backoff
  (jobs.retry); writes are never retried here, except after a 429 (below). urllib3 itself (the
  client's default `Retry(3)`) still repeats GET/PUT/DELETE on 429/503 carrying Retry-After and
  re-tries failed connects: both are safe;
* a 409 on a write is a `KubeConflict`: the caller re-reads and re-plans (optimistic concurrency);
* reads answer None on 404; the deletes answer False on 404.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import config as kconfig
from kubernetes.client.api_client import ApiClient as ApiClient  # the client a caller holds and closes
from kubernetes.client.configuration import Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.utils import parse_quantity

from jobs import retry
from jobs.errors import ConfigError, JobError
from jobs.log import get_logger

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
COMPONENT = "coder-jobs"
REQUEST_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds for one request; the client has none by default
READ_ATTEMPTS = 4  # for a read, and for waiting out 429s on any request
READ_BACKOFF_S = 0.5  # 0.5, 1, 2 s (+ jitter) between read attempts

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
# Lists ask for metadata only: the reaper decides on names and labels and must never hold the
# tokens its Secrets carry. An API server that ignored the `as=` parameter would send the full
# list; only `metadata` is read from either.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"



# ---------------------------------------------------------------------------- errors


class KubeAPIError(JobError):
    """A Kubernetes API call failed. `status` is None when the API server could not be reached."""

    def __init__(self, what: str, status: int | None, reason: str = "", message: str = "",
                 retry_after: float | None = None) -> None:
        self.what = what
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after  # seconds the API server asked us to wait (429)
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.status is None:
            return f"{self.what}: {self.message or 'the Kubernetes API did not answer'}"
        text = f"{self.what}: HTTP {self.status}"
        if self.reason:
            text += f" {self.reason}"
        if self.message:
            text += f": {self.message}"
        return text

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500


class KubeConflict(KubeAPIError):
    """409: AlreadyExists on create, Conflict (stale resourceVersion) on update. Re-read and re-plan."""


class KubeNotFound(KubeAPIError):
    """404 on a write (the object went away between our read and our write)."""


def api_error(what: str, status: int | None, reason: str | None, body: bytes | str | None) -> KubeAPIError:
    """The error for an answer that was not 2xx: the Status object's reason and message, when the
    body is one, else the HTTP reason phrase."""
    status = status or None  # 0: TLS/connection trouble inside the client
    status_reason, message = "", ""
    try:
        parsed = json.loads(body) if body else None
    except (TypeError, ValueError):
        parsed = None
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        status_reason = str(parsed.get("reason") or "")
        message = str(parsed.get("message") or "")
    reason = status_reason or str(reason or "")
    if status is None:
        return KubeAPIError(what, None, "", f"cannot reach the Kubernetes API ({reason or 'no response'})")
    cls = KubeConflict if status == 409 else KubeNotFound if status == 404 else KubeAPIError
    return cls(what, status, reason, message)


def from_api_exception(exc: ApiException, what: str) -> KubeAPIError:
    """What the client itself raises (a TLS failure is status 0) as our error."""
    return api_error(what, int(exc.status) if exc.status else None, exc.reason, exc.body)


def _retry_after_s(headers: Mapping[str, str] | None) -> float:
    try:
        return min(60.0, max(0.05, float((headers or {}).get("Retry-After") or 1)))
    except (TypeError, ValueError):
        return 1.0


def _request(api: ApiClient, what: str, method: str, path: str, *, query: Mapping[str, str | int] | None = None,
             body: Any = None, content_type: str = JSON, accept: str = JSON, safe_read: bool = False) -> dict[str, Any]:
    """One API call, its JSON answer parsed, with our error conversion; safe reads are retried on
    connection errors and 5xx. A 429 is waited out (Retry-After) for any verb: API Priority and
    Fairness rejects the request before handling it, and urllib3 only repeats GET/PUT/DELETE, so a
    throttled create or patch would otherwise fail the job."""
    headers = {"Accept": accept}
    if body is not None:
        headers["Content-Type"] = content_type

    def once() -> dict[str, Any]:
        try:
            request = api.param_serialize(method, path, query_params=list((query or {}).items()),
                                          header_params=dict(headers), body=body, auth_settings=["BearerToken"])
            response = api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
            data = response.read()
        except ApiException as exc:
            raise from_api_exception(exc, what) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # MaxRetryError names host, port and path; nothing secret. Keep it short.
            raise KubeAPIError(what, None, "",
                               f"cannot reach the Kubernetes API: {type(exc).__name__}: {str(exc)[:300]}") from None
        if not 200 <= response.status <= 299:
            err = api_error(what, response.status, response.reason, data)
            if err.status == 429:
                err.retry_after = _retry_after_s(response.headers)
            raise err
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            raise KubeAPIError(what, response.status, "", "the answer was not JSON") from None
        return answer if isinstance(answer, dict) else {}

    def worth_repeating(err: BaseException) -> bool:
        return isinstance(err, KubeAPIError) and (err.status == 429 or (safe_read and err.retryable))

    def log_retry(err: BaseException, attempt: int, wait: float) -> None:
        if isinstance(err, KubeAPIError) and err.status == 429:
            get_logger().warning("Kubernetes API is throttling; waiting as asked", what=what, retry_in_s=wait)
        else:
            get_logger().warning("Kubernetes read failed; retrying", what=what, status=getattr(err, "status", None),
                                 attempt=attempt, retry_in_s=round(wait, 2))

    return retry.call(once, retry=worth_repeating, attempts=READ_ATTEMPTS, initial=READ_BACKOFF_S,
                      maximum=READ_BACKOFF_S * 2 ** READ_ATTEMPTS, jitter=READ_BACKOFF_S / 4, on_retry=log_retry)


def _read(api: ApiClient, what: str, path: str) -> dict[str, Any] | None:
    try:
        return _request(api, what, "GET", path, safe_read=True)
    except KubeNotFound:
        return None


def _path(group_version: str, ns: str, plural: str, name: str | None = None) -> str:
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{prefix}/namespaces/{quote(ns, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


# ---------------------------------------------------------------------------- client and namespace


def _kubeconfig_path() -> str:
    return os.environ.get("KUBECONFIG") or "~/.kube/config"


def api_client() -> ApiClient:
    """A dedicated ApiClient (close it when done). In-cluster config when KUBERNETES_SERVICE_HOST is set,
    else KUBECONFIG / ~/.kube/config. The client's global default configuration is never touched."""
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            cfg = Configuration()
            kconfig.load_incluster_config(client_configuration=cfg)
            return ApiClient(cfg)
        client: ApiClient = kconfig.new_client_from_config(config_file=_kubeconfig_path(),
                                                           client_configuration=Configuration())
        return client
    except (ConfigException, OSError, ValueError, TypeError, AttributeError) as exc:
        where = ("the in-cluster service account (KUBERNETES_SERVICE_HOST is set)" if os.environ.get("KUBERNETES_SERVICE_HOST")
                 else f"KUBECONFIG ({_kubeconfig_path()})")
        raise ConfigError(f"no usable Kubernetes configuration from {where}: {type(exc).__name__}: {str(exc)[:300]}") from None


def current_namespace(explicit: str | None = None) -> str:
    """The explicit value (POD_NAMESPACE), else the service account's namespace file, else the
    kubeconfig context's namespace."""
    if explicit:
        return explicit
    try:
        ns = SA_NAMESPACE_FILE.read_text().strip()
        if ns:
            return ns
    except OSError:
        pass
    try:
        _contexts, active = kconfig.list_kube_config_contexts(config_file=_kubeconfig_path())
        context_ns = ((active or {}).get("context") or {}).get("namespace")
        if context_ns:
            return str(context_ns)
    except Exception:  # no kubeconfig, bad YAML: we only wanted a hint
        pass
    raise ConfigError("cannot tell which namespace to use", [
        f"POD_NAMESPACE: not set, no service account namespace file ({SA_NAMESPACE_FILE}), "
        "and the kubeconfig context names no namespace"])


# ---------------------------------------------------------------------------- typed values


@dataclass(frozen=True)
class ObjectMetadata:
    name: str
    uid: str | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""
    namespace: str = ""

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> ObjectMetadata:
        """From an object (or a PartialObjectMetadata) as the API server sent it."""
        meta = obj.get("metadata") or {}
        return cls(str(meta.get("name") or ""), meta.get("uid"), dict(meta.get("labels") or {}),
                   dict(meta.get("annotations") or {}), str(meta.get("resourceVersion") or ""),
                   str(meta.get("namespace") or ""))


@dataclass(frozen=True)
class Secret:
    """A Secret as read. `body` is the whole object, so that a replace keeps what we do not own
    (type, ownerReferences, finalizers) and carries the resourceVersion and uid it was read with."""

    metadata: ObjectMetadata
    data: Mapping[str, bytes] = field(repr=False)  # base64-decoded
    body: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Secret:
        data = {k: base64.b64decode(v or "") for k, v in (obj.get("data") or {}).items()}
        return cls(ObjectMetadata.parse(obj), data, obj)


@dataclass(frozen=True)
class Deployment:
    metadata: ObjectMetadata
    pod_template_annotations: Mapping[str, str]

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Deployment:
        template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
        return cls(ObjectMetadata.parse(obj), dict(template.get("annotations") or {}))


@dataclass(frozen=True)
class ResourceQuota:
    namespace: str
    name: str
    hard: Mapping[str, str]  # status.hard: what the API server enforces
    used: Mapping[str, str]

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> ResourceQuota:
        meta, status = ObjectMetadata.parse(obj), obj.get("status") or {}
        return cls(meta.namespace, meta.name, dict(status.get("hard") or {}), dict(status.get("used") or {}))


# ---------------------------------------------------------------------------- secrets


def read_secret(api: ApiClient, ns: str, name: str) -> Secret | None:
    found = _read(api, f"read Secret {ns}/{name}", _path("v1", ns, "secrets", name))
    return Secret.parse(found) if found is not None else None


def new_secret(ns: str, name: str, data: Mapping[str, str], labels: Mapping[str, str],
               annotations: Mapping[str, str]) -> dict[str, Any]:
    """An Opaque Secret to create; `data` values already base64-encoded."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": dict(data),
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels), "annotations": dict(annotations)}}


def with_content(secret: Secret, *, data: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`secret` as it was read, with new data (base64), labels or annotations: its ownerReferences,
    finalizers and type survive, and its resourceVersion makes the replace conditional."""
    body = dict(secret.body)
    meta = dict(body.get("metadata") or {})
    if data is not None:
        body["data"] = dict(data)
        body.pop("stringData", None)
    if labels is not None:
        meta["labels"] = dict(labels)
    if annotations is not None:
        meta["annotations"] = dict(annotations)
    body["metadata"] = meta
    return body


def create_secret(api: ApiClient, ns: str, body: Mapping[str, Any]) -> Secret:
    """POST. A 409 (AlreadyExists: someone created it first) raises KubeConflict."""
    name = ObjectMetadata.parse(body).name
    return Secret.parse(_request(api, f"create Secret {ns}/{name}", "POST", _path("v1", ns, "secrets"), body=body))


def replace_secret(api: ApiClient, ns: str, body: Mapping[str, Any]) -> Secret:
    """PUT with metadata.resourceVersion (required: an update without it would be unconditional).
    Stale resourceVersion -> KubeConflict. Deleted meanwhile -> KubeConflict too when the body
    carries the uid it was read with (the API server checks it as a precondition), else KubeNotFound."""
    meta = ObjectMetadata.parse(body)
    if not meta.resource_version:
        raise ValueError("replace_secret needs metadata.resourceVersion (optimistic concurrency)")
    return Secret.parse(_request(api, f"update Secret {ns}/{meta.name}", "PUT", _path("v1", ns, "secrets", meta.name),
                                 body=body))


# ---------------------------------------------------------------------------- deployments


def read_deployment(api: ApiClient, ns: str, name: str) -> Deployment | None:
    found = _read(api, f"read Deployment {ns}/{name}", _path("apps/v1", ns, "deployments", name))
    return Deployment.parse(found) if found is not None else None


def patch_pod_template_annotations(api: ApiClient, ns: str, name: str,
                                   annotations: Mapping[str, str | None]) -> Deployment:
    """JSON merge patch of spec.template.metadata.annotations (None removes a key): changing
    the pod template rolls the Deployment."""
    body = {"spec": {"template": {"metadata": {"annotations": dict(annotations)}}}}
    return Deployment.parse(_request(api, f"patch Deployment {ns}/{name}", "PATCH",
                                     _path("apps/v1", ns, "deployments", name), body=body, content_type=MERGE_PATCH))


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    api_version: str
    namespace: str
    name: str
    uid: str | None = None
    resource_version: str | None = None

    @classmethod
    def of(cls, meta: ObjectMetadata, kind: str, api_version: str) -> ObjectRef:
        return cls(kind, api_version, meta.namespace, meta.name, meta.uid, meta.resource_version or None)


def _rfc3339(t: datetime, micro: bool = False) -> str:
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def record_event(api: ApiClient, involved: ObjectRef, reason: str, message: str, *,
                 type: str = "Normal", action: str | None = None) -> None:
    """Create a core/v1 Event about `involved`. The message must never hold a secret value.

    When eventTime is set the apiserver also requires reportingController, reportingInstance and
    action (legacy core/v1 validation), so all of them are sent. eventTime is a MicroTime, which
    the apiserver parses with exactly six fractional digits."""
    now = datetime.now(UTC)
    instance = (os.environ.get("HOSTNAME") or socket.gethostname() or COMPONENT)[:128]
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{involved.name}.{time.time_ns():x}", "namespace": involved.namespace},
        "involvedObject": {k: v for k, v in {
            "apiVersion": involved.api_version, "kind": involved.kind, "namespace": involved.namespace,
            "name": involved.name, "uid": involved.uid, "resourceVersion": involved.resource_version}.items() if v},
        "reason": reason,
        "message": message[:1024],
        "type": type,
        "source": {"component": COMPONENT},
        "firstTimestamp": _rfc3339(now),
        "lastTimestamp": _rfc3339(now),
        "eventTime": _rfc3339(now, micro=True),
        "count": 1,
        "reportingComponent": COMPONENT,  # core/v1 spelling of events.k8s.io's reportingController
        "reportingInstance": instance,
        "action": action or reason,
    }
    _request(api, f"create Event for {involved.kind} {involved.namespace}/{involved.name}", "POST",
             _path("v1", involved.namespace, "events"), body=body)


# ---------------------------------------------------------------------------- listing (the reaper)


LIST_RESTARTS = 3


def _list_metadata(api: ApiClient, what: str, group_version: str, plural: str, ns: str, label_selector: str,
                   page_size: int) -> Iterator[ObjectMetadata]:
    """The metadata of every object matching the selector, a page at a time (limit/continue),
    never the rest of the object. A continue token can expire between pages (410 Expired, once
    etcd has compacted past it); the API's answer to that is to list again from the start, so we
    do, and skip what was already yielded."""
    description = f"list {what} in {ns} ({label_selector})"
    path = _path(group_version, ns, plural)
    yielded: set[str] = set()
    sent_token = False  # a 410 on the first page is not an expired token: never listed again

    def listing() -> Iterator[ObjectMetadata]:
        nonlocal sent_token
        token: str | None = None
        while True:
            query: dict[str, str | int] = {"labelSelector": label_selector, "limit": page_size}
            if token:
                query["continue"] = token
            sent_token = bool(token)
            page = _request(api, description, "GET", path, query=query, accept=METADATA_ONLY, safe_read=True)
            for item in page.get("items") or []:
                meta = ObjectMetadata.parse(item)
                if meta.uid not in yielded:
                    if meta.uid:
                        yielded.add(meta.uid)
                    yield meta
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return

    def expired(err: BaseException) -> bool:
        return isinstance(err, KubeAPIError) and err.status == 410 and sent_token

    def log_restart(_err: BaseException, attempt: int, _wait: float) -> None:
        get_logger().warning("Kubernetes list continue token expired; listing again from the start",
                             what=what, namespace=ns, restart=attempt)

    yield from retry.restarting(listing, retry=expired, attempts=LIST_RESTARTS + 1, initial=0.0, maximum=0.0,
                                jitter=0.0, on_retry=log_restart)


def list_pods(api: ApiClient, ns: str, label_selector: str, page_size: int = 500) -> Iterator[ObjectMetadata]:
    return _list_metadata(api, "pods", "v1", "pods", ns, label_selector, page_size)


def list_deployments(api: ApiClient, ns: str, label_selector: str, page_size: int = 500) -> Iterator[ObjectMetadata]:
    return _list_metadata(api, "deployments", "apps/v1", "deployments", ns, label_selector, page_size)


def list_secret_metadata(api: ApiClient, ns: str, label_selector: str, page_size: int = 500) -> Iterator[ObjectMetadata]:
    """Name, uid and labels of every Secret matching the selector; never its data."""
    return _list_metadata(api, "Secret metadata", "v1", "secrets", ns, label_selector, page_size)


def list_resource_quotas(api: ApiClient, ns: str) -> list[ResourceQuota]:
    page = _request(api, f"list ResourceQuotas in {ns}", "GET", _path("v1", ns, "resourcequotas"), safe_read=True)
    return [ResourceQuota.parse(item) for item in page.get("items") or []]


@dataclass(frozen=True)
class QuotaUsage:
    """One resource of one ResourceQuota: used against hard, as the API server last counted."""

    namespace: str
    name: str
    resource: str
    used: str
    hard: str
    ratio: float  # used / hard; 1.0 for anything used against a hard limit of 0


def quota_usage(quotas: list[ResourceQuota]) -> list[QuotaUsage]:
    """Every resource with a hard limit, sorted by resource; quantities that do not parse are left out."""
    out: list[QuotaUsage] = []
    for rq in quotas:
        for resource in sorted(rq.hard):
            used = rq.used.get(resource, "0")
            try:
                h, u = parse_quantity(rq.hard[resource]), parse_quantity(used)
            except ValueError:
                continue
            ratio = float(u / h) if h else (1.0 if u else 0.0)
            out.append(QuotaUsage(rq.namespace, rq.name, resource, str(used), str(rq.hard[resource]), ratio))
    return out


# ---------------------------------------------------------------------------- deletes (the reaper)


def _delete(api: ApiClient, what: str, group_version: str, plural: str, ns: str, name: str, uid: str | None) -> bool:
    # The uid precondition means a same-named successor is never deleted by mistake.
    body: dict[str, Any] = {"propagationPolicy": "Background"}
    if uid:
        body["preconditions"] = {"uid": uid}
    try:
        _request(api, f"delete {what} {ns}/{name}", "DELETE", _path(group_version, ns, plural, name), body=body)
    except KubeNotFound:
        return False
    return True


def delete_pod(api: ApiClient, ns: str, name: str, uid: str | None = None) -> bool:
    """True when deleted, False when it was already gone; `uid` guards a same-named successor."""
    return _delete(api, "pod", "v1", "pods", ns, name, uid)


def delete_deployment(api: ApiClient, ns: str, name: str, uid: str | None = None) -> bool:
    return _delete(api, "deployment", "apps/v1", "deployments", ns, name, uid)


def delete_secret(api: ApiClient, ns: str, name: str, uid: str | None = None) -> bool:
    return _delete(api, "secret", "v1", "secrets", ns, name, uid)
