"""The one Kubernetes helper module: a dedicated ApiClient, the namespace, and small typed calls.

Only jobs that talk to Kubernetes import this module (and with it the `kubernetes` package);
`jobs.cli` imports job modules lazily, so bootstrap-admin and friends never pay for it.

Error policy, shared by every helper:
* an `ApiException` becomes a `KubeAPIError` (a `JobError`, exit 1) carrying the HTTP status, the
  Status `reason` and the Status `message` from the response. Never the request body (it may hold
  Secret data), never the raw response body or headers;
* safe reads (GET/list) are retried a few times on connection errors and 5xx, with backoff
  (jobs.retry); writes are never retried here, except after a 429 (below). urllib3 itself (the
  client's default `Retry(3)`) still repeats GET/PUT/DELETE on 429/503 carrying Retry-After and
  re-tries failed connects: both are safe;
* a 409 on a write is a `KubeConflict`: the caller re-reads and re-plans (optimistic concurrency);
* reads answer None on 404; `delete_pod` answers False on 404.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.utils import parse_quantity

from jobs import retry
from jobs.errors import ConfigError, JobError
from jobs.log import get_logger

T = TypeVar("T")

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
COMPONENT = "coder-jobs"
REQUEST_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds for one request; the client has none by default
READ_ATTEMPTS = 4  # for a read, and for waiting out 429s on any request
READ_BACKOFF_S = 0.5  # 0.5, 1, 2 s (+ jitter) between read attempts

MERGE_PATCH = "application/merge-patch+json"

# The client's types, for modules that hold them but never import `kubernetes` themselves.
ApiClient = k8s.ApiClient
Secret = k8s.V1Secret


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


def from_api_exception(exc: ApiException, what: str) -> KubeAPIError:
    status = int(exc.status) if exc.status else None  # status 0: TLS/connection trouble inside the client
    reason, message = "", ""
    try:
        body = json.loads(exc.body) if exc.body else None
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or "")
    if not reason:
        reason = str(exc.reason or "")
    if status is None:
        return KubeAPIError(what, None, "", f"cannot reach the Kubernetes API ({reason or 'no response'})")
    cls = KubeConflict if status == 409 else KubeNotFound if status == 404 else KubeAPIError
    return cls(what, status, reason, message)


def _retry_after_s(exc: ApiException) -> float:
    try:
        return min(60.0, max(0.05, float((exc.headers or {}).get("Retry-After") or 1)))
    except (TypeError, ValueError):
        return 1.0


def _call(what: str, fn: Callable[..., T], *args: Any, safe_read: bool = False, **kwargs: Any) -> T:
    """One API call with our error conversion; safe reads are retried on connection errors and 5xx.
    A 429 is waited out (Retry-After) for any verb: API Priority and Fairness rejects the request
    before handling it, and urllib3 only repeats GET/PUT/DELETE, so a throttled create or patch
    would otherwise fail the job."""

    def once() -> T:
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            err = from_api_exception(exc, what)
            if err.status == 429:
                err.retry_after = _retry_after_s(exc)
            raise err from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # MaxRetryError names host, port and path; nothing secret. Keep it short.
            raise KubeAPIError(what, None, "",
                               f"cannot reach the Kubernetes API: {type(exc).__name__}: {str(exc)[:300]}") from None

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


# ---------------------------------------------------------------------------- client and namespace


def _kubeconfig_path() -> str:
    return os.environ.get("KUBECONFIG") or "~/.kube/config"


def api_client() -> k8s.ApiClient:
    """A dedicated ApiClient (close it when done). In-cluster config when KUBERNETES_SERVICE_HOST is set,
    else KUBECONFIG / ~/.kube/config. The client's global default configuration is never touched."""
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            cfg = k8s.Configuration()
            kconfig.load_incluster_config(client_configuration=cfg)
            return k8s.ApiClient(cfg)
        client: k8s.ApiClient = kconfig.new_client_from_config(config_file=_kubeconfig_path(),
                                                                client_configuration=k8s.Configuration())
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


# ---------------------------------------------------------------------------- secrets


def _name_of(body: Any) -> str:
    meta = (body.get("metadata") if isinstance(body, dict) else body.metadata) or {}
    return str((meta.get("name") if isinstance(meta, dict) else meta.name) or "")


