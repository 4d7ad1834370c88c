"""harness.waiting.wait_until: the polling loop every test and the harness share."""

from __future__ import annotations

import time

import pytest

from harness.waiting import WaitTimeout, wait_until


def test_returns_the_first_truthy_value_of_the_predicate() -> None:
    values = iter([None, [], 0, ["found"], ["later"]])
    assert wait_until(lambda: next(values), timeout=5, interval=0.001, what="a list") == ["found"]
    assert next(values) == ["later"]  # not called again once it held


def test_a_timeout_names_what_was_awaited_and_the_last_value() -> None:
    calls: list[float] = []

    def never() -> list[int]:
        calls.append(time.monotonic())
        return []

    started = time.monotonic()
    expected = r"timed out after 0.05 s waiting for the second email \(last: \[\]\)"
    with pytest.raises(TimeoutError, match=expected):
        wait_until(never, timeout=0.05, interval=0.01, what="the second email")
    assert time.monotonic() - started >= 0.05
    assert calls[-1] - started >= 0.05  # asked one last time at the deadline
    assert len(calls) >= 3


class _LongAndFalsy:
    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "x" * 10_000


def test_the_timeout_error_carries_what_and_the_last_value_and_shortens_it() -> None:
    with pytest.raises(WaitTimeout) as caught:
        wait_until(lambda: 0, timeout=0, what="zero")
    assert (caught.value.what, caught.value.timeout, caught.value.last) == ("zero", 0, 0)
    with pytest.raises(WaitTimeout) as long:
        wait_until(_LongAndFalsy, timeout=0, what="nothing")
    assert str(long.value).endswith("x...)") and len(str(long.value)) < 300


def test_an_exception_of_the_predicate_propagates_at_once() -> None:
    def gone() -> bool:
        raise RuntimeError("the child exited")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the child exited"):
        wait_until(gone, timeout=30, what="a child")
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(("timeout", "interval"), [(-1, 0.1), (1, 0), (1, -0.5)])
def test_nonsense_timeouts_and_intervals_are_refused(timeout: float, interval: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        wait_until(lambda: True, timeout=timeout, interval=interval, what="x")
