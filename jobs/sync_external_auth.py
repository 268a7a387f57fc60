"""sync-external-auth: materialize coderd's GitHub external-auth Secret from two source Secrets.

An Argo CD PreSync hook. The platform's secret pipeline delivers two single-value Secrets (the
OAuth client id and client secret); coderd reads `coder-external-auth-github` with `envFrom`.

Observe (2 source reads + 1 target read, a converged run makes exactly these 3 requests; plus
coderd's Deployment when a roll may be due) -> pure `plan()` -> apply: create or update the
target with optimistic concurrency (a 409 means someone wrote in between: the whole pass reads
again and plans again), record an Event on it, and, when the values changed and CODER_DEPLOYMENT
is set, patch the Deployment's pod template so coderd restarts and reads them. Never deletes
anything. No value is ever logged, put in an Event, or in an annotation: only key names and a
checksum.

Rollout bookkeeping: a change is written together with the annotation `rollout-pending`; it is
removed once the Deployment carries the new checksum. A run killed between the two (SIGTERM,
activeDeadlineSeconds) leaves the marker, and the next run finishes the rollout instead of
declaring the converged Secret a no-op while coderd still runs with the old values.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from jobs import kube, retry
from jobs.context import RunContext
from jobs.errors import EXIT_OK, ConcurrentChange, ConfigError, JobError
from jobs.log import register_secrets, summary
from jobs.plan import Action, Plan, log_plan
from jobs.settings import ExternalAuthSettings

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


class SourcesMissing(JobError):
    """Source Secrets that do not exist *yet*: on a recreated cluster the PreSync hook can run before
    External Secrets has delivered them. Waited for, not refused (malformed content is refused)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"source Secret{'s' if len(names) > 1 else ''} {', '.join(names)} "
                         f"{'do' if len(names) > 1 else 'does'} not exist yet")


def source_value(secret: str, data: Mapping[str, bytes] | None) -> str:
    """The single value a source Secret holds: key `value`, else its only key, with ONE trailing
    newline (`\\n` or `\\r\\n`) trimmed. Raises ConfigError naming the Secret; never shows the value.
    A Secret that does not exist (None) is SourcesMissing instead: it may still come."""
    if data is None:
        raise SourcesMissing([secret])
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


@dataclass(frozen=True, kw_only=True)
class SecretStep(Action):
    """What the plan does to the target Secret, always its first action: the metadata written
    with the values, and the checksums and key names that the log and the Event show."""

    labels: dict[str, str]
    annotations: dict[str, str]
    checksum: str
    previous_checksum: str | None
    changed_keys: tuple[str, ...]

    @property
    def change(self) -> str:
        """create | update | adopt | nothing"""
        return self.kind.removesuffix("-secret")


@dataclass(frozen=True, kw_only=True)
class CreateSecret(SecretStep):
    kind: Literal["create-secret"] = field(default="create-secret", init=False)


@dataclass(frozen=True, kw_only=True)
class UpdateSecret(SecretStep):
    kind: Literal["update-secret"] = field(default="update-secret", init=False)


@dataclass(frozen=True, kw_only=True)
class AdoptSecret(SecretStep):
    """Take over a Secret coder-jobs did not create (--adopt)."""

    kind: Literal["adopt-secret"] = field(default="adopt-secret", init=False)


@dataclass(frozen=True, kw_only=True)
class SecretUnchanged(SecretStep):
    kind: Literal["nothing"] = field(default="nothing", init=False)
    writes: bool = field(default=False, init=False)


@dataclass(frozen=True)
class DeploymentState:
    """coderd's Deployment as observed: does it exist, and which checksum its pod template carries."""

    found: bool
    checksum: str | None = None


@dataclass(frozen=True, kw_only=True)
class RollDeployment(Action):
    """Patch coderd's pod template (unless it already carries the checksum, or the Deployment is
    missing), then clear the rollout-pending marker."""

    kind: Literal["roll-deployment"] = field(default="roll-deployment", init=False)
    deployment: str
    checksum: str
    patch: bool
    found: bool


SecretWrite = CreateSecret | UpdateSecret | AdoptSecret
ExternalAuthAction = SecretWrite | SecretUnchanged | RollDeployment


def secret_step(p: Plan[ExternalAuthAction]) -> SecretStep:
    """The plan's Secret action: `plan()` puts exactly one in every plan."""
    (step,) = p.of_type(SecretStep)
    return step


def rollout_step(p: Plan[ExternalAuthAction]) -> RollDeployment | None:
    return next(iter(p.of_type(RollDeployment)), None)


