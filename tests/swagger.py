"""Checks a logged request/response pair against Coder's own OpenAPI spec.

The spec lives in ../shared/coder-api/swagger.json (never copied here). Known places where
coderd's source and the spec disagree (BEHAVIOR.md, "Spec <-> source disagreements") are
applied explicitly below, each with its reason, rather than loosening the whole check.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

SWAGGER = Path(__file__).resolve().parents[2] / "shared" / "coder-api" / "swagger.json"
SKIP_REASON = f"Coder's swagger.json is not at {SWAGGER} (CI always has ../shared; this machine does not)"

# coderd answers these with 201 where the spec says 200 (BEHAVIOR.md summary table).
_SUCCESS_ALIASES = {201: 200, 200: 201}
# Request bodies the spec does not describe: PATCH /templates/{id} takes UpdateTemplateMeta.
_NO_REQUEST_SCHEMA = {("patch", "/templates/{template}")}
# Fields coderd accepts that this spec version does not list (newer coderd, see issue 2 and
# fakes/coderd_versions.py, which cites where each comes from).
_EXTRA_REQUEST_FIELDS = {("post", "/users/first"): {"setup_token"},
                         ("post", "/organizations/{organization}/templates"): {"template_use_classic_parameter_flow"}}
# Fields newer coderd releases answer that this spec version does not list (fakes/coderd_versions.py).
_NEWER_PROPERTIES = {
    "codersdk.AuthMethods": {"setup_token_required": {"type": "boolean"}},
    "codersdk.Template": {"use_classic_parameter_flow": {"type": "boolean"}},
}
# Definitions the spec gets wrong. codersdk.TransitionStats has no json tags, so a real coderd
# sends `P50`/`P95` (BEHAVIOR.md summary table, seen on a real server).
_DEFINITION_FIXES = {
    "codersdk.TransitionStats": {"type": "object", "properties": {"P50": {"type": "integer"}, "P95": {"type": "integer"}}},
}
# Responses the spec documents with the wrong type. GET /external-auth answers
# codersdk.ListUserExternalAuthResponse, `providers` being the configured ones (BEHAVIOR.md §11),
# not the single ExternalAuthLink the spec names.
_RESPONSE_FIXES = {
    ("get", "/external-auth", 200): {
        "type": "object", "required": ["providers", "links"], "additionalProperties": False,
        "properties": {
            "providers": {"type": "array", "items": {
                "type": "object", "required": ["id"], "additionalProperties": False, "properties": {
                    "id": {"type": "string"}, "type": {"type": "string"}, "device": {"type": "boolean"},
                    "display_name": {"type": "string"}, "display_icon": {"type": "string"},
                    "allow_refresh": {"type": "boolean"}, "allow_validate": {"type": "boolean"}}}},
            "links": {"type": "array", "items": {"$ref": "#/definitions/codersdk.ExternalAuthLink"}},
        },
    },
}


def available() -> bool:
    return SWAGGER.is_file()


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    return json.loads(SWAGGER.read_text())


@lru_cache(maxsize=1)
def _routes() -> list[tuple[re.Pattern[str], str, int]]:
    out = []
    for path in spec()["paths"]:
        regex = "^" + spec()["basePath"] + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"
        literal = sum(1 for seg in path.split("/") if seg and not seg.startswith("{"))
        out.append((re.compile(regex), path, literal))
    return out


def match(path: str) -> str | None:
    """The spec path for a request path; literal segments beat parameters (/users/first vs /users/{user})."""
    hits = [(literal, p) for regex, p, literal in _routes() if regex.match(path)]
    return max(hits)[1] if hits else None


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("uuid", raises=ValueError)
    def _uuid(value: object) -> bool:
        return not isinstance(value, str) or bool(uuid.UUID(value))

    @checker.checks("date-time", raises=ValueError)
    def _datetime(value: object) -> bool:
        return not isinstance(value, str) or bool(datetime.fromisoformat(value.replace("Z", "+00:00")))

    @checker.checks("email", raises=ValueError)
    def _email(value: object) -> bool:
        return not isinstance(value, str) or "@" in value

    return checker


def _nullable(schema: Any) -> Any:
    """Go pointers and zero times serialize as null; swagger 2 cannot say so. Allow null
    for properties, keep everything else (types, formats, enums, required) strict."""
    if isinstance(schema, dict):
        out = {k: _nullable(v) for k, v in schema.items()}
        if "properties" in out:
            out["properties"] = {k: {"anyOf": [v, {"type": "null"}]} for k, v in out["properties"].items()}
        return out
    if isinstance(schema, list):
        return [_nullable(v) for v in schema]
    return schema


@lru_cache(maxsize=1)
def _definitions(strict: bool = True) -> dict[str, Any]:
    merged = {**spec()["definitions"], **_DEFINITION_FIXES}
    for name, extra in _NEWER_PROPERTIES.items():
        merged[name] = {**merged[name], "properties": {**merged[name]["properties"], **extra}}
    defs = _nullable(merged)
    if strict:  # the fake and the jobs may not invent fields the spec does not have
        for d in defs.values():
            if isinstance(d, dict) and "properties" in d:
                d.setdefault("additionalProperties", False)
    return defs


def _validate(instance: Any, schema: dict[str, Any], extra_allowed: set[str] | None = None) -> list[str]:
    root = {**schema, "definitions": _definitions()}
    if extra_allowed and isinstance(instance, dict):
        instance = {k: v for k, v in instance.items() if k not in extra_allowed}
    validator = jsonschema.Draft4Validator(root, format_checker=_format_checker())
    out = []
    for error in validator.iter_errors(instance):
        # Under the null-tolerating anyOf, the useful message is the deepest one.
        while error.context:
            error = max(error.context, key=lambda e: len(e.absolute_path))
        out.append(f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message[:200]}")
    return out


def check_record(record: Any) -> list[str]:
    """Problems with one logged exchange; [] when it conforms."""
    path = match(record.path)
    if path is None:
        if record.path.startswith(spec()["basePath"]) and record.status != 404:
            return [f"{record.method} {record.path}: not in the spec"]
        return []  # /healthz, or coderd's 404 for an unknown route
    method = record.method.lower()
    operation = spec()["paths"][path].get(method)
    if operation is None:
        return [f"{record.method} {path}: method not in the spec"]
    where = f"{record.method} {path}"
    problems: list[str] = []

    body_params = [p for p in operation.get("parameters", []) if p.get("in") == "body"]
    request_json = record.json()
    from_jobs = record.headers.get("user-agent", "").startswith("coder-jobs/")  # tests may send bad bodies on purpose
    if from_jobs and body_params and (method, path) not in _NO_REQUEST_SCHEMA and request_json is not None:
        extra = _EXTRA_REQUEST_FIELDS.get((method, path))
        problems += [f"{where} request {p}" for p in _validate(request_json, body_params[0]["schema"], extra)]

    if record.route == "fault" or record.status in (204, 304):
        return problems  # injected faults are not coderd's answers; 204/304 have no body
    response = record.response
    if not isinstance(response, (dict, list)):
        return problems  # text answers (healthz, CSRF 400, rate limiter 428) are not JSON
    if record.status >= 400:
        schema = {"$ref": "#/definitions/codersdk.Response"}
    else:
        responses = operation.get("responses", {})
        documented = responses.get(str(record.status)) or responses.get(str(_SUCCESS_ALIASES.get(record.status, 0)))
        if documented is None:
            return problems + [f"{where}: status {record.status} is not documented"]
        schema = _RESPONSE_FIXES.get((method, path, record.status)) or documented.get("schema")
        if schema is None:
            return problems
    problems += [f"{where} response {record.status} {p}" for p in _validate(response, schema)]
    return problems
