"""Password strength exactly as coderd checks it (coderd/userpassword).

A port of wagslane/go-password-validator v0.3.0 (entropy >= 52 bits), followed
by coderd's own "at most 64 bytes" rule. Quirks of the Go loops are kept on
purpose: the sequence stripper advances `i` inside the inner loop.
"""

from __future__ import annotations

import math

MIN_ENTROPY = 52.0
MAX_BYTES = 64

REPLACE_CHARS = "!@$&*"
SEP_CHARS = "_-., "
OTHER_SPECIAL_CHARS = "\"#%'()+/:;<=>?[\\]^{|}~"
LOWER_CHARS = "abcdefghijklmnopqrstuvwxyz"
UPPER_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS_CHARS = "0123456789"

SEQUENCES = ("0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm", "abcdefghijklmnopqrstuvwxyz")


def get_base(password: str) -> int:
    flags = dict.fromkeys(("replace", "sep", "other", "lower", "upper", "digits"), False)
    base = 0
    for c in set(password):
        if c in REPLACE_CHARS:
            flags["replace"] = True
        elif c in SEP_CHARS:
            flags["sep"] = True
        elif c in OTHER_SPECIAL_CHARS:
            flags["other"] = True
        elif c in LOWER_CHARS:
            flags["lower"] = True
        elif c in UPPER_CHARS:
            flags["upper"] = True
        elif c in DIGITS_CHARS:
            flags["digits"] = True
        else:
            base += 1
    sizes = {"replace": 5, "sep": 5, "other": 22, "lower": 26, "upper": 26, "digits": 10}
    return base + sum(sizes[k] for k, v in flags.items() if v)


def _remove_more_than_two_from_sequence(s: str, seq: str) -> str:
    runes = list(s)
    matches = 0
    i = 0
    while i < len(runes):
        for r2 in seq:
            if i >= len(runes):
                break
            if runes[i] != r2:
                matches = 0
                continue
            matches += 1
            if matches > 2:
                del runes[i]
            else:
                i += 1
        i += 1
    return "".join(runes)


def _remove_more_than_two_repeating_chars(s: str) -> str:
    runes = list(s)
    prev_prev: str | None = None
    prev: str | None = None
    i = 0
    while i < len(runes):
        r = runes[i]
        if r == prev and r == prev_prev:
            del runes[i]
            i -= 1
        prev_prev = prev
        prev = r
        i += 1
    return "".join(runes)


def get_length(password: str) -> int:
    password = _remove_more_than_two_repeating_chars(password)
    for seq in SEQUENCES:
        password = _remove_more_than_two_from_sequence(password, seq)
    for seq in SEQUENCES:
        password = _remove_more_than_two_from_sequence(password, seq[::-1])
    return len(password.encode())  # Go len(string) counts bytes


def entropy(password: str) -> float:
    base = get_base(password)
    length = get_length(password)
    if base == 0:
        return 0.0
    step = math.log2(base) / math.log2(2)
    total = 0.0
    for _ in range(length):  # summed like the Go code, not multiplied
        total += step
    return total


def _validator_error(password: str) -> str:
    has = dict.fromkeys(("replace", "sep", "other", "lower", "upper", "digits"), False)
    for c in password:
        if c in REPLACE_CHARS:
            has["replace"] = True
        elif c in SEP_CHARS:
            has["sep"] = True
        elif c in OTHER_SPECIAL_CHARS:
            has["other"] = True
        elif c in LOWER_CHARS:
            has["lower"] = True
        elif c in UPPER_CHARS:
            has["upper"] = True
        elif c in DIGITS_CHARS:
            has["digits"] = True
    msgs = []
    if not has["other"] or not has["sep"] or not has["replace"]:
        msgs.append("including more special characters")
    if not has["lower"]:
        msgs.append("using lowercase letters")
    if not has["upper"]:
        msgs.append("using uppercase letters")
    if not has["digits"]:
        msgs.append("using numbers")
    if msgs:
        return f"insecure password, try {', '.join(msgs)} or using a longer password"
    return "insecure password, try using a longer password"


def validate(password: str) -> str | None:
    """None when coderd accepts the password, else the error text it reports."""
    if entropy(password) < MIN_ENTROPY:
        return _validator_error(password)
    if len(password.encode()) > MAX_BYTES:
        return f"password must be no more than {MAX_BYTES} characters"
    return None
