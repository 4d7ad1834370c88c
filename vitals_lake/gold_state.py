"""Gold from the shard's own memory: partial aggregates of the windows still open, merged batch by batch.

Each batch's new Silver rows become partials (:func:`vitals_lake.summaries.window_partials`: count,
sum, min, max and the latest value per vital, per patient and window), merged into the partials the
shard already holds for the same windows, and turned into Gold rows. A commit therefore costs what its
batch costs, whatever the lake's size: nothing is read back.

What a :class:`WindowPartials` holds is exact over ``[covered_from, ∞)`` in event time: for every
window starting there, the partial of all the shard's Silver rows in it. The lake's Silver is read
(for this shard only) to fill a gap: when the state is new (a new deployment, a replay: so a restart
never replaces a fuller Gold row with a partial one) and when a reading belongs to a window older than
anything remembered. Windows are forgotten once they are older than the newest reading by the allowed
lateness plus the look-back the trends need, so memory per patient is bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.grouped import SortedGroups
from vitals_lake.masks import true_where
from vitals_lake.summaries import (
    GOLD_ENRICHMENT,
    PARTIAL_LAST,
    PARTIAL_MAX,
    PARTIAL_MIN,
    PARTIAL_SUM,
    gold_from_partials,
    window_partials,
    window_partials_each,
)
from vitals_lake.trends import rolling_means

# (lo_us, hi_us or None = open) -> this shard's Silver rows with lo <= timestamp < hi.
StoredSilver = Callable[[int, int | None], pa.Table]
_KEYS: Final = [c.PATIENT_KEY, c.WINDOW_START]
_US: Final = pa.timestamp("us", tz="UTC")
_PRUNE_FRACTION: Final = 8
ROLLING_SPAN_US: Final = (c.ROLLING_MINUTES - 1) * 60_000_000  # a minute's trailing window reaches back


def merge_partials(partials: pa.Table) -> pa.Table:
    """Rows of ``window_partials`` -> one row per (patient, window start), as if computed at once."""
    if partials.num_rows == 0:
        return partials
    # Rows sorted by key once: the runs of equal keys are the merged rows, in the merged rows' order.
    order = pc.sort_indices(partials, sort_keys=[(k, "ascending") for k in _KEYS])
    keyed = partials.select(_KEYS).take(order)
    same = np.zeros(len(order), dtype=bool)
    same[1:] = True
    for k in _KEYS:
        column = keyed[k].combine_chunks()
        same[1:] &= true_where(pc.equal(column.slice(1), column.slice(0, len(column) - 1)))
    if not same.any():
        return partials
    group = np.cumsum(~same) - 1
    # Sums, minima and maxima: one NumPy pass per column over the sorted rows (vitals_lake.grouped;
    # the sort is stable, so each group's values add in row order, as Arrow's group_by sums them).
    groups = SortedGroups(np.asarray(order), np.flatnonzero(~same))
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        k: keyed[k].take(pa.array(groups.starts)) for k in _KEYS
    }
    for name in PARTIAL_SUM:
        columns[name] = groups.column(partials[name]).sum(type=partials.schema.field(name).type)
    for name in PARTIAL_MIN:
        columns[name] = groups.column(partials[name]).extreme("min")
    for name in PARTIAL_MAX:
        columns[name] = groups.column(partials[name]).extreme("max")
    # "Latest value" per vital: the value measured last, by that vital's own time (a null time counts
    # as earliest, ties go to the later partial, nulls are skipped). Enrichment: as of the window's
    # latest reading. Per column two reductions over the groups: the latest time among the present
    # values, then the last row holding it.
    position = np.arange(len(order))
    earliest = np.iinfo(np.int64).min
    for value, at in (*PARTIAL_LAST.items(), *((e, c.LAST_READING_TIME) for e in GOLD_ENRICHMENT)):
        values = partials[value].take(order)
        when = _nullable_micros(partials[at].take(order))
        present = true_where(values.is_valid())
        latest = np.maximum.reduceat(np.where(present, when, earliest), groups.starts)
        chosen = present & (when == latest[group])
        picked = np.maximum.reduceat(np.where(chosen, position, -1), groups.starts)
        columns[value] = values.take(pa.array(picked, mask=picked < 0))
    return pa.table({name: columns[name] for name in partials.column_names}, schema=partials.schema)


def _nullable_micros(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Microseconds with a null as the earliest possible time."""
    us = pc.fill_null(pc.cast(pc.cast(values, _US), pa.int64()), np.iinfo(np.int64).min)
    return np.asarray(us.to_numpy(zero_copy_only=False), np.int64)


def _micros(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(pc.cast(values, _US), pa.int64()).to_numpy(zero_copy_only=False), np.int64)


def _floor(us: int, step: int) -> int:
    return us - us % step


