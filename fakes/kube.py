"""A stateful Kubernetes API server fake, spoken to over real loopback HTTP.

The official `kubernetes` client talks to it unchanged (point a kubeconfig at
it with `FakeKube.kubeconfig(path)`). It keeps objects in memory and answers
the way kube-apiserver does where jobs can tell the difference:

* core/v1 secrets, configmaps, events, resourcequotas, pods; apps/v1
  deployments (+ `/status`, deployments `/scale`); events.k8s.io/v1 events as
  a second view of the same event store (fields converted like the apiserver).
* list (labelSelector with all set/equality operators, fieldSelector,
  limit/continue), get, create, update (optimistic concurrency), patch (merge,
  strategic merge with the common patchMergeKeys, JSON patch), delete.
* errors are `Status` objects with the apiserver's reasons and messages.
* one global resourceVersion counter, bumped by every write; no-op updates do
  not bump it (as in the apiserver).

What it does not do: watch, server-side apply (415), namespaces as objects (any
namespace exists), garbage collection, admission, field managers.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from fakes.base import FakeServer, Request, Response

Obj = dict[str, Any]

# --------------------------------------------------------------------------
# resources
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    plural: str
    kind: str
    group: str  # "" for core
    version: str
    store: str  # storage key; two API views may share one store (events)
    status_subresource: bool = False
    delete_returns_object: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def qualified(self) -> str:  # "secrets", "deployments.apps" (as in error messages)
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:  # "Secret", "Deployment.apps" (as in Invalid messages)
        return f"{self.kind}.{self.group}" if self.group else self.kind


SECRETS = Resource("secrets", "Secret", "", "v1", "secrets")
CONFIGMAPS = Resource("configmaps", "ConfigMap", "", "v1", "configmaps")
EVENTS = Resource("events", "Event", "", "v1", "events")
RESOURCEQUOTAS = Resource("resourcequotas", "ResourceQuota", "", "v1", "resourcequotas", status_subresource=True)
PODS = Resource("pods", "Pod", "", "v1", "pods", status_subresource=True, delete_returns_object=True)
DEPLOYMENTS = Resource("deployments", "Deployment", "apps", "v1", "deployments", status_subresource=True)
EVENTS_V1 = Resource("events", "Event", "events.k8s.io", "v1", "events")

RESOURCES = (SECRETS, CONFIGMAPS, EVENTS, RESOURCEQUOTAS, PODS, DEPLOYMENTS, EVENTS_V1)
STORES = {r.store: r for r in (SECRETS, CONFIGMAPS, EVENTS, RESOURCEQUOTAS, PODS, DEPLOYMENTS)}


def _resolve(kind: str) -> Resource:
    """"secrets", "secret", "Secret", "deployments.apps", "Deployment" -> the stored resource."""
    k = kind.lower().removesuffix(".apps").removesuffix(".events.k8s.io")
    for r in STORES.values():
        if k in (r.plural, r.kind.lower()):
            return r
    raise KeyError(f"FakeKube does not serve {kind!r}; known: {sorted(STORES)}")


# --------------------------------------------------------------------------
# Status errors
# --------------------------------------------------------------------------


class KubeError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.body.get("message") if isinstance(response.body, dict) else response.body)
        self.response = response


def status_failure(code: int, reason: str, message: str, details: Obj | None = None, headers: dict[str, str] | None = None) -> Response:
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return Response(code, body, headers=dict(headers or {}))


def _details(res: Resource, name: str, kind: str | None = None) -> Obj:
    d: Obj = {"name": name}
    if res.group:
        d["group"] = res.group
    d["kind"] = kind or res.plural
    return d


def not_found(res: Resource, name: str) -> KubeError:
    return KubeError(status_failure(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name)))


def already_exists(res: Resource, name: str) -> KubeError:
    return KubeError(status_failure(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name)))


def conflict(res: Resource, name: str, why: str | None = None) -> KubeError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return KubeError(
        status_failure(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}', _details(res, name))
    )


def bad_request(message: str) -> KubeError:
    return KubeError(status_failure(400, "BadRequest", message))


@dataclass
class FieldError:
    field: str
    type: str  # FieldValueRequired, FieldValueInvalid, FieldValueForbidden, FieldValueTooLong, FieldValueNotSupported
    detail: str = ""
    value: Any = None

    def message(self) -> str:
        if self.type == "FieldValueRequired":
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.type == "FieldValueForbidden":
            return f"Forbidden: {self.detail}"
        if self.type == "FieldValueTooLong":
            return f"Too long: {self.detail}"
        if self.type == "FieldValueNotSupported":
            return f"Unsupported value: {json.dumps(self.value)}: {self.detail}"
        return f"Invalid value: {json.dumps(self.value)}: {self.detail}"


def invalid(res: Resource, name: str, errors: list[FieldError]) -> KubeError:
    parts = [f"{e.field}: {e.message()}" for e in errors]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(res, name, kind=res.kind)
    details["causes"] = [{"reason": e.type, "message": e.message(), "field": e.field} for e in errors]
    return KubeError(status_failure(422, "Invalid", f'{res.qualified_kind} "{name}" is invalid: {joined}', details))


_REASONS = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "Unauthorized"),
    403: ("Forbidden", "forbidden: fake: injected failure"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    409: ("Conflict", "Operation cannot be fulfilled: fake: injected failure"),
    410: ("Expired", "too old resource version"),
    415: ("UnsupportedMediaType", "the body of the request was in an unknown format"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: fake: injected failure"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "Timeout: request did not complete within requested timeout - context deadline exceeded"),
}


def injected_status(code: int) -> Response:
    reason, message = _REASONS.get(code, ("InternalError" if code >= 500 else "BadRequest", f"fake: injected {code}"))
    headers = {"Retry-After": "1"} if code in (429, 503) else {}
    details = {"retryAfterSeconds": 1} if code in (429, 503) else ({"causes": [{"message": "fake: injected failure"}]} if code == 500 else None)
    return status_failure(code, reason, message, details, headers)


# --------------------------------------------------------------------------
# selectors
# --------------------------------------------------------------------------

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VAL = r"[A-Za-z0-9_.\-]*"
_REQ_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_REQ_EQ = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VAL})\s*$")
_REQ_CMP = re.compile(rf"^\s*({_KEY})\s*([<>])\s*(-?\d+)\s*$")
_REQ_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")

Requirement = Callable[[dict[str, str]], bool]


def _split_top_level(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def parse_label_selector(selector: str) -> list[Requirement]:
    reqs: list[Requirement] = []
    if not selector.strip():
        return reqs
    for part in _split_top_level(selector):
        if m := _REQ_SET.match(part):
            key, op, raw = m.group(1), m.group(2), m.group(3)
            values = {v.strip() for v in raw.split(",") if v.strip()}
            if not values:
                raise bad_request(f"unable to parse requirement: for 'in', 'notin' operators, values set can't be empty: {part!r}")
            if op == "in":
                reqs.append(lambda labels, k=key, vs=values: k in labels and labels[k] in vs)
            else:
                reqs.append(lambda labels, k=key, vs=values: k not in labels or labels[k] not in vs)
        elif m := _REQ_EQ.match(part):
            key, op, value = m.groups()
            if op == "!=":
                reqs.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                reqs.append(lambda labels, k=key, v=value: k in labels and labels[k] == v)
        elif m := _REQ_CMP.match(part):
            key, op, num = m.group(1), m.group(2), int(m.group(3))

            def cmp(labels: dict[str, str], k: str = key, o: str = op, n: int = num) -> bool:
                try:
                    v = int(labels[k])
                except (KeyError, ValueError):
                    return False
                return v > n if o == ">" else v < n

            reqs.append(cmp)
        elif m := _REQ_EXISTS.match(part):
            neg, key = m.groups()
            reqs.append((lambda labels, k=key: k not in labels) if neg else (lambda labels, k=key: k in labels))
        else:
            raise bad_request(f"unable to parse requirement: invalid label selector: {part.strip()!r} in {selector!r}")
    return reqs


_FIELD_LABELS: dict[str, set[str]] = {
    "secrets": {"type"},
    "pods": {
        "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
        "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName",
    },
    "events": {
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
        "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
        "reason", "reportingComponent", "source", "type",
    },
}


def _dig(obj: Any, path: str) -> str:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    if obj is None:
        return ""
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return str(obj)


def parse_field_selector(res: Resource, selector: str) -> list[Callable[[Obj], bool]]:
    reqs: list[Callable[[Obj], bool]] = []
    if not selector.strip():
        return reqs
    allowed = {"metadata.name", "metadata.namespace"} | _FIELD_LABELS.get(res.store, set())
    for part in selector.split(","):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
        field, op, value = m.groups()
        if field not in allowed:
            raise bad_request(f'field label not supported: {field}')
        path = "source.component" if (res.store == "events" and field == "source") else field
        if op == "!=":
            reqs.append(lambda o, p=path, v=value: _dig(o, p) != v)
        else:
            reqs.append(lambda o, p=path, v=value: _dig(o, p) == v)
    return reqs


# --------------------------------------------------------------------------
# patches
# --------------------------------------------------------------------------

# patchMergeKey of the list fields this fake's resources carry (field name -> key).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
PRIMITIVE_MERGE_LISTS = {"finalizers"}  # patchStrategy: merge on a list of strings


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def strategic_merge_patch(original: Obj, patch: Obj) -> Obj:
    """Strategic merge patch for the built-in types: maps merge, lists with a
    patchMergeKey merge by that key, other lists are replaced. Supports the
    `$patch: replace|delete`, `$retainKeys`, `$deleteFromPrimitiveList/<f>` and
    (ignored) `$setElementOrder/<f>` directives."""
    out = _smp_map(original, patch)
    return out if out is not None else {}


def _smp_map(orig: Any, patch: Obj) -> Obj | None:
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "delete":
        return None
    if directive == "replace":
        return _strip(patch)
    if directive is not None:
        raise bad_request(f"Unknown patch type: {directive}")
    retain = patch.pop("$retainKeys", None)
    result: Obj = copy.deepcopy(orig) if isinstance(orig, dict) else {}
    deferred: list[tuple[str, list[Any]]] = []
    for k, v in patch.items():
        if k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            deferred.append((k.split("/", 1)[1], v or []))
            continue
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            merged = _smp_map(result.get(k), v)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list):
            result[k] = _smp_list(k, result.get(k), v)
        else:
            result[k] = v
    for field, drop in deferred:
        if isinstance(result.get(field), list):
            result[field] = [x for x in result[field] if x not in drop]
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(field: str, orig: Any, patch: list[Any]) -> list[Any]:
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [_strip(x) for x in patch if not (isinstance(x, dict) and x.get("$patch") == "replace")]
    orig = orig if isinstance(orig, list) else []
    if field in PRIMITIVE_MERGE_LISTS:
        return copy.deepcopy(orig) + [x for x in patch if x not in orig]
    key = MERGE_KEYS.get(field)
    if key is None:
        return [_strip(x) for x in patch]
    result = copy.deepcopy(orig)
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request(f"{field}: expected a map in a list with patchMergeKey {key}, got {json.dumps(item)}")
        if key not in item:
            raise bad_request(f"map: {json.dumps(item)} does not contain declared merge key: {key}")
        idx = next((i for i, x in enumerate(result) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            result.append(_smp_map({}, item))
        else:
            merged = _smp_map(result[idx], item)
            if merged is None:
                result.pop(idx)
            else:
                result[idx] = merged
    return result


def _strip(v: Any) -> Any:
    """A value being set wholesale: drop nulls and directives inside it."""
    if isinstance(v, dict):
        return {k: _strip(x) for k, x in v.items() if x is not None and not k.startswith("$")}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


class _JSONPatchError(Exception):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _JSONPatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], op: str, path: str) -> Any:
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise _JSONPatchError(f"{op} operation does not apply: doc is missing path: \"{path}\": missing value")
    return cur


def _get(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise _JSONPatchError(f"{op} operation does not apply: doc is missing key: {path}: missing value")


def _remove(doc: Any, path: str, op: str = "remove") -> Any:
    parts = _pointer(path)
    if not parts:
        raise _JSONPatchError("unable to remove the root of the document")
    parent = _parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _JSONPatchError(f"{op} operation does not apply: doc is missing key: {path}: missing value")


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _parent(doc, parts, op, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _JSONPatchError(f"{op} operation does not apply: index out of bounds: {path}")
    else:
        raise _JSONPatchError(f"{op} operation does not apply: doc is missing path: \"{path}\": missing value")
    return doc


def json_patch(doc: Obj, ops: list[Obj]) -> Obj:
    """RFC 6902: add, remove, replace, test, move, copy."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        path = op.get("path")
        if not isinstance(path, str):
            raise _JSONPatchError(f"{kind} operation: missing path")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path, "replace")
            if _pointer(path):
                _remove(doc, path, "replace")
            doc = _add(doc, path, copy.deepcopy(op.get("value")), "replace")
        elif kind == "test":
            if _get(doc, path, "test") != op.get("value"):
                raise _JSONPatchError(f"testing value {path} failed: test failed")
        elif kind in ("move", "copy"):
            src = op.get("from", "")
            value = copy.deepcopy(_get(doc, src, kind))
            if kind == "move":
                _remove(doc, src, "move")
            doc = _add(doc, path, value, kind)
        else:
            raise _JSONPatchError(f"Unexpected kind: {kind}")
    return doc


PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
}


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _validate_meta(meta: Obj) -> list[FieldError]:
    errs: list[FieldError] = []
    name = meta.get("name") or ""
    if not name:
        errs.append(FieldError("metadata.name", "FieldValueRequired", "name or generateName is required"))
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        errs.append(FieldError(
            "metadata.name", "FieldValueInvalid",
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation "
            "is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')", name))
    for k, v in (meta.get("labels") or {}).items():
        prefix, _, short = k.rpartition("/")
        if not short or len(short) > 63 or not _LABEL_NAME.match(short) or (prefix and not _DNS1123_SUBDOMAIN.match(prefix)):
            errs.append(FieldError("metadata.labels", "FieldValueInvalid", "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", k))
        if not isinstance(v, str) or len(v) > 63 or not _LABEL_VALUE.match(v):
            errs.append(FieldError("metadata.labels", "FieldValueInvalid", "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", v))
    for k in (meta.get("annotations") or {}):
        prefix, _, short = k.rpartition("/")
        if not short or len(short) > 63 or not _LABEL_NAME.match(short) or (prefix and not _DNS1123_SUBDOMAIN.match(prefix)):
            errs.append(FieldError("metadata.annotations", "FieldValueInvalid", "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", k))
    return errs


def _now_rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# --------------------------------------------------------------------------
# events.k8s.io/v1 <-> core/v1 conversion (one store, two views)
# --------------------------------------------------------------------------