def rollout_may_be_due(target: TargetState | None, data: Mapping[str, str]) -> bool:
    """Whether the plan may roll coderd, so that observing its Deployment is worth a request."""
    if target is None or ROLLOUT_PENDING_ANNOTATION in target.annotations:
        return True
    return {k: v.encode() for k, v in data.items()} != target.data


def _rollout(deployment: str, namespace: str, digest: str, why: str, state: DeploymentState | None) -> RollDeployment:
    # Not observed (a pure caller): assume it needs the patch.
    found = state is None or state.found
    patch = state is None or (state.found and state.checksum != digest)
    return RollDeployment(target=f"deployment/{namespace}/{deployment}", reason=why, details={"checksum": short(digest)},
                          deployment=deployment, checksum=digest, patch=patch, found=found)


def plan(target: TargetState | None, data: Mapping[str, str], *, namespace: str, name: str, adopt: bool = False,
         deployment: str | None = None, deployment_state: DeploymentState | None = None) -> Plan[ExternalAuthAction]:
    """Decide what to do, from the observed target (and Deployment) alone. Raises ConfigError for a
    target we must not overwrite (exists, not managed by coder-jobs, no --adopt)."""
    digest = checksum(data)
    want = {k: v.encode() for k, v in data.items()}
    ref = f"secret/{namespace}/{name}"
    if target is None:
        labels = dict(MANAGED_LABELS)
        annotations = {CHECKSUM_ANNOTATION: digest}
        if deployment is not None:
            annotations[ROLLOUT_PENDING_ANNOTATION] = digest
        actions: list[ExternalAuthAction] = [CreateSecret(
            target=ref, reason="the target Secret does not exist", details={"keys": sorted(data), "checksum": short(digest)},
            labels=labels, annotations=annotations, checksum=digest, previous_checksum=None, changed_keys=tuple(sorted(data)))]
        if deployment is not None:
            actions.append(_rollout(deployment, namespace, digest, "new external-auth values", deployment_state))
        return Plan(tuple(actions))

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
    if deployment is not None and data_changed:
        annotations[ROLLOUT_PENDING_ANNOTATION] = digest

    step: type[AdoptSecret] | type[UpdateSecret] | type[SecretUnchanged]
    details: dict[str, object] = {"checksum": short(digest)}
    if not target.managed:
        step, reason = AdoptSecret, "--adopt: taking over a Secret that coder-jobs did not create"
    elif data_changed or labels != target.labels or previous != digest:
        what = [f"keys {', '.join(changed)}"] if changed else []
        what += ["labels"] if labels != target.labels else []
        what += ["checksum annotation"] if previous != digest else []
        step, reason = UpdateSecret, "differs: " + ", ".join(what)
    else:
        step, reason = SecretUnchanged, "up to date"
    if step is not SecretUnchanged:
        details.update(changed_keys=list(changed), previous_checksum=short(previous))
    actions = [step(target=ref, reason=reason, details=details, labels=labels, annotations=annotations, checksum=digest,
                    previous_checksum=previous, changed_keys=changed)]
    if deployment is not None and (data_changed or unfinished):
        why = ("new external-auth values" if data_changed
               else "a previous run changed the Secret but did not finish rolling coderd")
        actions.append(_rollout(deployment, namespace, digest, why, deployment_state))
    return Plan(tuple(actions))


def event_for(step: SecretWrite, name: str) -> tuple[str, str, str]:
    """(reason, action, message) of the Event recorded on the target: key names and checksums only."""
    keys = f"changed keys {', '.join(step.changed_keys)}" if step.changed_keys else "values unchanged, metadata updated"
    match step:
        case CreateSecret():
            return ("ExternalAuthSecretCreated", "Create",
                    f"Created Secret {name} with keys {', '.join(step.changed_keys)} (checksum {short(step.checksum)})")
        case AdoptSecret():
            return ("ExternalAuthSecretAdopted", "Adopt",
                    f"coder-jobs took over Secret {name} (--adopt); {keys} (checksum {short(step.checksum)})")
        case UpdateSecret():
            return ("ExternalAuthSecretUpdated", "Update",
                    f"Updated Secret {name}: {keys} (checksum {short(step.previous_checksum)} -> {short(step.checksum)})")
        case _:
            assert_never(step)


