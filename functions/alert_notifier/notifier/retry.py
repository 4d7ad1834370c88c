"""Which failures are worth another try, and the backoff between tries.

Transient: connection refused or reset, timeouts, HTTP 5xx and 429, SMTP 4xx replies. Permanent:
every other HTTP 4xx (and 3xx: a signed POST is never redirected), SMTP 5xx replies (a refused
recipient, failed authentication). A permanent failure is not retried at all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class DeliveryError(Exception):
    """A delivery failed. ``detail`` is safe to log: no message content, no secrets."""

    transient: bool = False

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class TransientError(DeliveryError):
    transient = True


class PermanentError(DeliveryError):
    transient = False


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the n-th wait is ``base * multiplier**(n-1)`` capped at ``max_delay``,
    with full jitter (so that instances retrying after the same outage do not hit the server together)."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    multiplier: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError(f"invalid retry policy: {self}")

    def delay(
        self, retry: int, retry_after: float | None = None, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        backoff = min(self.max_delay, self.base_delay * self.multiplier ** (retry - 1))
        if self.jitter:
            backoff *= rand()
        if retry_after is not None:  # the server said when: honour it, but never beyond our cap
            backoff = max(backoff, min(retry_after, self.max_delay))
        return backoff


def call_with_retries(
    send: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, TransientError, float], None] | None = None,
) -> T:
    """Call ``send`` until it succeeds, fails permanently, or ``policy.attempts`` tries are used up.

    Raises the last :class:`TransientError` when the tries are used up, a :class:`PermanentError` at once.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return send()
        except TransientError as exc:
            if attempt == policy.attempts:
                raise
            wait = policy.delay(attempt, exc.retry_after)
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def http_status_error(status: int, retry_after: str | None = None) -> DeliveryError | None:
    """None for 2xx; otherwise the error class for that HTTP status."""
    if 200 <= status < 300:
        return None
    if status == 429 or status >= 500:
        return TransientError(f"HTTP {status}", retry_after=_seconds(retry_after))
    return PermanentError(f"HTTP {status}")


def smtp_reply_error(code: int, what: str) -> DeliveryError:
    """SMTP 4xx replies are temporary by definition (RFC 5321), 5xx permanent."""
    if 400 <= code < 500 or code < 0:  # smtplib uses -1 when the server closed without a reply
        return TransientError(f"SMTP {what}: {code}")
    return PermanentError(f"SMTP {what}: {code}")


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare for webhooks, and our own backoff is a fine answer
