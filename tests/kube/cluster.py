"""What tests see of the real Kubernetes API server: seed and read objects, hand out
kubeconfigs (as cluster-admin or as a ServiceAccount), count requests, inject faults.

Seeding and reading go straight to the server as cluster-admin; the jobs' kubeconfigs
point at the fault proxy, whose request log is what `requests()` / `writes()` show. The
server's own audit log is `audit()`.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.kube import server as kube_server
from tests.kube.proxy import FaultProxy, expired_continue_status
from tests.kube.server import ADMIN_USER, JOB_USER, KubeAPIServer

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    plural: str
    group_version: str  # "v1", "apps/v1"
    namespaced: bool = True

    def collection(self, namespace: str | None) -> str:
        prefix = f"/api/{self.group_version}" if "/" not in self.group_version else f"/apis/{self.group_version}"
        return f"{prefix}/namespaces/{namespace}/{self.plural}" if self.namespaced and namespace else f"{prefix}/{self.plural}"


KINDS = {
    "secret": Kind("secrets", "v1"),
    "configmap": Kind("configmaps", "v1"),
    "event": Kind("events", "v1"),
    "resourcequota": Kind("resourcequotas", "v1"),
    "limitrange": Kind("limitranges", "v1"),
    "pod": Kind("pods", "v1"),
    "serviceaccount": Kind("serviceaccounts", "v1"),
    "deployment": Kind("deployments", "apps/v1"),
    "job": Kind("jobs", "batch/v1"),
    "cronjob": Kind("cronjobs", "batch/v1"),
    "role": Kind("roles", "rbac.authorization.k8s.io/v1"),
    "rolebinding": Kind("rolebindings", "rbac.authorization.k8s.io/v1"),
    "networkpolicy": Kind("networkpolicies", "networking.k8s.io/v1"),
    "namespace": Kind("namespaces", "v1", namespaced=False),
}
# What `reset()` empties between tests, in an order that deletes dependants first.
RESET_KINDS = ("pod", "deployment", "job", "cronjob", "secret", "configmap", "event", "resourcequota",
               "limitrange", "role", "rolebinding", "networkpolicy")
TEST_NAMESPACES = ("coder", "coder-workspaces")
CUSTOM_COLLECTIONS = ("/apis/external-secrets.io/v1/namespaces/{ns}/externalsecrets",
                      "/apis/cilium.io/v2/namespaces/{ns}/ciliumnetworkpolicies")
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}


def kind_of(name: str) -> Kind:
    key = name.lower().removesuffix("s") if name.lower() not in KINDS else name.lower()
    key = {"networkpolicie": "networkpolicy"}.get(key, key)
    return KINDS[key]


class KubeError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text}
        self.status = response.status_code
        self.reason = body.get("reason", "")
        self.body = body
        super().__init__(f"HTTP {response.status_code} {self.reason}: {body.get('message', '')}")


class Cluster:
    def __init__(self, server: KubeAPIServer) -> None:
        self.server = server
        self.proxy = FaultProxy(server.port, server.ca).start()
        self.http = server.admin()
        self.namespaces: set[str] = set()
        self._audit_mark = server.audit_mark()

    # ------------------------------------------------------------------ state

    def reset(self) -> Cluster:
        """A fresh API state for the next test: no faults, an empty log, and the test
        namespaces present and empty (there is no namespace controller to delete them)."""
        self.proxy.clear_faults()
        self.proxy.clear_log()
        for ns in sorted(self.namespaces | set(TEST_NAMESPACES)):
            self._plain_namespace(ns)
            self._empty(ns)
        self._audit_mark = self.server.audit_mark()
        return self

    def _empty(self, ns: str) -> None:
        # Background propagation: the default for Jobs (orphan) adds a finalizer only the garbage
        # collector removes, and no garbage collector runs here.
        params = {"gracePeriodSeconds": "0", "propagationPolicy": "Background"}
        for kind in RESET_KINDS:
            self._check(self.http.delete(KINDS[kind].collection(ns), params=params))
        for path in CUSTOM_COLLECTIONS:
            r = self.http.delete(path.format(ns=ns), params=params)
            if r.status_code != 404:  # the CRD is not installed
                self._check(r)
        for sa in self.objects("serviceaccount", ns):
            if sa["metadata"]["name"] != "default":
                self.delete_object("serviceaccount", ns, sa["metadata"]["name"])

    def drop_namespaces(self, keep: tuple[str, ...] = ()) -> None:
        """Delete every namespace the tests made (but `keep`), contents first. Namespace deletion
        waits for the namespace controller, which is not running: with the contents gone, removing
        the `kubernetes` finalizer ourselves is what that controller would do last."""
        for ns in sorted(self.namespaces | set(TEST_NAMESPACES)):
            if ns in keep or self.get_object("namespace", None, ns) is None:
                continue
            self._empty(ns)
            self.delete_object("namespace", None, ns)
            self._check(self.http.put(f"/api/v1/namespaces/{ns}/finalize", json={
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "spec": {"finalizers": []}}))
            self.namespaces.discard(ns)

    def _plain_namespace(self, name: str) -> None:
        """The namespace, without the Pod Security labels an install test may have left on it."""
        ns = self.ensure_namespace(name)
        labels = ns["metadata"].get("labels") or {}
        if any(k.startswith("pod-security.kubernetes.io/") for k in labels):
            ns["metadata"]["labels"] = {k: v for k, v in labels.items() if not k.startswith("pod-security.kubernetes.io/")}
            self._check(self.http.put(f"/api/v1/namespaces/{name}", json=ns))

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> Obj:
        """The namespace, with its `default` ServiceAccount (a controller's job on a real cluster)."""
        self.namespaces.add(name)
        ns = self.get_object("namespace", None, name)
        if ns is None:
            ns = self.create("namespace", None, {"metadata": {"name": name, "labels": dict(labels or {})}})
        elif labels and any(ns["metadata"].get("labels", {}).get(k) != v for k, v in labels.items()):
            ns["metadata"].setdefault("labels", {}).update(labels)
            ns = self._check(self.http.put(f"/api/v1/namespaces/{name}", json=ns)).json()
        if self.get_object("serviceaccount", name, "default") is None:
            try:
                self.create("serviceaccount", name, {"metadata": {"name": "default"}})
            except KubeError as exc:
                if exc.status != 409:  # on the node, the ServiceAccount controller may be first
                    raise
        return ns

    # ------------------------------------------------------------------ objects (as cluster-admin)

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise KubeError(response)
        return response

    def _path(self, kind: str, namespace: str | None, name: str | None = None) -> str:
        base = kind_of(kind).collection(namespace)
        return f"{base}/{name}" if name else base

    def create(self, kind: str, namespace: str | None, obj: Obj) -> Obj:
        return self._check(self.http.post(self._path(kind, namespace), json=self._typed(kind, obj))).json()

    def put(self, kind: str, namespace: str | None, obj: Obj) -> Obj:
        """Create the object, or replace it whole (whatever the server holds now). A `status`
        in `obj` is written through the status subresource afterwards (the main resource
        ignores it; on a cluster a controller would write it, e.g. a ResourceQuota's usage)."""
        if namespace:
            self.ensure_namespace(namespace)
        name = obj["metadata"]["name"]
        current = self.get_object(kind, namespace, name)
        if current is None:
            written = self.create(kind, namespace, obj)
        else:
            body = self._typed(kind, obj)
            body["metadata"] = {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}
            written = self._check(self.http.put(self._path(kind, namespace, name), json=body)).json()
        if "status" in obj:
            written["status"] = obj["status"]
            written = self._check(self.http.put(self._path(kind, namespace, name) + "/status", json=written)).json()
        return written

    def patch(self, kind: str, namespace: str | None, name: str, patch: Obj) -> Obj:
        return self._check(self.http.patch(self._path(kind, namespace, name), json=patch,
                                           headers={"Content-Type": "application/merge-patch+json"})).json()

    def get_object(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        r = self.http.get(self._path(kind, namespace, name))
        return None if r.status_code == 404 else self._check(r).json()

    def delete_object(self, kind: str, namespace: str | None, name: str) -> None:
        r = self.http.delete(self._path(kind, namespace, name),
                             params={"gracePeriodSeconds": "0", "propagationPolicy": "Background"})
        if r.status_code != 404:
            self._check(r)

    def objects(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else {}
        return self._check(self.http.get(self._path(kind, namespace), params=params)).json()["items"]

    def _typed(self, kind: str, obj: Obj) -> Obj:
        k = kind_of(kind)
        kind_name = {"networkpolicies": "NetworkPolicy", "resourcequotas": "ResourceQuota",
                     "limitranges": "LimitRange", "configmaps": "ConfigMap", "serviceaccounts": "ServiceAccount",
                     "cronjobs": "CronJob", "rolebindings": "RoleBinding"}.get(k.plural, k.plural[:-1].capitalize())
        return {"apiVersion": k.group_version, "kind": kind_name, **obj}

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        s = self.get_object("secret", namespace, name)
        return None if s is None else {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}

    def rollouts(self, namespace: str | None = None, name: str | None = None) -> list[tuple[str, str, int]]:
        """Changes of each Deployment's spec since it was created (its generation counts them:
        without a controller nothing else moves it); the jobs only ever change the pod template."""
        out = []
        for ns in ([namespace] if namespace else sorted(self.namespaces)):
            for d in self.objects("deployment", ns):
                if name is None or d["metadata"]["name"] == name:
                    out += [(ns, d["metadata"]["name"], g) for g in range(2, d["metadata"]["generation"] + 1)]
        return out

    # ------------------------------------------------------------------ identities

    def wait_established(self, crd_files: list[Path], deadline_s: float = 120) -> None:
        """Until the CRD of each file is Established. (`kubectl wait --for=condition=Established`
        fails at once on a CRD whose status has no conditions yet, instead of waiting.)"""
        deadline = time.monotonic() + deadline_s  # a hang guard
        for f in crd_files:
            name = yaml.safe_load(f.read_text())["metadata"]["name"]
            while True:
                crd = self.http.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}").json()
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                assert time.monotonic() < deadline, f"CRD {name} not Established after {deadline_s} s"
                time.sleep(0.2)

    def token_for(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A bound token of that ServiceAccount (the TokenRequest API, as the kubelet gets one)."""
        r = self._check(self.http.post(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": seconds}}))
        return r.json()["status"]["token"]

    def kubeconfig(self, path: Path | str, namespace: str = "default", token: str | None = None,
                   direct: bool = False) -> str:
        """A kubeconfig file through the fault proxy (or `direct` to the server, over TLS), as
        the jobs' cluster-admin identity (`JOB_USER`, so the audit log tells its requests from
        the test's own) unless a `token` is given."""
        server = self.server.url if direct else self.proxy.url
        cluster: Obj = {"server": server}
        if direct:
            cluster["certificate-authority"] = self.server.ca
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": "test", "user": {"token": token or self.server.job_token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
        }
        Path(path).write_text(yaml.safe_dump(config))
        return str(path)

    # ------------------------------------------------------------------ request logs and faults

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def version(self) -> str:
        """What the server says it is (GET /version)."""
        return self._check(self.http.get("/version")).json()["gitVersion"]

    @property
    def faults(self):
        return self.proxy.faults

    @property
    def log(self):
        return self.proxy.log

    def requests(self, method: str | None = None, path_regex: str | None = None):
        return self.proxy.requests(method, path_regex)

    def writes(self, path_regex: str | None = None):
        return self.proxy.writes(path_regex)

    def clear_log(self) -> None:
        self.proxy.clear_log()
        self._audit_mark = self.server.audit_mark()

    def clear_faults(self) -> None:
        self.proxy.clear_faults()

    def fail_next(self, status: int = 500, n: int = 1, path_regex: str | None = None, method: str | None = None,
                  query_regex: str | None = None, body=None) -> None:
        self.proxy.fail_next(status, n, path_regex, method, query_regex, body)

    def expire_continue_next(self, n: int = 1, path_regex: str | None = None) -> None:
        """The next `n` list requests that carry a `continue` token get the API server's 410
        Expired (as when etcd compacted past the token between two pages)."""
        self.proxy.fail_next(410, n, path_regex, "GET", r"(^|&)continue=", expired_continue_status)

    def random_errors(self, rate: float, seed: int = 0, statuses: tuple[int, ...] = (500, 502, 503, 504)) -> None:
        self.proxy.random_errors(rate, seed, statuses)

    def down_for_requests(self, refuse: int = 0, unavailable: int = 0) -> None:
        self.proxy.down_for_requests(refuse, unavailable)

    def conflict_next(self, kind: str, name: str, n: int = 1, namespace: str | None = None) -> None:
        """The next `n` updates (PUT/PATCH) of that object race a concurrent writer: just
        before each is forwarded, another client changes the object (annotation
        `test/touched`), so an update that carries the resourceVersion it read gets the
        real server's 409 Conflict."""
        path = re.compile(rf"/{re.escape(kind_of(kind).plural)}/{re.escape(name)}$")
        left = [n]

        def race(request) -> None:
            if left[0] > 0 and request.method in ("PUT", "PATCH") and path.search(request.path):
                ns = namespace or request.path.split("/namespaces/")[1].split("/")[0]
                left[0] -= 1
                self.patch(kind, ns, name, {"metadata": {"annotations": {"test/touched": str(n - left[0])}}})
            return None

        self.proxy.before_forward.append(race)

    def audit(self, user: str | None = None) -> list[Obj]:
        """The server's audit events since the last reset/clear_log, optionally for one user."""
        events = self.server.audit(self._audit_mark)
        return [e for e in events if user is None or e["user"]["username"] == user]

    @staticmethod
    def service_account_user(namespace: str, name: str) -> str:
        return f"system:serviceaccount:{namespace}:{name}"


JOBS = JOB_USER  # the user a default kubeconfig authenticates as (for `audit(JOBS)`)
ADMIN = ADMIN_USER  # the user seeding and reading goes through


@contextmanager
def running_cluster(announce: Callable[[str], None] | None = lambda line: print(line, flush=True),
                    only: tuple[str, ...] | None = None) -> Iterator[Cluster]:
    """For scripts (the demo, benchmarks): build if needed (saying so first; `only`: just these
    build steps), start the real server and a fault proxy, yield a reset Cluster, and stop
    everything afterwards."""
    if kube_server.needs_build(only) and announce:
        announce("building the real kube-apiserver (first run only, a few minutes)")
    kube_server.build(only)
    srv = KubeAPIServer().start()
    try:
        cluster = Cluster(srv)
        try:
            yield cluster.reset()
        finally:
            cluster.proxy.stop()
            cluster.http.close()
    finally:
        srv.stop()
