"""What coderd's answers mean. Its texts are matched here and nowhere else (tests/test_structure.py):
the client, its session and the jobs ask these predicates instead."""

from __future__ import annotations

import re
from typing import Any

import httpx

from jobs.errors import CoderAPIError

_SIGNED_OUT = "You are signed out or your session has expired"
_DB_OUTAGE = "An internal error occurred"
_NOT_CONFIGURED = re.compile(r'external auth provider "([^"]+)" is not configured')
# Two identical uploads at once could both pass coderd's dedup check; the second insert then hit
# the files table's unique (hash, created_by) index and answered 500 (coder/coder, fixed mid-2025;
# BEHAVIOR.md §12.3).
_UPLOAD_RACE = "files_hash_created_by_key"


def error_from_response(request: httpx.Request, response: httpx.Response) -> CoderAPIError:
    """coderd's error body (message, detail, validations) as an exception naming the request."""
    message = detail = ""
    validations: list[dict[str, Any]] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("message") or "")
        detail = str(body.get("detail") or "")
        validations = [v for v in body.get("validations") or [] if isinstance(v, dict)]
    elif response.text:
        message = response.text.strip()[:500]
    return CoderAPIError(request.method, request.url.path, response.status_code, message, detail, validations)


def coderd_said(request: httpx.Request, response: httpx.Response) -> str:
    """coderd's own message for an error answer, for a sentence of ours to quote."""
    return error_from_response(request, response).message or f"HTTP {response.status_code}"


def is_signed_out(response: httpx.Response) -> bool:
    """A 401 about the session itself: expired, revoked, or from a database that was reset."""
    return response.status_code == 401 and _SIGNED_OUT in response.text


def is_database_outage(response: httpx.Response) -> bool:
    """A 401 that says nothing about the session: coderd could not read its API keys (BEHAVIOR.md §1)."""
    return response.status_code == 401 and _DB_OUTAGE in response.text


def _text(err: CoderAPIError) -> str:
    return f"{err.message} {err.detail}".lower()


def is_unparsable_template(err: CoderAPIError) -> bool:
    """coderd answers 500 when it cannot parse a template's workspace tags: the same upload
    fails the same way every time."""
    return err.status == 500 and "workspace tags" in _text(err)


def is_transient(err: BaseException) -> bool:
    """A 5xx worth reading the state again for; not the ones that repeat deterministically."""
    if not isinstance(err, CoderAPIError) or err.status < 500:
        return False
    return "unauthorized" not in _text(err) and not is_unparsable_template(err)


def refused_for_setup_token(err: CoderAPIError) -> bool:
    """Newer coderd releases refuse the first user without a valid setup token (BEHAVIOR.md §12.1)."""
    text = _text(err)
    return err.status in (400, 401, 403) and (
        "setup token" in text or "setup_token" in text or "setup_token" in err.field_names())


def lost_upload_race(err: CoderAPIError) -> bool:
    """The same bytes were stored by another upload a moment earlier: already uploaded."""
    return err.status == 500 and _UPLOAD_RACE in _text(err)


def unconfigured_external_auth(job_error: str) -> list[str]:
    """Provider ids a failed template import names as not configured on coderd."""
    return _NOT_CONFIGURED.findall(job_error)
