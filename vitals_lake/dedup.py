"""Silver's de-duplication memory: the event ids one patient shard has stored, within the horizon.

It lives with the shard's state, so a batch is checked against memory, never against the lake.
The lake is read only to fill a gap: when the state is new (a first start, a replay, a shard moved to a
worker that had no checkpoint) and when a batch holds a reading older than anything remembered. What
is remembered is exact over ``[covered_from, ∞)`` in event time: every event id the shard has in Silver
with a timestamp from ``covered_from`` on. Ids older than the newest reading minus the horizon are
dropped, so memory per patient is bounded by the horizon (about 60 bytes per reading).

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
from vitals_lake.byte_search import hash64
from vitals_lake.masks import first_appearances, true_where

# (lo_us, hi_us or None = open) -> this shard's Silver (event_id, timestamp) with lo <= timestamp < hi.
StoredIds = Callable[[int, int | None], pa.Table]
_US: Final = pa.timestamp("us", tz="UTC")
_PRUNE_FRACTION: Final = 8


def _micros(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(pc.cast(values, _US), pa.int64()).to_numpy(zero_copy_only=False), np.int64)


@dataclass
class SeenEvents:
    """The remembered event ids, in arrival order, and a sorted index of their 64-bit hashes.

    A batch is looked up by binary search in the index (its cost grows with the batch, not with the
    memory: an Arrow ``is_in`` rebuilt a hash table of every remembered id for each batch, 0.5-1.4
    CPU-s for 8,000 ids against 2,000,000 remembered, an hour of a busy shard; 0.02 now); a hash found
    is confirmed by comparing the ids themselves, and an id whose hash is shared with another is
    looked up exactly."""

    horizon_us: int
    ids: pa.ChunkedArray = field(default_factory=lambda: pa.chunked_array([], pa.string()))
    times_us: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # sorted hashes
    slots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # each key's id position
    covered_from_us: int | None = None  # None: nothing known yet (the lake has not been read)
    newest_us: int | None = None  # the newest reading offered (not loaded): what the horizon trails
    lake_reads: int = 0

    def fresh(self, rows: pa.Table, *, stored: StoredIds | None) -> pa.Table:
        """The rows of ``rows`` whose event id is neither remembered nor held by an earlier row of the
        batch (the first of each id is kept, in arrival order), and remember them. ``stored`` reads
        the lake to fill a gap; None: the lake is known to be empty of this shard's rows (tests, a
        first run into a new lake)."""
        if rows.num_rows == 0:
            return rows
        ids = _strings(rows[c.EVENT_ID])
        hashes = hash64(ids)
        first = _first_per_id(ids, hashes)
        ts = _micros(rows[c.TIMESTAMP])
        offered_ts = ts[first]  # what the batch offers: one reading per id
        self._cover(int(offered_ts.min()), stored)
        keep = first & ~self._known(ids, hashes)
        if keep.all():
            new, new_ts = rows, ts
        else:
            mask = pa.array(keep)
            new, new_ts, ids, hashes = rows.filter(mask), ts[keep], ids.filter(mask), hashes[keep]
        self._remember(ids, new_ts, hashes)
        newest = int(offered_ts.max())
        self.newest_us = newest if self.newest_us is None else max(self.newest_us, newest)
        self._forget_before(self.newest_us - self.horizon_us)
        return new

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.times_us.nbytes + self.keys.nbytes + self.slots.nbytes)

    def _known(self, ids: pa.Array, hashes: np.ndarray) -> np.ndarray:
        """Which of ``ids`` are remembered."""
        known = np.zeros(len(ids), dtype=bool)
        if len(self.keys) == 0:
            return known
        at = np.minimum(np.searchsorted(self.keys, hashes), len(self.keys) - 1)
        candidates = np.flatnonzero(self.keys[at] == hashes)
        if candidates.size == 0:
            return known
        remembered = self.ids.take(pa.array(self.slots[at[candidates]]))
        same = true_where(pc.equal(remembered, ids.take(pa.array(candidates))))
        known[candidates[same]] = True
        # A hash shared by two ids (the first found is the other one): looked up exactly.
        unsure = candidates[~same]
        if unsure.size:
            known[unsure] = true_where(pc.is_in(ids.take(pa.array(unsure)), value_set=self.ids))
        return known

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
                ids = _strings(past[c.EVENT_ID])
                self._remember(ids, _micros(past[c.TIMESTAMP]), hash64(ids))
        self.covered_from_us = lo

    def _remember(self, ids: pa.Array, times_us: np.ndarray, hashes: np.ndarray) -> None:
        if len(ids) == 0:
            return
        first = len(self.ids)
        self.ids = pa.chunked_array([*self.ids.chunks, ids])
        self.times_us = np.concatenate([self.times_us, times_us])
        order = np.argsort(hashes, kind="stable")
        at = np.searchsorted(self.keys, hashes[order])
        self.keys = np.insert(self.keys, at, hashes[order])
        self.slots = np.insert(self.slots, at, (first + order).astype(np.int32))

    def _forget_before(self, cutoff_us: int) -> None:
        """Drop ids older than ``cutoff_us``, once they are an eighth of the memory (amortised: a
        batch costs the same whether or not it prunes). Keeping older ids longer is harmless."""
        if self.covered_from_us is None or cutoff_us <= self.covered_from_us:
            return
        old = self.times_us < cutoff_us
        if old.sum() * _PRUNE_FRACTION < len(old):
            return
        keep = ~old
        self.ids = pa.chunked_array([self.ids.filter(pa.array(keep)).combine_chunks()], pa.string())
        self.times_us = self.times_us[keep]
        renumbered = np.cumsum(keep) - 1
        kept = keep[self.slots]
        self.keys, self.slots = self.keys[kept], renumbered[self.slots[kept]].astype(np.int32)
        self.covered_from_us = cutoff_us


def _first_per_id(ids: pa.Array, hashes: np.ndarray) -> np.ndarray:
    """Mask of the rows whose id no earlier row holds. The rows sorted by hash, stably, so that each
    run of equal hashes is in arrival order; each row compared with its run's first. A row that differs
    from it (two ids sharing a hash) can repeat only such rows, so they are settled exactly among
    themselves. One sort of 64-bit numbers: 30 ms for a shard's 350,000 readings, where a dictionary
    of the ids (Arrow's hash table of strings, ``lake.first_per_key``) took 75."""
    n = len(hashes)
    first = np.ones(n, dtype=bool)
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    repeat = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1  # sorted places whose hash is the last one's
    if repeat.size == 0:
        return first
    starts = np.ones(n, dtype=bool)
    starts[repeat] = False
    head = np.maximum.accumulate(np.where(starts, np.arange(n), 0))  # each sorted place's run start
    same = true_where(pc.equal(ids.take(pa.array(order[repeat])), ids.take(pa.array(order[head[repeat]]))))
    first[order[repeat[same]]] = False
    unsure = np.sort(order[repeat[~same]])
    if unsure.size:
        first[unsure] = first_appearances(ids.take(pa.array(unsure)))
    return first


def _strings(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values.cast(pa.string())
