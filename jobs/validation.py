"""coderd's own input rules, one implementation shared by the jobs and the coderd fake.

The jobs check the first admin's username, real name, email and password, and EXTERNAL_AUTH_ID
(a name); the fake answers with coderd's own error texts (fakes/coderd_users.py), built on these.

Only the first-user path runs these before sending (bootstrap-admin creating the owner): a job
that logs in as an existing admin lets coderd judge the credentials, because a local rule that
disagreed with coderd would lock that admin out of every job.

Each `*_problem` function returns a description (never containing the value) or None.
`../shared/coder-api/vectors/validation.json` holds a real coderd's answers; tests/test_validation
runs every vector through these functions. Sources (BEHAVIOR.md §2, §11):
- username: codersdk/name.go `NameValid`;
- real name: codersdk/name.go `UserRealNameValid`;
- email: go-playground/validator v10.26's `email` tag, which is its regex AND Go's
  net/mail.ParseAddress (the latter is what rejects `a@ex.com.`);
- password: coderd/userpassword `Validate` = wagslane/go-password-validator v0.3.0 at 52 bits,
  then at most 64 bytes.
"""

from __future__ import annotations

import functools
import math
import re

# -- names ---------------------------------------------------------------------------------
_NAME = re.compile(r"[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*")
_RESERVED_NAMES = ("new", "create")  # compared case-sensitively: coderd accepts `New` and `NEW`


def username_problem(value: str) -> str | None:
    if len(value.encode()) > 32 or not value:
        return "must be 1 to 32 characters long"
    if value in _RESERVED_NAMES:
        return "is a reserved name"
    if not _NAME.fullmatch(value):
        return "may contain only letters, digits and single inner hyphens (no underscores, no leading or trailing hyphen)"
    return None


def real_name_problem(value: str | None) -> str | None:
    if not value:
        return None
    if len(value.encode()) > 128:
        return "must be at most 128 bytes long"
    if value != value.strip():
        return "must not have leading or trailing whitespace"
    return None


# -- email -----------------------------------------------------------------------------------
# The validator's regex, rebuilt from its parts. Go's \d is ASCII-only, hence [0-9].
_U = "\u00a0-\ud7ff\uf900-\ufdcf\ufdf0-\uffef"  # the non-ASCII ranges it admits
_ATEXT = f"[A-Za-z0-9!#$%&'*+\\-/=?^_`{{|}}~{_U}]"
# Inside quotes: any ASCII but NUL and LF, or the ranges above; LF only as CRLF folding
# (a CR before it, a space or tab after). Written without nested repetition, so a long
# failing input cannot make Python's backtracking engine explode (Go's RE2 never does).
_QUOTED = f'"(?:[\\x01-\\x09\\x0b-\\x7f{_U}]|(?<=\\r)\\n(?=[ \\t]))*"'
_LABEL = f"[A-Za-z0-9{_U}](?:[A-Za-z0-9\\-.~{_U}]*[A-Za-z0-9{_U}])?"
_TLD = f"[A-Za-z{_U}](?:[A-Za-z0-9\\-.~{_U}]*[A-Za-z{_U}])?"
# Compiled on first use: it takes about 20 ms, which every job would pay at start (settings import
# this module), while only bootstrap-admin checks an email.
_EMAIL_PATTERN = f"(?:{_ATEXT}+(?:\\.{_ATEXT}+)*|{_QUOTED})@(?:{_LABEL}\\.)+{_TLD}\\.?"


@functools.cache
def _email() -> re.Pattern[str]:
    return re.compile(_EMAIL_PATTERN)
_MAIL_SPECIALS = set('()<>[]:;@\\,"')


def email_problem(value: str) -> str | None:
    if not value:
        return "is required"
    if not (_email().fullmatch(value) and _net_mail_addr_spec(value)):
        return "is not a valid email address (coderd needs user@domain.tld, the last label made of letters)"
    return None


def _vchar(c: str) -> bool:
    return "!" <= c <= "~" or ord(c) >= 0x80


