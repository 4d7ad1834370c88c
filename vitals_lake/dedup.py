"""Silver's de-duplication memory: the event ids one patient shard has stored, within the horizon.

It lives with the shard's state, so a batch is checked against memory, never against the lake.
The lake is read only to fill a gap: when the state is new (a first start, a replay, a shard moved to a
worker that had no checkpoint) and when a batch holds a reading older than anything remembered. What
is remembered is exact over ``[covered_from, ∞)`` in event time: every event id the shard has in Silver
with a timestamp from ``covered_from`` on. Ids older than the newest reading minus the horizon are
dropped, so memory per patient is bounded by the horizon (about 40 bytes per reading).

A duplicate is the same reading delivered again, so it carries the same patient (the same shard) and
the same timestamp; the horizon only bounds how long a delivery is remembered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c

# (lo_us, hi_us or None = open) -> this shard's Silver (event_id, timestamp) with lo <= timestamp < hi.
StoredIds = Callable[[int, int | None], pa.Table]
_US: Final = pa.timestamp("us", tz="UTC")
_PRUNE_FRACTION: Final = 8


def _micros(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(pc.cast(values, _US), pa.int64()).to_numpy(zero_copy_only=False), np.int64)


@dataclass
class SeenEvents:
    horizon_us: int
    ids: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    times_us: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    covered_from_us: int | None = None  # None: nothing known yet (the lake has not been read)
    newest_us: int | None = None  # the newest reading offered (not loaded): what the horizon trails
    lake_reads: int = 0

    def fresh(self, rows: pa.Table, *, stored: StoredIds | None) -> pa.Table:
        """The rows of ``rows`` (one per event id already) whose event id is not remembered, and
        remember them. ``stored`` reads the lake to fill a gap; None: the lake is known to be empty of
        this shard's rows (tests, a first run into a new lake)."""
        if rows.num_rows == 0:
            return rows
        ts = _micros(rows[c.TIMESTAMP])
        self._cover(int(ts.min()), stored)
        if len(self.ids):
            keep = np.asarray(pc.invert(pc.is_in(rows[c.EVENT_ID], value_set=self.ids)), bool)
            new, new_ts = rows.filter(pa.array(keep)), ts[keep]
        else:  # nothing remembered yet (a replay's first batch of the shard): nothing to look up
            new, new_ts = rows, ts
        self._remember(new[c.EVENT_ID], new_ts)
        newest = int(ts.max())
        self.newest_us = newest if self.newest_us is None else max(self.newest_us, newest)
        self._forget_before(self.newest_us - self.horizon_us)
        return new

    @property
    def size(self) -> int:
        return len(self.ids)

    def _cover(self, oldest_us: int, stored: StoredIds | None) -> None:
        """Make the memory exact from ``oldest_us`` on (a duplicate has its original's timestamp). A
        new memory reaches one horizon further back, so a re-sent reading whose clock moved is caught
        as it was when the lake was read every batch."""
        if self.covered_from_us is not None and oldest_us >= self.covered_from_us:
            return
        lo = oldest_us - self.horizon_us if self.covered_from_us is None else oldest_us
        if stored is not None:
            past = stored(lo, self.covered_from_us)  # hi None: everything from lo on
            self.lake_reads += 1
            if past.num_rows:
                self._remember(past[c.EVENT_ID], _micros(past[c.TIMESTAMP]))
        self.covered_from_us = lo

    def _remember(self, ids: pa.Array | pa.ChunkedArray, times_us: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        self.ids = pa.concat_arrays([self.ids, ids.cast(pa.string())])
        self.times_us = np.concatenate([self.times_us, times_us])

    def _forget_before(self, cutoff_us: int) -> None:
        """Drop ids older than ``cutoff_us``, once they are an eighth of the memory (amortised: a
        batch costs the same whether or not it prunes). Keeping older ids longer is harmless."""
        if self.covered_from_us is None or cutoff_us <= self.covered_from_us:
            return
        old = self.times_us < cutoff_us
        if old.sum() * _PRUNE_FRACTION < len(old):
            return
        keep = ~old
        self.ids = self.ids.filter(pa.array(keep))
        self.times_us = self.times_us[keep]
        self.covered_from_us = cutoff_us