@dataclass
class WindowPartials:
    """The open windows of one size for one shard, as partials."""

    seconds: int
    keep_us: int  # how long after its end a window is kept: allowed lateness (+ the trends' look-back)
    lookback_us: int = 0  # windows this far before a batch's own must be known too (rolling means)
    rows: pa.Table | None = None
    covered_from_us: int | None = None
    newest_us: int | None = None
    lake_reads: int = 0

    @property
    def step_us(self) -> int:
        return self.seconds * 1_000_000

    def __getstate__(self) -> dict[str, object]:
        # Joins and concatenations leave the held rows sharing larger buffers, which a pickle would
        # carry whole (measured: 15 MB pickled for 3 MB of rows): the runner's copy is made compact.
        state = dict(self.__dict__)
        if self.rows is not None:
            state["rows"] = self.rows.take(pa.array(np.arange(self.rows.num_rows)))
        return state

    def update(self, silver: pa.Table, *, fresh: pa.Table, stored: StoredSilver | None) -> pa.Table:
        """Fold new Silver rows in (``fresh``: their ``window_partials`` of this size); return the merged
        partials of every window they touched."""
        if silver.num_rows == 0:
            return self._empty()
        ts = _micros(silver[c.TIMESTAMP])
        self._cover(_floor(int(ts.min()), self.step_us) - self.lookback_us, stored)
        held = self.rows if self.rows is not None else fresh.schema.empty_table()
        touched_keys = fresh.select(_KEYS)
        touched = held.join(touched_keys, _KEYS, join_type="left semi", use_threads=False)
        untouched = held.join(touched_keys, _KEYS, join_type="left anti", use_threads=False)
        merged = merge_partials(pa.concat_tables([touched.select(fresh.schema.names), fresh]))
        self.rows = pa.concat_tables([untouched.select(fresh.schema.names), merged])
        newest = int(ts.max())
        self.newest_us = newest if self.newest_us is None else max(self.newest_us, newest)
        return merged

    def expire(self) -> None:
        """Forget windows older than the newest reading by more than ``keep_us`` (after the batch's
        results are out: a batch spanning more than that still sees all of its own windows)."""
        if self.newest_us is not None:
            self._forget_before(_floor(self.newest_us - self.keep_us, self.step_us) - self.step_us)

    def window(self, patients: pa.Array, lo_us: int, hi_us: int) -> pa.Table:
        """Held partials of these patients with lo <= window start <= hi."""
        rows = self.rows if self.rows is not None else self._empty()
        start = _micros(rows[c.WINDOW_START])
        keep = (start >= lo_us) & (start <= hi_us)
        rows = rows.filter(pa.array(keep))
        return rows.filter(pc.is_in(rows[c.PATIENT_KEY], value_set=patients))

    @property
    def size(self) -> int:
        return 0 if self.rows is None else self.rows.num_rows

    def _empty(self) -> pa.Table:
        return window_partials(c.SILVER_SCHEMA.empty_table(), window_seconds=self.seconds)

    def _cover(self, lo_us: int, stored: StoredSilver | None) -> None:
        if self.covered_from_us is not None and lo_us >= self.covered_from_us:
            return
        if stored is not None:
            past = stored(lo_us, self.covered_from_us)
            self.lake_reads += 1
            if past.num_rows:
                partials = window_partials(past, window_seconds=self.seconds)
                held = [self.rows] if self.rows is not None else []
                self.rows = pa.concat_tables([*held, partials.select(self._empty().schema.names)])
        self.covered_from_us = lo_us

    def _forget_before(self, cutoff_us: int) -> None:
        if self.rows is None or self.covered_from_us is None or cutoff_us <= self.covered_from_us:
            return
        old = _micros(self.rows[c.WINDOW_START]) < cutoff_us
        if old.sum() * _PRUNE_FRACTION < len(old):
            return
        self.rows = self.rows.filter(pa.array(~old))
        self.covered_from_us = cutoff_us


@dataclass(frozen=True)
class GoldChanges:
    gold: pa.Table  # c.GOLD_SCHEMA rows of every window the batch touched (minutes and hours)
    rolling: pa.Table  # c.ROLLING_SCHEMA rows of every minute whose trailing window changed


@dataclass
class GoldState:
    """One shard's open minutes and hours."""

    minutes: WindowPartials
    hours: WindowPartials
    extra: dict[str, int] = field(default_factory=dict)

    @classmethod
    def new(cls, *, allowed_lateness_us: int) -> GoldState:
        return cls(
            minutes=WindowPartials(
                60, keep_us=allowed_lateness_us + ROLLING_SPAN_US + 60_000_000, lookback_us=ROLLING_SPAN_US
            ),
            hours=WindowPartials(3600, keep_us=allowed_lateness_us),
        )

    def update(self, silver: pa.Table, *, stored: StoredSilver | None, updated_at_us: int) -> GoldChanges:
        """New Silver rows -> the Gold rows and rolling means they change (nothing read back)."""
        if silver.num_rows == 0:
            return GoldChanges(c.GOLD_SCHEMA.empty_table(), c.ROLLING_SCHEMA.empty_table())
        fresh = window_partials_each(silver, window_seconds=(self.minutes.seconds, self.hours.seconds))
        minutes = self.minutes.update(silver, fresh=fresh[0], stored=stored)
        hours = self.hours.update(silver, fresh=fresh[1], stored=stored)
        gold = pa.concat_tables(
            [
                gold_from_partials(minutes, window_seconds=60, updated_at_us=updated_at_us),
                gold_from_partials(hours, window_seconds=3600, updated_at_us=updated_at_us),
            ]
        )
        rolling = self._rolling(minutes, updated_at_us=updated_at_us)
        self.minutes.expire()
        self.hours.expire()
        return GoldChanges(gold, rolling)

    def _rolling(self, touched: pa.Table, *, updated_at_us: int) -> pa.Table:
        # A changed minute changes the trailing windows of the minutes after it, up to the span.
        starts = _micros(touched[c.WINDOW_START])
        lo, hi = int(starts.min()), int(starts.max())
        patients = pc.unique(touched[c.PATIENT_KEY])
        around = self.minutes.window(patients, lo - ROLLING_SPAN_US, hi + ROLLING_SPAN_US)
        rows = gold_from_partials(around, window_seconds=60, updated_at_us=updated_at_us)
        rolled = rolling_means(rows, updated_at_us=updated_at_us)
        ts = _micros(rolled[c.WINDOW_START])
        return rolled.filter(pa.array((ts >= lo) & (ts <= hi + ROLLING_SPAN_US)))
