"""Gold from state: partials merged batch by batch equal Gold computed from all the readings at once."""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.factories import DROP, T0, gated_rows, raw, reading, silver_rows
from vitals_lake import contract as c
from vitals_lake.gold_state import GoldState, merge_partials
from vitals_lake.summaries import gold_from_partials, gold_from_silver, window_partials
from vitals_lake.trends import rolling_means

LATENESS_US = 600 * 1_000_000


def cohort(seed: int, *, patients: int = 4, minutes: int = 90, gated: bool = False) -> pa.Table:
    """Silver rows of a simulated cohort (``gated``: as the gate hands them to a shard, with the id)."""
    rng = random.Random(seed)
    docs = []
    for p in range(patients):
        for i in range(0, minutes * 60, 20):
            extra = {}
            if rng.random() < 0.1:
                extra[c.SPO2] = DROP  # a vital missing from some readings
            if rng.random() < 0.05:
                extra[c.TEMPERATURE] = DROP
            docs.append(
                reading(
                    i,
                    patient=f"P{p:06d}",
                    at=T0 + timedelta(seconds=i + rng.random()),
                    heart_rate=rng.randint(40, 160),
                    respiration_rate=rng.randint(8, 30),
                    **extra,
                )
            )
    docs.sort(key=lambda d: d[c.TIMESTAMP])  # a stream: all patients' readings in time order
    return (gated_rows if gated else silver_rows)([raw(d) for d in docs])


def shuffled_batches(rows: pa.Table, *, size: int, seed: int, jitter: int) -> list[pa.Table]:
    """Batches in roughly time order, with readings moved up to ``jitter`` rows (out of order)."""
    order = np.argsort(
        np.arange(rows.num_rows) + np.random.default_rng(seed).integers(0, jitter, rows.num_rows)
    )
    rows = rows.take(pa.array(order))
    return [rows.slice(i, size) for i in range(0, rows.num_rows, size)]


def same_rows(a: pa.Table, b: pa.Table, *, ignore: tuple[str, ...] = (c.UPDATED_AT,)) -> None:
    key = [(k, "ascending") for k in (c.GOLD_KEY if c.WINDOW_SECONDS in a.column_names else c.ROLLING_KEY)]
    x, y = a.sort_by(key).to_pylist(), b.sort_by(key).to_pylist()
    assert len(x) == len(y)
    for got, want in zip(x, y, strict=True):
        for name, value in want.items():
            if name in ignore:
                continue
            if isinstance(value, float):
                assert got[name] == pytest.approx(value, rel=1e-9), name
            else:
                assert got[name] == value, name


@pytest.mark.parametrize("seconds", [60, 3600])
def test_merged_partials_equal_partials_of_everything(seconds):
    rows = cohort(1)
    parts = [
        window_partials(b, window_seconds=seconds) for b in shuffled_batches(rows, size=37, seed=2, jitter=60)
    ]
    merged = merge_partials(pa.concat_tables(parts))
    same_rows(
        gold_from_partials(merged, window_seconds=seconds, updated_at_us=0),
        gold_from_silver(rows, window_seconds=seconds, updated_at_us=0),
    )


def test_gold_state_batch_by_batch_ends_where_gold_from_all_silver_does():
    rows = cohort(3)
    state = GoldState.new(allowed_lateness_us=LATENESS_US)
    latest: dict[tuple, dict] = {}
    for batch in shuffled_batches(rows, size=50, seed=4, jitter=30):
        changes = state.update(batch, stored=None, updated_at_us=0)
        for row in changes.gold.to_pylist():
            latest[(row[c.PATIENT_KEY], row[c.WINDOW_SECONDS], row[c.WINDOW_START])] = row
    got = pa.Table.from_pylist(list(latest.values()), schema=c.GOLD_SCHEMA)
    for seconds in (60, 3600):
        mine = got.filter(pc.equal(got[c.WINDOW_SECONDS], seconds))
        same_rows(mine, gold_from_silver(rows, window_seconds=seconds, updated_at_us=0))


def test_rolling_means_from_state_equal_rolling_means_of_all_gold_minutes():
    rows = cohort(5, patients=3, minutes=40)
    state = GoldState.new(allowed_lateness_us=LATENESS_US)
    latest: dict[tuple, dict] = {}
    for batch in shuffled_batches(rows, size=40, seed=6, jitter=20):
        for row in state.update(batch, stored=None, updated_at_us=0).rolling.to_pylist():
            latest[(row[c.PATIENT_KEY], row[c.WINDOW_START])] = row
    got = pa.Table.from_pylist(list(latest.values()), schema=c.ROLLING_SCHEMA)
    want = rolling_means(gold_from_silver(rows, window_seconds=60, updated_at_us=0), updated_at_us=0)
    same_rows(got, want)


def test_a_new_state_reads_the_shards_silver_once_so_a_restart_never_shrinks_a_window():
    rows = cohort(7, patients=2, minutes=30)
    before, after = rows.slice(0, rows.num_rows // 2), rows.slice(rows.num_rows // 2)
    calls = []

    def stored(lo_us: int, hi_us: int | None) -> pa.Table:
        calls.append((lo_us, hi_us))
        us = pc.cast(before[c.TIMESTAMP], pa.int64()).to_numpy()
        hi = np.iinfo(np.int64).max if hi_us is None else hi_us
        return before.filter(pa.array((us >= lo_us) & (us < hi)))

    restarted = GoldState.new(allowed_lateness_us=LATENESS_US)
    latest: dict[tuple, dict] = {}
    for batch in shuffled_batches(after, size=25, seed=8, jitter=5):
        for row in restarted.update(batch, stored=stored, updated_at_us=0).gold.to_pylist():
            latest[(row[c.PATIENT_KEY], row[c.WINDOW_SECONDS], row[c.WINDOW_START])] = row
    assert len(calls) == 2  # once for the minutes, once for the hours; never again
    got = pa.Table.from_pylist(list(latest.values()), schema=c.GOLD_SCHEMA)
    hours = got.filter(pc.equal(got[c.WINDOW_SECONDS], 3600))
    # The hour rows hold the readings from before the restart as well as after it.
    want = gold_from_silver(rows, window_seconds=3600, updated_at_us=0)
    same_rows(hours, want)


def test_state_forgets_windows_beyond_the_lateness():
    rows = cohort(9, patients=2, minutes=180)
    state = GoldState.new(allowed_lateness_us=LATENESS_US)
    for batch in shuffled_batches(rows, size=60, seed=10, jitter=3):
        state.update(batch, stored=None, updated_at_us=0)
    # Kept: lateness (10 min) + the rolling look-back (14 min) + a minute or two, per patient.
    assert state.minutes.size <= 2 * (10 + 14 + 3) * 9 // 8
    assert state.hours.size <= 2 * 3


def test_one_batch_longer_than_the_lateness_gets_all_its_rolling_means():
    """A replay can hand a shard hours in one batch: every minute's rolling mean comes out."""
    rows = cohort(11, patients=2, minutes=60)
    state = GoldState.new(allowed_lateness_us=LATENESS_US)
    got = state.update(rows, stored=None, updated_at_us=0).rolling
    want = rolling_means(gold_from_silver(rows, window_seconds=60, updated_at_us=0), updated_at_us=0)
    same_rows(got, want)