def _resource_version_of(body: Any) -> str | None:
    meta = (body.get("metadata") if isinstance(body, dict) else body.metadata) or {}
    version = meta.get("resourceVersion") if isinstance(meta, dict) else meta.resource_version
    return str(version) if version else None


def read_secret(api: k8s.ApiClient, ns: str, name: str) -> k8s.V1Secret | None:
    try:
        return _call(f"read Secret {ns}/{name}", k8s.CoreV1Api(api).read_namespaced_secret, name, ns, safe_read=True)
    except KubeNotFound:
        return None


def secret_data(secret: k8s.V1Secret) -> dict[str, bytes]:
    """A Secret's data, base64-decoded."""
    return {k: base64.b64decode(v or "") for k, v in (secret.data or {}).items()}


def new_secret(ns: str, name: str, data: Mapping[str, str], labels: Mapping[str, str],
               annotations: Mapping[str, str]) -> k8s.V1Secret:
    """An Opaque Secret to create; `data` values already base64-encoded."""
    return k8s.V1Secret(api_version="v1", kind="Secret", type="Opaque", data=dict(data),
                        metadata=k8s.V1ObjectMeta(name=name, namespace=ns, labels=dict(labels),
                                                  annotations=dict(annotations)))


def with_content(secret: k8s.V1Secret, *, data: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None) -> k8s.V1Secret:
    """`secret` as it was read, with new data (base64), labels or annotations: its ownerReferences,
    finalizers and type survive, and its resourceVersion makes the replace conditional."""
    meta = secret.metadata or k8s.V1ObjectMeta()
    if data is not None:
        secret.data, secret.string_data = dict(data), None
    if labels is not None:
        meta.labels = dict(labels)
    if annotations is not None:
        meta.annotations = dict(annotations)
    secret.metadata = meta
    return secret


def create_secret(api: k8s.ApiClient, ns: str, body: k8s.V1Secret | Mapping[str, Any]) -> k8s.V1Secret:
    """POST. A 409 (AlreadyExists: someone created it first) raises KubeConflict."""
    return _call(f"create Secret {ns}/{_name_of(body)}", k8s.CoreV1Api(api).create_namespaced_secret, ns, body)


def replace_secret(api: k8s.ApiClient, ns: str, body: k8s.V1Secret | Mapping[str, Any]) -> k8s.V1Secret:
    """PUT with metadata.resourceVersion (required: an update without it would be unconditional).
    Stale resourceVersion -> KubeConflict. Deleted meanwhile -> KubeConflict too when the body
    carries the uid it was read with (the API server checks it as a precondition), else KubeNotFound."""
    if not _resource_version_of(body):
        raise ValueError("replace_secret needs metadata.resourceVersion (optimistic concurrency)")
    name = _name_of(body)
    return _call(f"update Secret {ns}/{name}", k8s.CoreV1Api(api).replace_namespaced_secret, name, ns, body)


# ---------------------------------------------------------------------------- deployments


def read_deployment(api: k8s.ApiClient, ns: str, name: str) -> k8s.V1Deployment | None:
    try:
        return _call(f"read Deployment {ns}/{name}", k8s.AppsV1Api(api).read_namespaced_deployment, name, ns, safe_read=True)
    except KubeNotFound:
        return None


def pod_template_annotations(deployment: k8s.V1Deployment) -> dict[str, str]:
    template = deployment.spec.template if deployment.spec else None
    return dict((template.metadata.annotations if template and template.metadata else None) or {})


def patch_pod_template_annotations(api: k8s.ApiClient, ns: str, name: str,
                                   annotations: Mapping[str, str | None]) -> k8s.V1Deployment:
    """JSON merge patch of spec.template.metadata.annotations (None removes a key): changing
    the pod template rolls the Deployment. The content type is explicit: client v37 otherwise
    picks JSON Patch for some bodies."""
    body = {"spec": {"template": {"metadata": {"annotations": dict(annotations)}}}}
    return _call(f"patch Deployment {ns}/{name}", k8s.AppsV1Api(api).patch_namespaced_deployment, name, ns, body,
                 _content_type=MERGE_PATCH)


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
    def of(cls, obj: Any, kind: str | None = None, api_version: str | None = None) -> ObjectRef:
        """From a client model (V1Secret, V1Deployment, ...)."""
        meta = obj.metadata
        return cls(kind or obj.kind or type(obj).__name__.removeprefix("V1"), api_version or obj.api_version or "v1",
                   meta.namespace, meta.name, meta.uid, meta.resource_version)