_EVENT_RENAMES = (
    ("message", "note"),
    ("involvedObject", "regarding"),
    ("source", "deprecatedSource"),
    ("reportingComponent", "reportingController"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
)


def _event_to_v1(core: Obj) -> Obj:
    out = {k: v for k, v in core.items() if k not in {a for a, _ in _EVENT_RENAMES}}
    for a, b in _EVENT_RENAMES:
        if a in core:
            out[b] = core[a]
    out.setdefault("eventTime", None)  # the apiserver writes a zero MicroTime as null
    return out


def _event_from_v1(ev: Obj) -> Obj:
    out = {k: v for k, v in ev.items() if k not in {b for _, b in _EVENT_RENAMES}}
    for a, b in _EVENT_RENAMES:
        if b in ev:
            out[a] = ev[b]
    return out


# --------------------------------------------------------------------------
# the fake
# --------------------------------------------------------------------------


@dataclass
class Rollout:
    """A deployment write that changed spec.template (what `kubectl rollout restart` does)."""

    namespace: str
    name: str
    generation: int
    method: str  # "PUT", "PATCH" or "put" (seeded)
    template: Obj
    time: float


@dataclass
class _FailRule:
    status: int
    remaining: int
    path_regex: str | None
    method: str | None


UNAUTHENTICATED_PATHS = ("/version", "/version/", "/healthz", "/livez", "/readyz")


class FakeKube(FakeServer):
    """In-memory kube-apiserver for the resources the jobs touch.

    Knobs beyond the base ones: `conflict_next`, `fail_next`, `auto_rollout`,
    `require_auth`, `tokens`, `server_version`.
    """

    server_version = "v1.31.0"

    def __init__(self) -> None:
        super().__init__()
        self._objects: dict[str, dict[str, dict[str, Obj]]] = {r: {} for r in STORES}
        self._rv = 1000
        self._rng = random.Random(0)
        self._conflicts: dict[tuple[str, str | None, str], int] = {}
        self._fail_rules: list[_FailRule] = []
        self.rollout_log: list[Rollout] = []
        self.auto_rollout = True  # deployment status catches up with every spec change at once
        self.require_auth = True  # 401 without `Authorization: Bearer ...`
        self.tokens: set[str] | None = None  # None: any bearer token is accepted
        self._register_routes()

    # ------------------------------------------------------------------ routes
    def _register_routes(self) -> None:
        # the client asks for "/version/", "/api/", "/apis/" (trailing slash)
        for slash in ("", "/"):
            self.route("GET", "/version" + slash, self._version)
            self.route("GET", "/api" + slash, self._api_versions)
            self.route("GET", "/apis" + slash, self._api_groups)
            for path, resources in self._group_versions().items():
                self.route("GET", path + slash, lambda req, rs=resources, p=path: self._resource_list(p, rs))
        for r in RESOURCES:
            ns_coll = f"{r.prefix}/namespaces/{{ns}}/{r.plural}"
            item = f"{ns_coll}/{{name}}"
            self.route("GET", f"{r.prefix}/{r.plural}", self._wrap(r, self._list))
            self.route("GET", ns_coll, self._wrap(r, self._list))
            self.route("POST", ns_coll, self._wrap(r, self._create))
            self.route("GET", item, self._wrap(r, self._get))
            self.route("PUT", item, self._wrap(r, self._replace))
            self.route("PATCH", item, self._wrap(r, self._patch))
            self.route("DELETE", item, self._wrap(r, self._delete))
            if r.status_subresource:
                self.route("GET", f"{item}/status", self._wrap(r, self._get))
                self.route("PUT", f"{item}/status", self._wrap(r, self._replace, "status"))
                self.route("PATCH", f"{item}/status", self._wrap(r, self._patch, "status"))
        d = DEPLOYMENTS
        scale = f"{d.prefix}/namespaces/{{ns}}/{d.plural}/{{name}}/scale"
        self.route("GET", scale, self._wrap(d, self._get_scale))
        self.route("PUT", scale, self._wrap(d, self._replace_scale))
        self.route("PATCH", scale, self._wrap(d, self._patch_scale))

    def _wrap(self, res: Resource, fn: Callable[..., Response], *extra: Any) -> Callable[[Request], Response]:
        def handler(req: Request) -> Response:
            try:
                with self.lock:
                    return fn(res, req, *extra)
            except KubeError as e:
                return e.response

        return handler

    # --------------------------------------------------------------- dispatch
    def dispatch(self, request: Request) -> tuple[Response, str]:
        with self.lock:
            for rule in self._fail_rules:
                if rule.remaining > 0 and (rule.method is None or rule.method == request.method) and (
                    rule.path_regex is None or re.search(rule.path_regex, request.path)
                ):
                    rule.remaining -= 1
                    self._fail_rules = [r for r in self._fail_rules if r.remaining > 0]
                    return injected_status(rule.status), "fail_next"
        if self.require_auth and request.path not in UNAUTHENTICATED_PATHS:
            auth = request.header("authorization") or ""
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            if not token or (self.tokens is not None and token not in self.tokens):
                return status_failure(401, "Unauthorized", "Unauthorized"), "unauthorized"
        return super().dispatch(request)

    def not_found(self, request: Request) -> Response:
        for method, regex, _name, _fn in self._routes:
            if method != request.method and regex.match(request.path):
                return status_failure(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})
        return status_failure(404, "NotFound", "the server could not find the requested resource", {})

    # -------------------------------------------------------------- discovery
    def _version(self, req: Request) -> Response:
        major, minor, *_ = self.server_version.lstrip("v").split(".")
        return Response(200, {
            "major": major, "minor": minor, "gitVersion": self.server_version, "gitCommit": "fake",
            "gitTreeState": "clean", "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5",
            "compiler": "gc", "platform": "linux/amd64",
        })

    def _api_versions(self, req: Request) -> Response:
        return Response(200, {
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.removeprefix("http://")}],
        })

    def _api_groups(self, req: Request) -> Response:
        groups = sorted({r.group for r in RESOURCES if r.group})
        return Response(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in groups
        ]})

    @staticmethod
    def _group_versions() -> dict[str, list[Resource]]:
        out: dict[str, list[Resource]] = {}
        for r in RESOURCES:
            out.setdefault(r.prefix, []).append(r)
        return out

    def _resource_list(self, prefix: str, resources: list[Resource]) -> Response:
        verbs = ["create", "delete", "get", "list", "patch", "update"]
        items = []
        for r in resources:
            items.append({"name": r.plural, "singularName": r.kind.lower(), "namespaced": True, "kind": r.kind, "verbs": verbs})
            if r.status_subresource:
                items.append({"name": f"{r.plural}/status", "singularName": "", "namespaced": True, "kind": r.kind, "verbs": ["get", "patch", "update"]})
        if DEPLOYMENTS in resources:
            items.append({"name": "deployments/scale", "singularName": "", "namespaced": True, "group": "autoscaling",
                          "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
        return Response(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": resources[0].api_version, "resources": items})

    # ------------------------------------------------------------- internals
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _uid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _bucket(self, res: Resource, ns: str) -> dict[str, Obj]:
        return self._objects[res.store].setdefault(ns, {})

    def _stored(self, res: Resource, ns: str, name: str) -> Obj:
        obj = self._objects[res.store].get(ns, {}).get(name)
        if obj is None:
            raise not_found(res, name)
        return obj

    def _out(self, res: Resource, obj: Obj) -> Obj:
        """A stored object as `res`'s API view shows it."""
        obj = copy.deepcopy(obj)
        if res is EVENTS_V1:
            obj = _event_to_v1(obj)
        obj["kind"] = res.kind
        obj["apiVersion"] = res.api_version
        return {"kind": obj.pop("kind"), "apiVersion": obj.pop("apiVersion"), **obj}

    def _in(self, res: Resource, obj: Obj) -> Obj:
        """A request body in `res`'s view -> the stored (core) shape."""
        obj = copy.deepcopy(obj)
        if res is EVENTS_V1:
            obj = _event_from_v1(obj)
            if obj.get("eventTime") is None:
                obj.pop("eventTime", None)
        stored = STORES[res.store]
        obj["kind"] = stored.kind
        obj["apiVersion"] = stored.api_version
        return obj

    @staticmethod
    def _body(req: Request, res: Resource) -> Obj:
        ctype = (req.header("content-type") or "application/json").split(";")[0].strip()
        if ctype != "application/json":
            raise KubeError(status_failure(415, "UnsupportedMediaType",
                                           f"the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ctype})"))
        try:
            body = json.loads(req.body or b"")
        except ValueError as e:
            raise bad_request(f"the object provided is unrecognized or malformed JSON: {e}") from None
        if not isinstance(body, dict):
            raise bad_request(f"json: cannot unmarshal {type(body).__name__} into Go value of type {res.kind}")
        if body.get("kind") not in (None, "", res.kind) and not (res is DEPLOYMENTS and body.get("kind") == "Scale"):
            raise bad_request(f"the kind in the data ({body['kind']}) does not match the expected kind ({res.kind})")
        if body.get("apiVersion") not in (None, "", res.api_version) and body.get("kind") != "Scale":
            raise bad_request(
                f"the API version in the data ({body['apiVersion']}) does not match the expected API version ({res.api_version})")
        if body.get("metadata") is None:
            body["metadata"] = {}
        if not isinstance(body["metadata"], dict):
            raise bad_request("metadata must be an object")
        return body

    @staticmethod
    def _dry_run(req: Request) -> bool:
        return "All" in req.query.get("dryRun", [])

    # ---------------------------------------------------- per-kind behaviour
    def _normalize(self, res: Resource, obj: Obj, old: Obj | None, subresource: str | None) -> None:
        """What the apiserver does to a body before validation: defaults, stringData."""
        meta = obj["metadata"]
        for key in ("labels", "annotations"):
            if key in meta and not meta[key]:
                meta.pop(key)
        if res.store == "secrets":
            string_data = obj.pop("stringData", None)
            data = obj.get("data") or {}
            for k, v in data.items():
                try:
                    base64.b64decode(v or "", validate=True)
                except (binascii.Error, TypeError, ValueError):
                    raise bad_request(f"Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input for key {k!r}") from None
            for k, v in (string_data or {}).items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            if data:
                obj["data"] = data
            else:
                obj.pop("data", None)
            obj.setdefault("type", "Opaque")
        elif res.store == "configmaps":
            for key in ("data", "binaryData"):
                if key in obj and not obj[key]:
                    obj.pop(key)
        elif res.store == "deployments":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        elif res.store == "pods" and old is None:
            obj.setdefault("status", {"phase": "Pending"})

    def _validate(self, res: Resource, obj: Obj, old: Obj | None, ns: str) -> list[FieldError]:
        errs = _validate_meta(obj["metadata"])
        if res.store in ("secrets", "configmaps"):
            for field in ("data", "binaryData"):
                for k in (obj.get(field) or {}):
                    if not _DATA_KEY.match(k):
                        errs.append(FieldError(f"{field}[{k}]", "FieldValueInvalid", "a valid config key must consist of alphanumeric characters, '-', '_' or '.'", k))
            size = sum(len(base64.b64decode(v)) for v in (obj.get("data") or {}).values()) if res.store == "secrets" else 0
            if size > 1024 * 1024:
                errs.append(FieldError("data", "FieldValueTooLong", "must have at most 1048576 bytes"))
            if old is not None and old.get("immutable"):
                if obj.get("data") != old.get("data") or obj.get("binaryData") != old.get("binaryData"):
                    errs.append(FieldError("data", "FieldValueForbidden", "field is immutable when `immutable` is set"))
                if not obj.get("immutable"):
                    errs.append(FieldError("immutable", "FieldValueForbidden", "field is immutable when `immutable` is set"))
            if res.store == "secrets" and old is not None and obj.get("type") != old.get("type"):
                errs.append(FieldError("type", "FieldValueInvalid", "field is immutable", obj.get("type")))
        elif res.store == "deployments":
            spec = obj.get("spec") or {}
            selector = spec.get("selector")
            template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not selector:
                errs.append(FieldError("spec.selector", "FieldValueRequired"))
            else:
                match = selector.get("matchLabels") or {}
                if any(template_labels.get(k) != v for k, v in match.items()):
                    errs.append(FieldError("spec.template.metadata.labels", "FieldValueInvalid", "`selector` does not match template `labels`", template_labels))
                if old is not None and selector != (old.get("spec") or {}).get("selector"):
                    errs.append(FieldError("spec.selector", "FieldValueInvalid", "field is immutable", selector))
            if not ((spec.get("template") or {}).get("spec") or {}).get("containers"):
                errs.append(FieldError("spec.template.spec.containers", "FieldValueRequired"))
        elif res.store == "pods":
            spec = obj.get("spec") or {}
            if not spec.get("containers"):
                errs.append(FieldError("spec.containers", "FieldValueRequired"))
            if old is not None and not _pod_spec_update_allowed(old.get("spec") or {}, spec):
                errs.append(FieldError("spec", "FieldValueForbidden", "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"))
        elif res.store == "events" and old is None:
            if res is EVENTS_V1:
                v1 = _event_to_v1(obj)
                for field in ("eventTime", "reportingController", "reportingInstance", "action", "reason"):
                    if not v1.get(field):
                        errs.append(FieldError(field, "FieldValueRequired"))
                if v1.get("type") not in ("Normal", "Warning"):
                    errs.append(FieldError("type", "FieldValueNotSupported", 'supported values: "Normal", "Warning"', v1.get("type")))
            involved_ns = (obj.get("involvedObject") or {}).get("namespace")
            if involved_ns and involved_ns != ns:
                field = "regarding.namespace" if res is EVENTS_V1 else "involvedObject.namespace"
                errs.append(FieldError(field, "FieldValueInvalid", "does not match event.namespace", involved_ns))
        return errs

    def _rollout_status(self, obj: Obj) -> None:
        spec = obj.get("spec") or {}
        replicas = spec.get("replicas", 1)
        status: Obj = {"observedGeneration": obj["metadata"].get("generation", 1)}
        if replicas:
            status.update(replicas=replicas, updatedReplicas=replicas, readyReplicas=replicas, availableReplicas=replicas)
        now = _now_rfc3339(self.now())
        status["conditions"] = [
            {"type": "Available", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
             "reason": "NewReplicaSetAvailable", "message": f'ReplicaSet "{obj["metadata"]["name"]}" has successfully progressed.'},
        ]
        obj["status"] = status

    # ------------------------------------------------------------------ verbs
    def _list(self, res: Resource, req: Request) -> Response:
        if req.arg("watch") in ("true", "1"):
            raise bad_request("fake: watch is not supported by FakeKube")
        ns = req.params.get("ns")
        label_reqs = parse_label_selector(req.arg("labelSelector", "") or "")
        field_reqs = parse_field_selector(res, req.arg("fieldSelector", "") or "")
        try:
            limit = int(req.arg("limit") or 0)
        except ValueError:
            raise bad_request(f"invalid limit {req.arg('limit')!r}") from None
        start: list[str] | None = None
        token = req.arg("continue")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode() + b"=="))
                start = list(decoded["start"])
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise bad_request(f"continue key is not valid: {token}") from None
        rows: list[tuple[list[str], Obj]] = []
        buckets = self._objects[res.store]
        for bucket_ns in sorted(buckets) if ns is None else [ns]:
            for name in sorted(buckets.get(bucket_ns, {})):
                rows.append(([bucket_ns, name], buckets[bucket_ns][name]))
        matched = [
            (key, obj) for key, obj in rows
            if (start is None or key > start)
            and all(r(obj["metadata"].get("labels") or {}) for r in label_reqs)
            and all(r(obj) for r in field_reqs)
        ]
        meta: Obj = {"resourceVersion": str(self._rv)}
        page = matched
        if limit and len(matched) > limit:
            page = matched[:limit]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"v": "meta.k8s.io/v1", "rv": self._rv, "start": page[-1][0]}).encode()).decode().rstrip("=")
            if not label_reqs and not field_reqs:
                meta["remainingItemCount"] = len(matched) - limit
        items = []
        for _, obj in page:
            out = self._out(res, obj)
            out.pop("kind")
            out.pop("apiVersion")
            items.append(out)
        return Response(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": items})

    def _get(self, res: Resource, req: Request) -> Response:
        return Response(200, self._out(res, self._stored(res, req.params["ns"], req.params["name"])))

    def _create(self, res: Resource, req: Request) -> Response:
        ns = req.params["ns"]
        body = self._in(res, self._body(req, res))
        meta = body["metadata"]
        if meta.get("namespace") not in (None, "", ns):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(self._rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        name = meta.get("name") or ""
        self._normalize(res, body, None, None)
        errs = self._validate(res, body, None, ns)
        if errs:
            raise invalid(res, name, errs)
        if name in self._bucket(res, ns):
            raise already_exists(res, name)
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(k, None)
        meta["namespace"] = ns
        meta["uid"] = self._uid()
        meta["creationTimestamp"] = _now_rfc3339(self.now())
        if res.store == "deployments":
            meta["generation"] = 1
            body.pop("status", None)
            if self.auto_rollout:
                self._rollout_status(body)
        if not self._dry_run(req):
            meta["resourceVersion"] = self._next_rv()
            self._bucket(res, ns)[name] = body
        return Response(201, self._out(res, body))

    def _check_conflict_knob(self, res: Resource, ns: str, name: str) -> None:
        """`conflict_next`: someone else writes the object first, then we 409."""
        for key in ((res.store, ns, name), (res.store, None, name)):
            if self._conflicts.get(key, 0) > 0:
                self._conflicts[key] -= 1
                if not self._conflicts[key]:
                    del self._conflicts[key]
                obj = self._stored(res, ns, name)
                annotations = obj["metadata"].setdefault("annotations", {})
                annotations["fake/touched"] = str(int(annotations.get("fake/touched", "0")) + 1)
                obj["metadata"]["resourceVersion"] = self._next_rv()
                raise conflict(res, name)

    def _write(self, res: Resource, ns: str, name: str, new: Obj, method: str, subresource: str | None, dry_run: bool) -> Obj:
        """The shared tail of PUT and PATCH: preconditions, defaults, validation, store."""
        old = self._stored(res, ns, name)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta.get("name") not in (None, "", name) or (subresource is None and not meta.get("name")):
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        if meta.get("namespace") not in (None, "", ns):
            raise bad_request("the namespace of the object does not match the namespace on the request")
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        else:
            if res.status_subresource:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            self._normalize(res, new, old, subresource)
            errs = self._validate(res, new, old, ns)
            if errs:
                raise invalid(res, name, errs)
        meta = new["metadata"]
        for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        meta["namespace"] = ns
        meta["name"] = name
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        new["kind"], new["apiVersion"] = old["kind"], old["apiVersion"]
        template_changed = False
        if res.store == "deployments" and subresource != "status":
            if new.get("spec") != old.get("spec"):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
                if self.auto_rollout:
                    self._rollout_status(new)
            template_changed = (new.get("spec") or {}).get("template") != (old.get("spec") or {}).get("template")
        if new == old or dry_run:
            return new  # a no-op write does not bump resourceVersion
        meta["resourceVersion"] = self._next_rv()
        self._bucket(res, ns)[name] = new
        if template_changed:
            self.rollout_log.append(Rollout(ns, name, meta["generation"], method, copy.deepcopy(new["spec"]["template"]), self.now()))
        return new

    def _replace(self, res: Resource, req: Request, subresource: str | None = None) -> Response:
        ns, name = req.params["ns"], req.params["name"]
        body = self._in(res, self._body(req, res))
        self._stored(res, ns, name)
        self._check_conflict_knob(res, ns, name)
        return Response(200, self._out(res, self._write(res, ns, name, body, "PUT", subresource, self._dry_run(req))))

    def _patched(self, res: Resource, req: Request, current: Obj) -> Obj:
        ctype = (req.header("content-type") or "").split(";")[0].strip()
        kind = PATCH_TYPES.get(ctype)
        if kind is None:
            raise KubeError(status_failure(
                415, "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(PATCH_TYPES)} (FakeKube does not do server-side apply; got {ctype or 'no Content-Type'})"))
        try:
            patch = json.loads(req.body or b"")
        except ValueError as e:
            raise bad_request(f"error decoding patch: {e}") from None
        if kind == "json":
            if not isinstance(patch, list):
                raise bad_request(f"json: cannot unmarshal {type(patch).__name__} into Go value of type jsonpatch.Patch")
            try:
                return json_patch(current, patch)
            except _JSONPatchError as e:
                raise KubeError(status_failure(422, "Invalid", str(e))) from None
        if not isinstance(patch, dict):
            raise bad_request(f"json: cannot unmarshal {type(patch).__name__} into Go value of type map[string]interface {{}}")
        return merge_patch(current, patch) if kind == "merge" else strategic_merge_patch(current, patch)

    def _patch(self, res: Resource, req: Request, subresource: str | None = None) -> Response:
        ns, name = req.params["ns"], req.params["name"]
        current = self._out(res, self._stored(res, ns, name))
        self._check_conflict_knob(res, ns, name)
        patched = self._patched(res, req, current)
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise bad_request("the patched object is not a valid object")
        if patched.get("metadata", {}).get("name") != name:
            raise bad_request(f"the name of the object ({patched['metadata'].get('name')}) does not match the name on the URL ({name})")
        new = self._in(res, patched)
        return Response(200, self._out(res, self._write(res, ns, name, new, "PATCH", subresource, self._dry_run(req))))

    def _delete(self, res: Resource, req: Request) -> Response:
        ns, name = req.params["ns"], req.params["name"]
        obj = self._stored(res, ns, name)
        try:
            options = json.loads(req.body) if req.body else {}
        except ValueError:
            raise bad_request("the DeleteOptions body is malformed JSON") from None
        pre = (options or {}).get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise conflict(res, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {obj['metadata']['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise conflict(res, name, f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, ResourceVersion in meta: {obj['metadata']['resourceVersion']}")
        dry = self._dry_run(req)
        if not dry:
            del self._bucket(res, ns)[name]
        if res.delete_returns_object:
            out = copy.deepcopy(obj)
            grace = options.get("gracePeriodSeconds", req.arg("gracePeriodSeconds"))
            grace = int(grace) if grace is not None else int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            out["metadata"]["deletionTimestamp"] = _now_rfc3339(self.now() + grace)
            out["metadata"]["deletionGracePeriodSeconds"] = grace
            if not dry:
                out["metadata"]["resourceVersion"] = self._next_rv()
            return Response(200, self._out(res, out))
        details = _details(res, name)
        details["uid"] = obj["metadata"]["uid"]
        if not dry:
            self._next_rv()
        return Response(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})

    # ------------------------------------------------------------ /scale
    def _scale_of(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        match = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": ",".join(f"{k}={v}" for k, v in match.items())},
        }

    def _get_scale(self, res: Resource, req: Request) -> Response:
        return Response(200, self._scale_of(self._stored(res, req.params["ns"], req.params["name"])))

    def _set_replicas(self, res: Resource, req: Request, ns: str, name: str, scale: Obj, method: str) -> Response:
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(res, name, [FieldError("spec.replicas", "FieldValueInvalid", "must be greater than or equal to 0", replicas)])
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        current = copy.deepcopy(self._stored(res, ns, name))
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        current["spec"]["replicas"] = replicas
        current["metadata"].pop("resourceVersion")
        written = self._write(res, ns, name, current, method, None, self._dry_run(req))
        return Response(200, self._scale_of(written))

    def _replace_scale(self, res: Resource, req: Request) -> Response:
        ns, name = req.params["ns"], req.params["name"]
        body = self._body(req, res)
        self._stored(res, ns, name)
        self._check_conflict_knob(res, ns, name)
        return self._set_replicas(res, req, ns, name, body, "PUT")

    def _patch_scale(self, res: Resource, req: Request) -> Response:
        ns, name = req.params["ns"], req.params["name"]
        scale = self._scale_of(self._stored(res, ns, name))
        self._check_conflict_knob(res, ns, name)
        return self._set_replicas(res, req, ns, name, self._patched(res, req, scale), "PATCH")

    # ===================================================== test-facing API
    def kubeconfig(self, path: str | Path, namespace: str = "default", token: str = "fake-token") -> str:
        """Write a kubeconfig whose current context points at this fake; returns the path."""
        import yaml

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
            "preferences": {},
        }
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return str(p)

    def reset(self) -> None:
        """Forget all objects, the request log, rollouts and knobs (the
        resourceVersion counter keeps counting up, as in a real cluster)."""
        with self.lock:
            self._objects = {r: {} for r in STORES}
            self._rng = random.Random(0)
            self._conflicts.clear()
            self._fail_rules.clear()
            self.rollout_log.clear()
            self.auto_rollout = True
            self.require_auth = True
            self.tokens = None
            self.clear_faults()
            self.clear_log()

    def put(self, kind: str, namespace: str, obj: Obj) -> Obj:
        """Seed (or overwrite) an object directly: no validation, no request log.

        Fills uid/creationTimestamp/resourceVersion (and generation for
        deployments), converts Secret stringData. Returns the stored copy."""
        res = _resolve(kind)
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            name = meta.get("name")
            if not name:
                raise ValueError("put() needs metadata.name")
            old = self._bucket(res, namespace).get(name)
            self._normalize(res, obj, None, None)
            meta["namespace"] = namespace
            meta.setdefault("uid", old["metadata"]["uid"] if old else self._uid())
            meta.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"] if old else _now_rfc3339(self.now()))
            if res.store == "deployments":
                meta.setdefault("generation", 1)
            obj["kind"], obj["apiVersion"] = res.kind, res.api_version
            meta["resourceVersion"] = self._next_rv()
            self._bucket(res, namespace)[name] = obj
            return copy.deepcopy(obj)

    def get_object(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The stored object (a copy), or None. Events come back in core/v1 shape."""
        res = _resolve(kind)
        with self.lock:
            obj = self._objects[res.store].get(namespace, {}).get(name)
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """Stored objects of a kind (copies), sorted by namespace then name."""
        res = _resolve(kind)
        with self.lock:
            buckets = self._objects[res.store]
            return [
                copy.deepcopy(buckets[ns][n])
                for ns in sorted(buckets) if namespace is None or ns == namespace
                for n in sorted(buckets[ns])
            ]

    def delete_object(self, kind: str, namespace: str, name: str) -> bool:
        """Remove an object directly (no log). True if it existed."""
        res = _resolve(kind)
        with self.lock:
            return self._objects[res.store].get(namespace, {}).pop(name, None) is not None

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    def rollouts(self, namespace: str | None = None, name: str | None = None) -> list[Rollout]:
        """Deployment writes over the API that changed spec.template, oldest first."""
        with self.lock:
            return [r for r in self.rollout_log if (namespace is None or r.namespace == namespace) and (name is None or r.name == name)]

    def conflict_next(self, kind: str, name: str, n: int = 1, namespace: str | None = None) -> None:
        """The next `n` PUT/PATCH (incl. /status, /scale) on that object lose a race:
        a concurrent writer bumps its resourceVersion (and the annotation
        `fake/touched`) first, and the request gets 409 Conflict."""
        res = _resolve(kind)
        with self.lock:
            key = (res.store, namespace, name)
            self._conflicts[key] = self._conflicts.get(key, 0) + n

    def fail_next(self, status: int = 500, n: int = 1, path_regex: str | None = None, method: str | None = None) -> None:
        """The next `n` requests (matching `path_regex` / `method`, if given) get a
        `Status` failure with that code (429/503 carry Retry-After: 1)."""
        with self.lock:
            self._fail_rules.append(_FailRule(status, n, path_regex, method.upper() if method else None))

    def api_writes(self, kind: str | None = None, name: str | None = None) -> list[Any]:
        """Logged write requests, optionally for one resource plural and/or object name."""
        regex = None
        if kind is not None:
            res = _resolve(kind)
            regex = rf"/{res.plural}/{re.escape(quote(name))}(/|$)" if name else rf"/{res.plural}(/|$)"
        elif name is not None:
            regex = rf"/{re.escape(quote(name))}(/|$)"
        return self.writes(regex)


def _pod_spec_update_allowed(old: Obj, new: Obj) -> bool:
    def masked(spec: Obj) -> Obj:
        spec = copy.deepcopy(spec)
        for key in ("containers", "initContainers"):
            for c in spec.get(key) or []:
                c.pop("image", None)
        spec.pop("activeDeadlineSeconds", None)
        spec.pop("tolerations", None)
        return spec

    tolerations_ok = all(t in (new.get("tolerations") or []) for t in (old.get("tolerations") or []))
    return masked(old) == masked(new) and tolerations_ok
