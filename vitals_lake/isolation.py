"""Isolating the record that makes a batch function raise, so one record never fails a whole batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa

T = TypeVar("T")


def run_isolating(table: pa.Table, run: Callable[[pa.Table], T]) -> tuple[list[T], list[tuple[int, str]]]:
    """``run`` over the whole table; if it raises, over halves, down to the single rows that raise.

    Returns the results of the slices that ran and, per row that fails on its own, its index and the
    exception named: k such rows among n cost O(k log n) runs, and nothing else in the batch is lost.
    """
    try:
        return [run(table)], []
    except Exception as exc:  # noqa: BLE001 (any failure: isolate it rather than fail the batch)
        if table.num_rows <= 1:
            return [], [(0, f"{type(exc).__name__}: {str(exc)[:200]}")] if table.num_rows else []
    mid = table.num_rows // 2
    left, left_poison = run_isolating(table.slice(0, mid), run)
    right, right_poison = run_isolating(table.slice(mid), run)
    return left + right, left_poison + [(mid + i, why) for i, why in right_poison]