def _rfc3339(t: datetime, micro: bool = False) -> str:
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def record_event(api: k8s.ApiClient, involved: ObjectRef, reason: str, message: str, *,
                 type: str = "Normal", action: str | None = None) -> k8s.CoreV1Event:
    """Create a core/v1 Event about `involved`. The message must never hold a secret value.

    When eventTime is set the apiserver also requires reportingController, reportingInstance and
    action (legacy core/v1 validation), so all of them are sent. Client v37 validates the body into
    a CoreV1Event and serializes its datetimes with `isoformat()`, which drops the fraction when
    the microseconds are zero; the apiserver parses MicroTime with exactly six digits, so a zero
    microsecond is nudged to 1."""
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond or 1)
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
    return _call(f"create Event for {involved.kind} {involved.namespace}/{involved.name}",
                 k8s.CoreV1Api(api).create_namespaced_event, involved.namespace, body)


# ---------------------------------------------------------------------------- pods and quotas (the reaper)


LIST_RESTARTS = 3


def _paged(what: str, lister: Callable[..., Any], ns: str, label_selector: str, page_size: int,
           read_page: Callable[[Any], tuple[list[Any], str | None]], uid_of: Callable[[Any], str | None],
           **extra: Any) -> Iterator[Any]:
    """Every object matching the selector, a page at a time (limit/continue). A continue token
    can expire between pages (410 Expired, once etcd has compacted past it); the API's answer to
    that is to list again from the start, so we do, and skip what was already yielded."""
    description = f"list {what} in {ns} ({label_selector})"
    yielded: set[str] = set()
    sent_token = False  # a 410 on the first page is not an expired token: never listed again

    def listing() -> Iterator[Any]:
        nonlocal sent_token
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": label_selector, "limit": page_size, **extra}
            if token:
                kwargs["_continue"] = token
            sent_token = bool(token)
            items, token = read_page(_call(description, lister, ns, safe_read=True, **kwargs))
            for item in items:
                uid = uid_of(item)
                if uid not in yielded:
                    if uid:
                        yielded.add(uid)
                    yield item
            if not token:
                return

    def expired(err: BaseException) -> bool:
        return isinstance(err, KubeAPIError) and err.status == 410 and sent_token

    def log_restart(_err: BaseException, attempt: int, _wait: float) -> None:
        get_logger().warning("Kubernetes list continue token expired; listing again from the start",
                             what=what, namespace=ns, restart=attempt)

    yield from retry.restarting(listing, retry=expired, attempts=LIST_RESTARTS + 1, initial=0.0, maximum=0.0,
                                jitter=0.0, on_retry=log_restart)


def _model_page(page: Any) -> tuple[list[Any], str | None]:
    return list(page.items or []), (page.metadata._continue if page.metadata else None)


def _model_uid(item: Any) -> str | None:
    return item.metadata.uid if item.metadata else None


def _list_labelled(what: str, lister: Callable[..., Any], ns: str, label_selector: str, page_size: int) -> Iterator[Any]:
    return _paged(what, lister, ns, label_selector, page_size, _model_page, _model_uid)


def list_pods(api: k8s.ApiClient, ns: str, label_selector: str, page_size: int = 500) -> Iterator[k8s.V1Pod]:
    """Every pod matching the selector, a page at a time (limit/continue)."""
    return _list_labelled("pods", k8s.CoreV1Api(api).list_namespaced_pod, ns, label_selector, page_size)


def list_deployments(api: k8s.ApiClient, ns: str, label_selector: str, page_size: int = 500) -> Iterator[k8s.V1Deployment]:
    return _list_labelled("deployments", k8s.AppsV1Api(api).list_namespaced_deployment, ns, label_selector, page_size)