# ---------------------------------------------------------------------------- observe


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def read_sources(api: kube.ApiClient, ns: str, settings: ExternalAuthSettings) -> tuple[str, str]:
    """Both source values; every problem with either Secret reported at once (exit 2), unless the
    only problem is that one or both do not exist yet (SourcesMissing: the caller waits)."""
    values: dict[str, str] = {}
    problems: list[str] = []
    missing: list[str] = []
    for name in (settings.external_auth_client_id_secret, settings.external_auth_client_secret_secret):
        secret = kube.read_secret(api, ns, name)
        data = secret.data if secret is not None else None
        raw = [v.decode("utf-8", "replace") for v in (data or {}).values()]
        # Before anything can be logged: the raw values, trimmed ones (register_secrets adds
        # stripped forms) and their base64 (the form in request and response bodies).
        register_secrets(raw + [_b64(v) for v in raw] + [_b64(v.rstrip("\r\n")) for v in raw])
        try:
            values[name] = source_value(f"{ns}/{name}", data)
        except SourcesMissing as exc:
            missing += exc.names
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("cannot read the GitHub OAuth credentials", problems + [
            f"source Secret {m} does not exist" for m in missing])
    if missing:
        raise SourcesMissing(missing)
    return values[settings.external_auth_client_id_secret], values[settings.external_auth_client_secret_secret]


def observe_target(api: kube.ApiClient, ns: str, name: str) -> tuple[TargetState | None, kube.Secret | None]:
    secret = kube.read_secret(api, ns, name)
    if secret is None:
        return None, None
    data = dict(secret.data)
    old = data.get(KEY_CLIENT_SECRET)
    if old:
        old_text = old.decode("utf-8", "replace")
        register_secrets([old_text, _b64(old_text)])  # a previous client secret may still be valid
    meta = secret.metadata
    return TargetState(name, data, dict(meta.labels), dict(meta.annotations), meta.resource_version), secret


def observe_deployment(api: kube.ApiClient, ns: str, name: str) -> DeploymentState:
    dep = kube.read_deployment(api, ns, name)
    if dep is None:
        return DeploymentState(found=False)
    return DeploymentState(found=True, checksum=dep.pod_template_annotations.get(DEPLOYMENT_ANNOTATION))


# ---------------------------------------------------------------------------- apply


def _write_secret(api: kube.ApiClient, ns: str, name: str, step: SecretStep, data: Mapping[str, str],
                  current: kube.Secret | None) -> kube.Secret:
    encoded = {k: _b64(v) for k, v in data.items()}
    if current is None:
        return kube.create_secret(api, ns, kube.new_secret(ns, name, encoded, step.labels, step.annotations))
    return kube.replace_secret(api, ns, kube.with_content(current, data=encoded, labels=step.labels,
                                                          annotations=step.annotations))


def _record_event(api: kube.ApiClient, written: kube.Secret, step: SecretWrite, name: str, log: Any) -> None:
    reason, action, message = event_for(step, name)
    try:
        kube.record_event(api, kube.ObjectRef.of(written.metadata, kind="Secret", api_version="v1"), reason, message, action=action)
    except kube.KubeAPIError as err:  # an Event is a record, not part of converging
        log.warning("could not record an Event on the target Secret", error=err.describe(), reason=reason)


def _roll(api: kube.ApiClient, ns: str, roll: RollDeployment, log: Any) -> None:
    if not roll.found:
        log.warning(f"Deployment {ns}/{roll.deployment} not found; not rolling it. coderd may not be synced yet "
                    "(PreSync on a first install): it reads the Secret when it starts", deployment=roll.deployment)
        return
    if not roll.patch:
        log.info("Deployment already carries the new checksum", deployment=roll.deployment, checksum=short(roll.checksum))
        return
    kube.patch_pod_template_annotations(api, ns, roll.deployment, {DEPLOYMENT_ANNOTATION: roll.checksum})
    log.info("patched the Deployment's pod template; coderd rolls and reads the new values",
             deployment=roll.deployment, checksum=short(roll.checksum))


def _clear_pending(api: kube.ApiClient, ns: str, name: str, secret: kube.Secret | None) -> None:
    """Remove the rollout-pending marker, with resourceVersion. Someone else's write in between
    ends this pass (ConcurrentChange): the next pass reads the Secret again."""
    annotations = dict(secret.metadata.annotations) if secret is not None else {}
    if secret is None or annotations.pop(ROLLOUT_PENDING_ANNOTATION, None) is None:
        return
    try:
        kube.replace_secret(api, ns, kube.with_content(secret, annotations=annotations))
    except kube.KubeConflict:
        raise ConcurrentChange("target Secret changed while clearing the rollout marker") from None
    except kube.KubeNotFound:
        return  # deleted meanwhile: nothing left to clear


