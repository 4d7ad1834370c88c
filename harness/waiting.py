"""Waiting for something to become true: the one polling loop the harness and the tests share.

    wait_until(lambda: lake.count("bronze") >= n, timeout=60, interval=0.5, what=f"{n} Bronze rows")
    [mail] = wait_until(lambda: inbox.messages(to=ward), timeout=10, what="the ward's email")

``predicate`` is called at once and then every ``interval`` seconds; the first truthy value it returns is
returned. When ``timeout`` seconds have passed it is called one last time, and if that is still falsy
:class:`WaitTimeout` (a ``TimeoutError``) is raised, naming ``what`` and showing the last value. An
exception the predicate raises propagates at once: a predicate that sees a child process gone should
raise, rather than have the wait run into its timeout.

Waiting proves that something happened. It never proves that something did NOT happen (a second
delivery, a redelivery): wait instead for a later event that can only come after it would have.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T")

_SHOWN: Final = 200  # characters of the predicate's last value in the timeout message


class WaitTimeout(TimeoutError):
    """The predicate stayed falsy for the whole timeout; ``what`` and ``last`` say what was awaited."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        shown = repr(last)
        if len(shown) > _SHOWN:
            shown = shown[:_SHOWN] + "..."
        super().__init__(f"timed out after {timeout:g} s waiting for {what} (last: {shown})")
        self.what = what
        self.timeout = timeout
        self.last = last


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; see the module docstring."""
    if timeout < 0 or interval <= 0:
        raise ValueError(f"timeout must be >= 0 and interval > 0, not {timeout!r} and {interval!r}")
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(what, timeout, value)
        time.sleep(min(interval, left))


__all__ = ["WaitTimeout", "wait_until"]
