"""The one retry policy: every repeat the jobs make goes through here, on tenacity.

The caller decides *what* may be repeated, with a predicate on the exception (the rules per API
live next to the API: jobs/coder.py, jobs/kube.py); this module decides *how*:
- exponential backoff with jitter, capped, so many jobs restarting together do not hammer a
  recovering server in step;
- a server's Retry-After wins over the backoff: an exception carrying `retry_after` (seconds)
  waits exactly that long;
- a budget of attempts, or a deadline, or both. A deadline either gives up as soon as the next
  wait would overrun it (a request inside a job: fail with the cause while there is time to say
  so) or, with `reach_deadline`, keeps trying until it has passed, the waits shortened so that
  the last attempt lands on it (waiting for a server to come up: use all the time granted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
    stop_never,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from jobs.errors import CoderAPIError, ConcurrentChange

T = TypeVar("T")
OnRetry = Callable[[BaseException, int, float], None]  # (the error, attempts made so far, seconds until the next)

MIN_WAIT_S = 0.05  # a Retry-After of 0 still yields the CPU to the server that asked for it
REPLAN_ATTEMPTS = 20


class Backoff(wait_base):
    """initial * 2**(n-1) plus up to `jitter` seconds at random, at most `maximum`; an error's
    `retry_after` instead, when it has one. With `deadline`, a backoff never sleeps past it."""

    def __init__(self, initial: float, maximum: float, jitter: float, deadline: float | None = None) -> None:
        self._exponential = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=jitter)
        self._deadline = deadline

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return max(float(retry_after), MIN_WAIT_S)
        wait = float(self._exponential(state))
        if self._deadline is not None:
            remaining = self._deadline - (state.seconds_since_start or 0.0)
            wait = min(wait, max(remaining, MIN_WAIT_S))
        return wait


def policy(
    *,
    retry: Callable[[BaseException], bool],
    attempts: int | None = None,
    deadline: float | None = None,
    reach_deadline: bool = False,
    initial: float = 0.25,
    maximum: float = 8.0,
    jitter: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: OnRetry | None = None,
) -> Retrying:
    """A tenacity Retrying for `retry.call`, `restarting`, or a `for attempt in ...` block.
    The last error is re-raised as it is when the budget is spent."""
    stop: stop_base = stop_never
    if attempts is not None:
        stop = stop_after_attempt(attempts)
    if deadline is not None:
        by_time = stop_after_delay(deadline) if reach_deadline else stop_before_delay(deadline)
        stop = by_time if attempts is None else stop | by_time
    return Retrying(
        retry=retry_if_exception(retry),
        stop=stop,
        wait=Backoff(initial, maximum, jitter, deadline if reach_deadline else None),
        sleep=sleep,
        reraise=True,
        before_sleep=_before_sleep(on_retry) if on_retry else None,
    )


def call(fn: Callable[[], T], **how: Any) -> T:
    """fn(), repeated under `policy(**how)`."""
    return policy(**how)(fn)


def restarting(listing: Callable[[], Iterator[T]], **how: Any) -> Iterator[T]:
    """Iterate `listing()`; when it fails with an error `how["retry"]` accepts, iterate a fresh
    `listing()` from its start (the caller skips what it has already seen)."""
    for attempt in policy(**how):
        with attempt:
            yield from listing()


def poll(fetch: Callable[[], T], *, done: Callable[[T], bool], deadline: float, initial: float, maximum: float,
         sleep: Callable[[float], None] = time.sleep) -> T:
    """fetch() until done(value) or the deadline has passed; the last value either way (the
    caller tells the two apart). An exception from fetch() is not retried here."""
    return Retrying(
        retry=retry_if_result(lambda value: not done(value)),
        stop=stop_after_delay(deadline),
        wait=Backoff(initial, maximum, jitter=0.0),
        sleep=sleep,
        reraise=True,
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )(fetch)


def replan(step: Callable[[], T], *, transient: Callable[[BaseException], bool], deadline: float, log: Any,
           what: str) -> T:
    """step() is one whole observe -> plan -> apply pass of a job, idempotent by construction. After
    a transient server error the safe repeat is not the failed request but the pass, from a fresh
    read; after a ConcurrentChange (the raiser has said what changed) too. Deterministic failures
    (a template coderd cannot parse, a permission problem) are not repeated."""

    def on_retry(error: BaseException, attempt: int, wait: float) -> None:
        if isinstance(error, ConcurrentChange):
            return
        cause = error.describe() if isinstance(error, CoderAPIError) else str(error)
        log.warning("transient error, reading state again", what=what, error=cause, attempt=attempt, wait_s=round(wait, 2))

    return call(step, retry=lambda e: isinstance(e, ConcurrentChange) or transient(e), attempts=REPLAN_ATTEMPTS,
                deadline=deadline, reach_deadline=True, initial=0.2, maximum=5.0, jitter=0.2, on_retry=on_retry)


def _before_sleep(on_retry: OnRetry) -> Callable[[RetryCallState], None]:
    def hook(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if error is not None:
            on_retry(error, state.attempt_number, state.next_action.sleep if state.next_action else 0.0)

    return hook