def apply(api: kube.ApiClient, ns: str, name: str, p: Plan[ExternalAuthAction], data: Mapping[str, str],
          current: kube.Secret | None, log: Any) -> None:
    """The plan's writes, in order: the Secret, then coderd's rollout. A write that meets someone
    else's (409, or the Secret gone) raises, and the caller observes and plans again."""
    written = current
    for action in p:
        match action:
            case CreateSecret() | UpdateSecret() | AdoptSecret():
                written = _write_secret(api, ns, name, action, data, current)
                log.info(f"{PAST[action.change]} Secret {ns}/{name}", changed_keys=list(action.changed_keys),
                         checksum=short(action.checksum))
                _record_event(api, written, action, name, log)
            case SecretUnchanged():
                pass
            case RollDeployment():
                _roll(api, ns, action, log)
                _clear_pending(api, ns, name, written)
            case _:
                assert_never(action)


def wait_for_sources(api: kube.ApiClient, ns: str, settings: ExternalAuthSettings, log: Any) -> tuple[str, str]:
    """read_sources(), repeated while the only problem is Secrets that do not exist yet, until
    EXTERNAL_AUTH_SOURCE_TIMEOUT: then exit 1 (not converged), so the Job's backoffLimit, the next
    sync or a person can try again; never exit 2, which the chart's podFailurePolicy would end."""
    timeout = settings.external_auth_source_timeout

    def waiting(err: BaseException, attempt: int, wait: float) -> None:
        log.info("waiting for the source Secrets (External Secrets may not have delivered them yet)",
                 missing=getattr(err, "names", []), attempt=attempt, next_check_s=round(wait, 1), timeout_s=timeout)

    try:
        return retry.call(lambda: read_sources(api, ns, settings), retry=lambda e: isinstance(e, SourcesMissing),
                          deadline=timeout, reach_deadline=True, initial=0.5, maximum=10.0, jitter=0.5,
                          on_retry=waiting)
    except SourcesMissing as exc:
        raise JobError(f"{exc} after waiting {timeout:g} s: check that the ExternalSecrets delivering them are "
                       "Ready (kubectl get externalsecret), then run the job again (RUNBOOK section 8)") from None


def converge(api: kube.ApiClient, ns: str, settings: ExternalAuthSettings, ctx: RunContext) -> Plan[ExternalAuthAction]:
    name = settings.external_auth_target_secret
    client_id, client_secret = wait_for_sources(api, ns, settings, ctx.log)
    data = desired_data(settings.external_auth_id, client_id, client_secret)
    adopt = settings.external_auth_adopt

    def one_pass() -> Plan[ExternalAuthAction]:
        target, current = observe_target(api, ns, name)
        deployment = settings.coder_deployment
        state = observe_deployment(api, ns, deployment) if deployment and rollout_may_be_due(target, data) else None
        p = plan(target, data, namespace=ns, name=name, adopt=adopt, deployment=deployment, deployment_state=state)
        log_plan(ctx.log, p, ctx.dry_run)
        if not ctx.dry_run:
            apply(api, ns, name, p, data, current, ctx.log)
        return p

    def log_conflict(err: BaseException, attempt: int, _wait: float) -> None:
        if isinstance(err, kube.KubeAPIError):
            ctx.log.info("the target Secret changed since we read it; reading it again", target=name,
                         status=err.status, reason=err.reason, attempt=attempt)
        else:
            ctx.log.info(f"{err}; reading it again", target=name, attempt=attempt)

    try:
        return retry.call(one_pass, retry=lambda e: isinstance(e, (kube.KubeConflict, kube.KubeNotFound, ConcurrentChange)),
                          attempts=MAX_ATTEMPTS, initial=0.01, maximum=0.05, jitter=0.01, on_retry=log_conflict)
    except (kube.KubeConflict, kube.KubeNotFound, ConcurrentChange):
        raise JobError(f"Secret {ns}/{name} kept changing under us: {MAX_ATTEMPTS} conflicting writes in a row; "
                       "the next run converges") from None


def run(settings: ExternalAuthSettings, ctx: RunContext) -> int:
    ns = kube.current_namespace(settings.pod_namespace)
    api = kube.api_client()
    try:
        p = converge(api, ns, settings, ctx)
    finally:
        api.close()
    step = secret_step(p)
    summary(ctx.log, checked=len(p), changed=p.writes, dry_run=ctx.dry_run, target_action=step.change,
            rollout=rollout_step(p) is not None, checksum=short(step.checksum))
    return EXIT_OK
