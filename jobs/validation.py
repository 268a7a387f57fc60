"""coderd's own input rules, checked locally so bad input fails before any write.

Each function returns a problem description (never containing the value) or None.
Sources (BEHAVIOR.md §2): codersdk/name.go `NameValid`, `UserRealNameValid`;
coderd/userpassword/userpassword.go (wagslane/go-password-validator v0.3.0, 52 bits).
"""

from __future__ import annotations

import math
import re

_NAME = re.compile(r"^[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*$")
_RESERVED_NAMES = {"new", "create"}
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_DOMAIN_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")

MIN_PASSWORD_ENTROPY = 52.0
MAX_PASSWORD_BYTES = 64

_REPLACE = "!@$&*"
_SEPARATORS = "_-., "
_OTHER_SPECIAL = "\"#%'()+/:;<=>?[\\]^{|}~"
_SEQUENCES = ("0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm", "abcdefghijklmnopqrstuvwxyz")


def username_problem(value: str) -> str | None:
    if not 1 <= len(value) <= 32:
        return "must be 1 to 32 characters long"
    if not _NAME.match(value):
        return "may contain only letters, digits and single inner hyphens (no underscores, no leading or trailing hyphen)"
    if value.lower() in _RESERVED_NAMES:
        return "is a reserved name"
    return None


def real_name_problem(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > 128:
        return "must be at most 128 characters long"
    if value != value.strip():
        return "must not have leading or trailing whitespace"
    return None


def email_problem(value: str) -> str | None:
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        return "is not a valid email address"
    if len(local) > 64 or not _EMAIL_LOCAL.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        return "is not a valid email address"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels):
        return "is not a valid email address (the domain needs a dot, e.g. example.com)"
    last = labels[-1]
    if not (last[0].isalpha() and last[-1].isalpha()):
        return "is not a valid email address (the top-level domain must be letters)"
    return None


def password_entropy(password: str) -> float:
    """Entropy as go-password-validator v0.3.0 computes it: L * log2(B)."""
    base = _password_base(password)
    length = len(_strip_runs(password).encode())
    if base <= 1 or length == 0:
        return 0.0
    return length * math.log2(base)


def password_problem(password: str) -> str | None:
    if not password:
        return "is required"
    if password_entropy(password) < MIN_PASSWORD_ENTROPY:
        return (
            f"is not strong enough (coderd needs {MIN_PASSWORD_ENTROPY:.0f} bits of entropy: "
            "make it longer or mix lower/upper case, digits and symbols)"
        )
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return f"must be at most {MAX_PASSWORD_BYTES} bytes long"
    return None


def _password_base(password: str) -> int:
    classes = {"replace": 5, "sep": 5, "other": 22, "lower": 26, "upper": 26, "digits": 10}
    present: set[str] = set()
    base = 0
    for ch in set(password):
        if ch in _REPLACE:
            present.add("replace")
        elif ch in _SEPARATORS:
            present.add("sep")
        elif ch in _OTHER_SPECIAL:
            present.add("other")
        elif "a" <= ch <= "z":
            present.add("lower")
        elif "A" <= ch <= "Z":
            present.add("upper")
        elif "0" <= ch <= "9":
            present.add("digits")
        else:
            base += 1
    return base + sum(classes[c] for c in present)


def _strip_runs(password: str) -> str:
    """Drop the 3rd+ repeat of a character and the 3rd+ char of a keyboard/alphabet run."""
    out: list[str] = []
    for ch in password:
        if len(out) >= 2 and out[-1] == ch and out[-2] == ch:
            continue
        if len(out) >= 2 and _in_sequence(out[-2], out[-1], ch):
            continue
        out.append(ch)
    return "".join(out)


def _in_sequence(a: str, b: str, c: str) -> bool:
    triple = (a + b + c).lower()
    return any(triple in seq or triple in seq[::-1] for seq in _SEQUENCES)