def _atom(s: str) -> tuple[str | None, str]:
    """net/mail consumeAtom(dot=true, permissive=false): (atom or None, rest)."""
    i = 0
    while i < len(s) and s[i] not in _MAIL_SPECIALS and _vchar(s[i]):
        i += 1
    atom, rest = s[:i], s[i:]
    if not atom or atom.startswith(".") or atom.endswith(".") or ".." in atom:
        return None, rest
    return atom, rest


def _net_mail_addr_spec(value: str) -> bool:
    """Whether Go's net/mail.ParseAddress accepts `value` as a bare addr-spec.

    For strings the regex above matched, its display-name fallback never succeeds where this
    fails (it needs a `<`), so this branch decides alone.
    """
    s = value.lstrip(" \t")
    if s.startswith('"'):
        i, content, escaped = 1, 0, False
        while True:
            if i >= len(s):
                return False  # unclosed quoted-string
            c = s[i]
            if escaped:
                if not (_vchar(c) or c in " \t"):
                    return False
                escaped, content = False, content + 1
            elif c == '"':
                break
            elif c == "\\":
                escaped = True
            elif _vchar(c) or c in " \t":
                content += 1
            else:
                return False
            i += 1
        if content == 0:
            return False  # empty quoted-string
        rest = s[i + 1:]
    else:
        local, rest = _atom(s)
        if local is None:
            return False
    if not rest.startswith("@"):
        return False
    domain, rest = _atom(rest[1:].lstrip(" \t"))
    return domain is not None and rest.strip(" \t") == ""


# -- password --------------------------------------------------------------------------------
MIN_PASSWORD_ENTROPY = 52.0
MAX_PASSWORD_BYTES = 64

PASSWORD_CLASSES = (  # go-password-validator's character classes, in the order it tests them (the fake's
    # error text names the missing ones)
    "!@$&*",
    "_-., ",
    "\"#%'()+/:;<=>?[\\]^{|}~",
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
)
_SEQUENCES = ("0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm", "abcdefghijklmnopqrstuvwxyz")


def _password_base(password: str) -> int:
    """Sum of the sizes of the classes present, plus one per distinct rune in none of them."""
    present: set[str] = set()
    base = 0
    for ch in set(password):
        cls = next((c for c in PASSWORD_CLASSES if ch in c), None)
        if cls is None:
            base += 1
        else:
            present.add(cls)
    return base + sum(len(c) for c in present)


def _drop_third_repeats(runes: list[str]) -> list[str]:
    out = list(runes)
    prev_prev = prev = None
    i = 0
    while i < len(out):
        r = out[i]
        if r == prev and r == prev_prev:
            del out[i]
            i -= 1
        prev_prev, prev = prev, r
        i += 1
    return out


def _drop_sequence_runs(runes: list[str], seq: str) -> list[str]:
    """The Go loop as written, quirks kept: `i` also advances inside the inner loop, and the
    match counter carries over between outer iterations. Case-sensitive; it is what decides
    that coderd accepts `cjtrmqvbvczw`."""
    out = list(runes)
    matches = 0
    i = 0
    while i < len(out):
        for r2 in seq:
            if i >= len(out):
                break
            if out[i] != r2:
                matches = 0
                continue
            matches += 1
            if matches > 2:
                del out[i]
            else:
                i += 1
        i += 1
    return out


def _password_length(password: str) -> int:
    runes = _drop_third_repeats(list(password))
    for seq in _SEQUENCES:
        runes = _drop_sequence_runs(runes, seq)
    for seq in _SEQUENCES:
        runes = _drop_sequence_runs(runes, seq[::-1])
    return len("".join(runes).encode())  # Go's len(string) counts bytes


def _go_log2(x: float) -> float:
    """Go's math.Log2: exact for powers of two, which matters at the 52-bit boundary."""
    frac, exp = math.frexp(x)
    if frac == 0.5:
        return float(exp - 1)
    return math.log(frac) * (1 / math.log(2)) + exp


def password_entropy(password: str) -> float:
    step = _go_log2(float(_password_base(password))) if password else 0.0
    total = 0.0
    for _ in range(_password_length(password)):  # summed, not multiplied, like the Go code
        total += step
    return total


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
