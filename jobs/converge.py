"""Re-plan after a transient server error.

Each job's observe -> plan -> apply is idempotent, so after a 5xx the safe retry is not to
repeat the failed request but to read the state again and plan again. Deterministic
failures (a template coderd cannot parse, a permission problem) are not retried.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, TypeVar

from jobs.errors import CoderAPIError

T = TypeVar("T")


def is_transient(err: CoderAPIError) -> bool:
    if err.status < 500:
        return False
    text = f"{err.message} {err.detail}".lower()
    return "unauthorized" not in text and "workspace tags" not in text


def retry_transient(fn: Callable[[], T], *, deadline_s: float, log: Any, what: str, max_attempts: int = 20) -> T:
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except CoderAPIError as err:
            if not is_transient(err) or attempt >= max_attempts or time.monotonic() - start > deadline_s:
                raise
            wait = min(5.0, 0.2 * 2 ** attempt) * (0.5 + random.random() / 2)
            log.warning("transient error, reading state again", what=what, error=err.describe(), attempt=attempt,
                        wait_s=round(wait, 2))
            time.sleep(wait)