def list_resource_quotas(api: k8s.ApiClient, ns: str) -> list[k8s.V1ResourceQuota]:
    return list(_call(f"list ResourceQuotas in {ns}", k8s.CoreV1Api(api).list_namespaced_resource_quota, ns,
                      safe_read=True).items or [])


@dataclass(frozen=True)
class QuotaUsage:
    """One resource of one ResourceQuota: used against hard, as the API server last counted."""

    namespace: str
    name: str
    resource: str
    used: str
    hard: str
    ratio: float  # used / hard; 1.0 for anything used against a hard limit of 0


def quota_usage(quotas: list[k8s.V1ResourceQuota]) -> list[QuotaUsage]:
    """Every resource with a hard limit, sorted by resource; quantities that do not parse are left out."""
    out: list[QuotaUsage] = []
    for rq in quotas:
        hard = (rq.status.hard if rq.status else None) or {}
        used = (rq.status.used if rq.status else None) or {}
        meta = rq.metadata or k8s.V1ObjectMeta()
        for resource in sorted(hard):
            try:
                h, u = parse_quantity(hard[resource]), parse_quantity(used.get(resource, "0"))
            except ValueError:
                continue
            ratio = float(u / h) if h else (1.0 if u else 0.0)
            out.append(QuotaUsage(meta.namespace or "", meta.name or "", resource, str(used.get(resource, "0")),
                                  str(hard[resource]), ratio))
    return out


def _delete(what: str, deleter: Callable[..., Any], ns: str, name: str, uid: str | None) -> bool:
    # The uid precondition means a same-named successor is never deleted by mistake.
    body = k8s.V1DeleteOptions(propagation_policy="Background",
                               preconditions=k8s.V1Preconditions(uid=uid) if uid else None)
    try:
        _call(f"delete {what} {ns}/{name}", deleter, name, ns, body=body)
    except KubeNotFound:
        return False
    return True


def delete_pod(api: k8s.ApiClient, ns: str, name: str, uid: str | None = None) -> bool:
    """True when deleted, False when it was already gone."""
    return _delete("pod", k8s.CoreV1Api(api).delete_namespaced_pod, ns, name, uid)


def delete_deployment(api: k8s.ApiClient, ns: str, name: str, uid: str | None = None) -> bool:
    return _delete("deployment", k8s.AppsV1Api(api).delete_namespaced_deployment, ns, name, uid)


# ---------------------------------------------------------------------------- secret metadata (the reaper)

# Ask for metadata only: the reaper decides on names and labels and must never hold the tokens
# the Secrets carry. An API server that ignored the `as=` parameter would send a SecretList; only
# `metadata` is read from either.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


@dataclass(frozen=True)
class ObjectMetadata:
    name: str
    uid: str | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""


def metadata_of(obj: Any) -> ObjectMetadata:
    """The metadata of a client model (V1Secret, V1Pod, V1Deployment, ...)."""
    meta = obj.metadata or k8s.V1ObjectMeta()
    return ObjectMetadata(meta.name or "", meta.uid, dict(meta.labels or {}), dict(meta.annotations or {}),
                          meta.resource_version or "")


def _metadata_page(raw: Any) -> tuple[list[ObjectMetadata], str | None]:
    page = json.loads(raw.data)  # _preload_content=False: the raw response, whatever the list's model
    items = [item.get("metadata") or {} for item in page.get("items") or []]
    return ([ObjectMetadata(m.get("name", ""), m.get("uid"), dict(m.get("labels") or {})) for m in items],
            (page.get("metadata") or {}).get("continue") or None)


def list_secret_metadata(api: k8s.ApiClient, ns: str, label_selector: str,
                         page_size: int = 500) -> Iterator[ObjectMetadata]:
    """Name, uid and labels of every Secret matching the selector, a page at a time; never its data."""
    return _paged("Secret metadata", k8s.CoreV1Api(api).list_namespaced_secret, ns, label_selector, page_size,
                  _metadata_page, lambda meta: meta.uid, _preload_content=False, _headers={"Accept": METADATA_ONLY})


def delete_secret(api: k8s.ApiClient, ns: str, name: str, uid: str | None = None) -> bool:
    """True when deleted, False when it was already gone; `uid` guards a same-named successor."""
    return _delete("secret", k8s.CoreV1Api(api).delete_namespaced_secret, ns, name, uid)
