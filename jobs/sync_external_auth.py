"""sync-external-auth: materialize coderd's GitHub external-auth Secret from two source Secrets.

An Argo CD PreSync hook. The platform's secret pipeline delivers two single-value Secrets (the
OAuth client id and client secret); coderd reads `coder-external-auth-github` with `envFrom`.

Observe (2 source reads + 1 target read; a converged run makes exactly these 3 requests) ->
pure `plan()` -> apply: create or update the target with optimistic concurrency (a 409 means
someone wrote in between: read again, plan again), record an Event on it, and, when the values
changed and CODER_DEPLOYMENT is set, patch the Deployment's pod template so coderd restarts
and reads them. Never deletes anything. No value is ever logged, put in an Event, or in an
annotation: only key names and a checksum.

Rollout bookkeeping: a change is written together with the annotation `rollout-pending`; it is
removed once the Deployment carries the new checksum. A run killed between the two (SIGTERM,
activeDeadlineSeconds) leaves the marker, and the next run finishes the rollout instead of
declaring the converged Secret a no-op while coderd still runs with the old values.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from jobs.context import RunContext
from jobs.errors import EXIT_OK, ConfigError, JobError
from jobs.log import register_secrets, summary
from jobs.plan import Action, log_plan
from jobs.settings import ExternalAuthSettings

if TYPE_CHECKING:  # the kubernetes package is imported only when the job runs
    from kubernetes.client import ApiClient, V1Secret

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_LABELS = {MANAGED_BY_LABEL: "coder-jobs", "app.kubernetes.io/part-of": "coder"}
CHECKSUM_ANNOTATION = "coder-jobs.ameide.io/checksum"
ROLLOUT_PENDING_ANNOTATION = "coder-jobs.ameide.io/rollout-pending"
DEPLOYMENT_ANNOTATION = "coder-jobs.ameide.io/external-auth-checksum"

KEY_ID = "CODER_EXTERNAL_AUTH_0_ID"
KEY_TYPE = "CODER_EXTERNAL_AUTH_0_TYPE"
KEY_CLIENT_ID = "CODER_EXTERNAL_AUTH_0_CLIENT_ID"
KEY_CLIENT_SECRET = "CODER_EXTERNAL_AUTH_0_CLIENT_SECRET"
PROVIDER_TYPE = "github"
SOURCE_KEY = "value"

PAST = {"create": "created", "update": "updated", "adopt": "adopted"}
MAX_ATTEMPTS = 5  # write attempts on the target before giving up on a busy object


# ---------------------------------------------------------------------------- pure parts


def source_value(secret: str, data: Mapping[str, bytes] | None) -> str:
    """The single value a source Secret holds: key `value`, else its only key, with ONE trailing
    newline (`\\n` or `\\r\\n`) trimmed. Raises ConfigError naming the Secret; never shows the value."""
    if data is None:
        raise ConfigError(f"source Secret {secret} does not exist")
    if SOURCE_KEY in data:
        key = SOURCE_KEY
    elif len(data) == 1:
        (key,) = data
    elif not data:
        raise ConfigError(f"source Secret {secret} has no data (expected one key, e.g. `{SOURCE_KEY}`)")
    else:
        raise ConfigError(f"source Secret {secret} is ambiguous: keys {', '.join(sorted(data))} and none is "
                          f"`{SOURCE_KEY}` (expected a single key, or a key named `{SOURCE_KEY}`)")
    try:
        text = data[key].decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"source Secret {secret}: key `{key}` is not UTF-8 text") from None
    text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if not text.strip():
        raise ConfigError(f"source Secret {secret}: key `{key}` is empty")
    if "\n" in text or "\r" in text:
        raise ConfigError(f"source Secret {secret}: key `{key}` holds several lines (only one trailing newline is trimmed)")
    if text != text.strip():
        raise ConfigError(f"source Secret {secret}: key `{key}` starts or ends with whitespace")
    return text


def desired_data(provider_id: str, client_id: str, client_secret: str) -> dict[str, str]:
    return {KEY_ID: provider_id, KEY_TYPE: PROVIDER_TYPE, KEY_CLIENT_ID: client_id, KEY_CLIENT_SECRET: client_secret}


def checksum(data: Mapping[str, str]) -> str:
    """sha256 over the sorted `key=value` lines: what coderd reads, as a hash.

    A plain (unsalted) hash is stable across re-creations of the Secret, so the Deployment
    annotation only changes when the values do. Hashing does not hide a guessable value, but
    the input includes the GitHub OAuth client secret (GitHub generates 40 hex characters,
    160 bits), so the checksum cannot be brute-forced into it. Values cannot contain newlines
    (`source_value` rejects them), so the encoding is unambiguous."""
    canonical = "".join(f"{k}={data[k]}\n" for k in sorted(data))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def short(digest: str | None) -> str | None:
    """A checksum prefix for logs and Events."""
    return digest[:19] if digest else None  # "sha256:" + 12 hex


@dataclass(frozen=True)
class TargetState:
    name: str
    data: dict[str, bytes]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    resource_version: str = ""

    @property
    def managed(self) -> bool:
        return self.labels.get(MANAGED_BY_LABEL) == MANAGED_LABELS[MANAGED_BY_LABEL]


@dataclass(frozen=True)
class Plan:
    secret: str  # "create" | "update" | "adopt" | "nothing"
    rollout: bool  # patch the Deployment (and then clear the rollout-pending marker)
    data_changed: bool
    changed_keys: tuple[str, ...]
    labels: dict[str, str]
    annotations: dict[str, str]
    checksum: str
    previous_checksum: str | None
    actions: list[Action]

    @property
    def writes_secret(self) -> bool:
        return self.secret != "nothing"


def plan(target: TargetState | None, data: Mapping[str, str], *, namespace: str, name: str,
         adopt: bool = False, deployment: str | None = None) -> Plan:
    """Decide what to do, from the observed target alone. Raises ConfigError for a target we must
    not overwrite (exists, not managed by coder-jobs, no --adopt)."""
    digest = checksum(data)
    want = {k: v.encode() for k, v in data.items()}
    ref = f"secret/{namespace}/{name}"
    if target is None:
        labels = dict(MANAGED_LABELS)
        annotations = {CHECKSUM_ANNOTATION: digest}
        rollout = deployment is not None
        if rollout:
            annotations[ROLLOUT_PENDING_ANNOTATION] = digest
        actions = [Action("create-secret", ref, "the target Secret does not exist",
                          {"keys": sorted(data), "checksum": short(digest)})]
        if rollout:
            actions.append(Action("roll-deployment", f"deployment/{namespace}/{deployment}",
                                  "new external-auth values", {"checksum": short(digest)}))
        return Plan("create", rollout, True, tuple(sorted(data)), labels, annotations, digest, None, actions)

    if not target.managed and not adopt:
        owner = target.labels.get(MANAGED_BY_LABEL)
        why = f"its label {MANAGED_BY_LABEL} is {owner!r}" if owner else f"it has no {MANAGED_BY_LABEL} label"
        raise ConfigError(
            f"target Secret {namespace}/{name} exists but is not managed by coder-jobs ({why}); "
            f"not overwriting it. Rerun with --adopt to take it over, or point EXTERNAL_AUTH_TARGET_SECRET elsewhere")

    changed = tuple(sorted(k for k in set(want) | set(target.data) if want.get(k) != target.data.get(k)))
    data_changed = bool(changed)
    labels = {**target.labels, **MANAGED_LABELS}
    annotations = {**target.annotations, CHECKSUM_ANNOTATION: digest}
    previous = target.annotations.get(CHECKSUM_ANNOTATION)
    # A pending marker is only acted on when there is a Deployment to roll; without one it is left alone.
    unfinished = deployment is not None and ROLLOUT_PENDING_ANNOTATION in target.annotations
    rollout = deployment is not None and (data_changed or unfinished)
    if deployment is not None and data_changed:
        annotations[ROLLOUT_PENDING_ANNOTATION] = digest

    if not target.managed:
        kind, reason = "adopt", "--adopt: taking over a Secret that coder-jobs did not create"
    elif data_changed or labels != target.labels or previous != digest:
        kind = "update"
        what = [f"keys {', '.join(changed)}"] if changed else []
        what += ["labels"] if labels != target.labels else []
        what += ["checksum annotation"] if previous != digest else []
        reason = "differs: " + ", ".join(what)
    else:
        kind, reason = "nothing", "up to date"

    actions: list[Action] = []
    details: dict[str, Any] = {"checksum": short(digest)}
    if kind == "nothing":
        actions.append(Action("nothing", ref, reason, details))
    else:
        details.update(changed_keys=list(changed), previous_checksum=short(previous))
        actions.append(Action(f"{kind}-secret", ref, reason, details))
    if rollout:
        why = "new external-auth values" if data_changed else "a previous run changed the Secret but did not finish rolling coderd"
        actions.append(Action("roll-deployment", f"deployment/{namespace}/{deployment}", why, {"checksum": short(digest)}))
    return Plan(kind, rollout, data_changed, changed, labels, annotations, digest, previous, actions)


def event_for(p: Plan, name: str) -> tuple[str, str, str]:
    """(reason, action, message) of the Event recorded on the target: key names and checksums only."""
    if p.secret == "create":
        return ("ExternalAuthSecretCreated", "Create",
                f"Created Secret {name} with keys {', '.join(p.changed_keys)} (checksum {short(p.checksum)})")
    keys = f"changed keys {', '.join(p.changed_keys)}" if p.changed_keys else "values unchanged, metadata updated"
    if p.secret == "adopt":
        return ("ExternalAuthSecretAdopted", "Adopt",
                f"coder-jobs took over Secret {name} (--adopt); {keys} (checksum {short(p.checksum)})")
    return ("ExternalAuthSecretUpdated", "Update",
            f"Updated Secret {name}: {keys} (checksum {short(p.previous_checksum)} -> {short(p.checksum)})")


# ---------------------------------------------------------------------------- observe


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def read_sources(api: "ApiClient", ns: str, settings: ExternalAuthSettings) -> tuple[str, str]:
    """Both source values; every problem with either Secret reported at once (exit 2)."""
    from jobs import kube

    values: dict[str, str] = {}
    problems: list[str] = []
    for name in (settings.external_auth_client_id_secret, settings.external_auth_client_secret_secret):
        secret = kube.read_secret(api, ns, name)
        data = kube.secret_data(secret) if secret is not None else None
        raw = [v.decode("utf-8", "replace") for v in (data or {}).values()]
        # Before anything can be logged: the raw values, trimmed ones (register_secrets adds
        # stripped forms) and their base64 (the form in request and response bodies).
        register_secrets(raw + [_b64(v) for v in raw] + [_b64(v.rstrip("\r\n")) for v in raw])
        try:
            values[name] = source_value(f"{ns}/{name}", data)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("cannot read the GitHub OAuth credentials", problems)
    return values[settings.external_auth_client_id_secret], values[settings.external_auth_client_secret_secret]


def observe_target(api: "ApiClient", ns: str, name: str) -> tuple[TargetState | None, "V1Secret | None"]:
    from jobs import kube

    secret = kube.read_secret(api, ns, name)
    if secret is None:
        return None, None
    data = kube.secret_data(secret)
    old = data.get(KEY_CLIENT_SECRET)
    if old:
        old_text = old.decode("utf-8", "replace")
        register_secrets([old_text, _b64(old_text)])  # a previous client secret may still be valid
    meta = secret.metadata
    state = TargetState(name, data, dict(meta.labels or {}), dict(meta.annotations or {}), meta.resource_version or "")
    return state, secret


# ---------------------------------------------------------------------------- apply


def _write_secret(api: "ApiClient", ns: str, name: str, p: Plan, data: Mapping[str, str], current: "V1Secret | None") -> "V1Secret":
    from kubernetes import client as k8s

    from jobs import kube

    encoded = {k: _b64(v) for k, v in data.items()}
    if current is None:
        body = k8s.V1Secret(api_version="v1", kind="Secret", type="Opaque", data=encoded,
                            metadata=k8s.V1ObjectMeta(name=name, namespace=ns, labels=p.labels, annotations=p.annotations))
        return kube.create_secret(api, ns, body)
    # Start from what we read, so ownerReferences, finalizers and its type survive; its
    # resourceVersion makes the PUT conditional.
    current.data = encoded
    current.string_data = None
    current.metadata.labels = p.labels
    current.metadata.annotations = p.annotations
    return kube.replace_secret(api, ns, current)


def _record_event(api: "ApiClient", written: "V1Secret", p: Plan, name: str, log: Any) -> None:
    from jobs import kube

    reason, action, message = event_for(p, name)
    try:
        kube.record_event(api, kube.ObjectRef.of(written, kind="Secret", api_version="v1"), reason, message, action=action)
    except kube.KubeAPIError as err:  # an Event is a record, not part of converging
        log.warning("could not record an Event on the target Secret", error=err.describe(), reason=reason)


def _roll(api: "ApiClient", ns: str, deployment: str, digest: str, log: Any) -> None:
    from jobs import kube

    dep = kube.read_deployment(api, ns, deployment)
    if dep is None:
        log.warning(f"Deployment {ns}/{deployment} not found; not rolling it. coderd may not be synced yet "
                    "(PreSync on a first install): it reads the Secret when it starts", deployment=deployment)
        return
    if kube.pod_template_annotations(dep).get(DEPLOYMENT_ANNOTATION) == digest:
        log.info("Deployment already carries the new checksum", deployment=deployment, checksum=short(digest))
        return
    kube.patch_pod_template_annotations(api, ns, deployment, {DEPLOYMENT_ANNOTATION: digest})
    log.info("patched the Deployment's pod template; coderd rolls and reads the new values",
             deployment=deployment, checksum=short(digest))


def _clear_pending(api: "ApiClient", ns: str, name: str, secret: "V1Secret | None", digest: str, log: Any) -> None:
    """Remove the rollout-pending marker we set, with resourceVersion; on 409 read again."""
    from jobs import kube

    for _ in range(MAX_ATTEMPTS):
        if secret is None:
            secret = kube.read_secret(api, ns, name)
        annotations = dict((secret.metadata.annotations if secret is not None else None) or {})
        if secret is None or ROLLOUT_PENDING_ANNOTATION not in annotations:
            return
        if annotations.get(CHECKSUM_ANNOTATION) != digest:
            return  # someone wrote other values meanwhile; their run rolls for them
        annotations.pop(ROLLOUT_PENDING_ANNOTATION)
        secret.metadata.annotations = annotations
        try:
            kube.replace_secret(api, ns, secret)
            return
        except kube.KubeConflict:
            log.info("target Secret changed while clearing the rollout marker; reading it again", target=name)
            secret = None
        except kube.KubeNotFound:
            return
    raise JobError(f"Secret {ns}/{name}: could not clear {ROLLOUT_PENDING_ANNOTATION} after {MAX_ATTEMPTS} conflicts; "
                   "the next run finishes the rollout")


def converge(api: "ApiClient", ns: str, settings: ExternalAuthSettings, ctx: RunContext) -> Plan:
    from jobs import kube

    name = settings.external_auth_target_secret
    client_id, client_secret = read_sources(api, ns, settings)
    data = desired_data(settings.external_auth_id, client_id, client_secret)
    adopt = bool(ctx.flags.get("adopt"))
    for attempt in range(1, MAX_ATTEMPTS + 1):
        target, current = observe_target(api, ns, name)
        p = plan(target, data, namespace=ns, name=name, adopt=adopt, deployment=settings.coder_deployment)
        log_plan(ctx.log, p.actions, ctx.dry_run)
        if ctx.dry_run:
            return p
        written = current
        if p.writes_secret:
            try:
                written = _write_secret(api, ns, name, p, data, current)
            except (kube.KubeConflict, kube.KubeNotFound) as err:
                ctx.log.info("the target Secret changed since we read it; reading it again", target=name,
                             status=err.status, reason=err.reason, attempt=attempt)
                continue
            ctx.log.info(f"{PAST[p.secret]} Secret {ns}/{name}", changed_keys=list(p.changed_keys), checksum=short(p.checksum))
            _record_event(api, written, p, name, ctx.log)
        if p.rollout and settings.coder_deployment:
            _roll(api, ns, settings.coder_deployment, p.checksum, ctx.log)
            _clear_pending(api, ns, name, written, p.checksum, ctx.log)
        return p
    raise JobError(f"Secret {ns}/{name} kept changing under us: {MAX_ATTEMPTS} conflicting writes in a row; "
                   "the next run converges")


def run(settings: ExternalAuthSettings, ctx: RunContext) -> int:
    from jobs import kube

    ns = kube.current_namespace(settings.pod_namespace)
    api = kube.api_client()
    try:
        p = converge(api, ns, settings, ctx)
    finally:
        api.close()
    summary(ctx.log, checked=len(p.actions), changed=sum(a.writes for a in p.actions), dry_run=ctx.dry_run,
            target_action=p.secret, rollout=p.rollout, checksum=short(p.checksum))
    return EXIT_OK
