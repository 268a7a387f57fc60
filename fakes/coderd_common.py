"""Small helpers shared by the coderd fake: time formats, validators, errors."""

from __future__ import annotations

import json
import random
import re
import secrets
import string
import uuid
from datetime import UTC, datetime
from typing import Any

from fakes.base import Request, Response
from jobs import validation

ZERO_TIME = "0001-01-01T00:00:00Z"
NIL_UUID = "00000000-0000-0000-0000-000000000000"
PREBUILDS_USER_ID = "c42fdf75-3097-471c-8c33-fb52454d81c0"

SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."
NOT_FOUND = "Resource not found or you do not have access to this resource"

NS = 1_000_000_000
HOUR_NS = 3600 * NS


def new_id() -> str:
    return str(uuid.uuid4())


def rfc3339(ts: float | None) -> str:
    """Go's RFC3339Nano for a UTC time with microsecond precision (as Postgres stores it)."""
    if ts is None:
        return ZERO_TIME
    dt = datetime.fromtimestamp(ts, tz=UTC)
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def opt_rfc3339(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


def go_time_string(ts: float) -> str:
    """Go's time.Time.String() for a UTC time."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


def go_duration(ns: int) -> str:
    """Go's time.Duration.String() for whole seconds and up (enough for the messages we render)."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    ns = abs(ns)
    h, rem = divmod(ns, 3600 * NS)
    m, rem = divmod(rem, 60 * NS)
    s = rem / NS
    s_txt = f"{s:.9f}".rstrip("0").rstrip(".")
    out = (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{s_txt}s"
    return ("-" if neg else "") + out


def parse_rfc3339(value: str) -> float:
    v = value.strip()
    if v.endswith("Z") or v.endswith("z"):
        v = v[:-1] + "+00:00"
    # Python before 3.11 cannot take 9 fractional digits; trim to 6.
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$", v)
    if m:
        v = f"{m.group(1)}.{m.group(2)[:6].ljust(6, '0')}{m.group(3)}"
    dt = datetime.fromisoformat(v)
    if dt.tzinfo is None:
        raise ValueError("missing timezone")
    return dt.timestamp()


def to_epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, str):
        return parse_rfc3339(value)
    raise TypeError(f"cannot convert {value!r} to a time")


def is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def norm_uuid(value: str) -> str:
    return str(uuid.UUID(value))


# -- validators ------------------------------------------------------------
# coderd's rules for names, real names and emails live in jobs/validation.py: one
# implementation, shared with the jobs and pinned by tests/test_validation.py to a real
# coderd's answers (BEHAVIOR.md §11, vectors/validation.json).
_VERSION_NAME_RE = re.compile(r"^[a-zA-Z0-9]+(?:[_.-][a-zA-Z0-9]+)*$")


def name_valid(name: str) -> bool:
    return validation.username_problem(name) is None  # codersdk.NameValid (users and templates)


def version_name_valid(name: str) -> bool:
    return 1 <= len(name) <= 64 and bool(_VERSION_NAME_RE.match(name))


def display_name_valid(name: str) -> bool:
    return len(name) <= 64 and name == name.strip()


def real_name_valid(name: str) -> bool:
    return validation.real_name_problem(name) is None


def email_valid(email: str) -> bool:
    return validation.email_problem(email) is None


# -- random names -----------------------------------------------------------
_ADJ = ["admiring", "brave", "clever", "dazzling", "eager", "focused", "gifted", "happy", "jolly", "keen",
        "laughing", "modest", "nifty", "optimistic", "peaceful", "quirky", "relaxed", "serene", "trusting", "vibrant"]
_NOUN = ["albattani", "babbage", "curie", "darwin", "euclid", "feynman", "galileo", "hopper", "hypatia", "johnson",
         "kepler", "lovelace", "mayer", "newton", "pasteur", "ritchie", "shannon", "tesla", "turing", "wozniak"]


def docker_name(rng: random.Random) -> str:
    return f"{rng.choice(_ADJ)}_{rng.choice(_NOUN)}{rng.randint(0, 9)}"


_ALNUM = string.ascii_letters + string.digits


def random_alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


# -- responses --------------------------------------------------------------
def msg(status: int, message: str, detail: str | None = None, validations: list[dict] | None = None,
        headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"message": message}
    if detail:
        body["detail"] = detail
    if validations:
        body["validations"] = validations
    return Response(status, body, headers=headers or {})


def not_found() -> Response:
    return msg(404, NOT_FOUND)


def validation_failed(errors: list[tuple[str, str, Any]]) -> Response:
    return msg(400, "Validation failed.", validations=[
        {"field": f, "detail": f"Validation failed for tag {json.dumps(tag)} with value: \"{val}\""}
        for f, tag, val in errors
    ])


class BadBody(Exception):
    def __init__(self, response: Response):
        self.response = response


def read_json(req: Request, fields: dict[str, str]) -> dict[str, Any]:
    """httpapi.Read: lenient decode; unknown fields ignored, wrong JSON types are a decode error.

    `fields` maps json names to a kind: str, bool, int, uuid, list, dict, any.
    Returns only the known fields that were present (not null).
    """
    try:
        data = json.loads(req.body.decode("utf-8") if req.body else "")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody(msg(400, "Request body must be valid JSON.", detail=str(exc))) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadBody(msg(400, "Request body must be valid JSON.",
                          detail=f"json: cannot unmarshal {type(data).__name__} into Go value of type struct"))
    out: dict[str, Any] = {}
    for key, kind in fields.items():
        if key not in data or data[key] is None:
            continue
        v = data[key]
        ok = {
            "str": isinstance(v, str),
            "bool": isinstance(v, bool),
            "int": isinstance(v, int) and not isinstance(v, bool),
            "uuid": isinstance(v, str) and is_uuid(v),
            "list": isinstance(v, list),
            "dict": isinstance(v, dict),
            "any": True,
        }[kind]
        if not ok:
            raise BadBody(msg(400, "Request body must be valid JSON.",
                              detail=f"json: cannot unmarshal {json.dumps(v)[:40]} into Go struct field .{key}"))
        out[key] = norm_uuid(v) if kind == "uuid" else v
    return out
