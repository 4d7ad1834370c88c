"""Gold and the trend tables written to the lake.

The hot path (the pipeline's Gold committer and :class:`vitals_lake.engine.BatchEngine`) upserts the
rows the shards computed from their state (:mod:`vitals_lake.gold_state`): :func:`upsert_gold_rows`,
:func:`upsert_rolling_rows`, then :func:`derive_diagnosis_hourly` for the hours they touched.
Crash recovery rebuilds windows from Silver instead (:func:`upsert_gold_windows`, :func:`derive_trends`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.lake import BatchMarker, Lake, TimeSpan, one_per_key
from vitals_lake.summaries import gold_from_silver, hours_from_minutes
from vitals_lake.trends import DIAGNOSIS_INPUT_COLUMNS, diagnosis_hourly, rolling_means


def upsert_gold_windows(lake: Lake, changed: pa.Table, *, batch_id: str) -> pa.Table:
    """Recompute and upsert the Gold rows of ``changed`` (patient_key, window_seconds, window_start);
    return the rows written.

    Beam's windows decide *when* a window changed (triggers, lateness); the lake decides *what* it
    holds: minutes are recomputed from Silver (de-duplicated and committed just before) and hours
    from Gold's minutes. A pane alone would not do: after a restart Beam's window state is empty,
    and an accumulating pane would replace a fuller Gold row with the readings since the restart.
    """
    now = time.time_ns() // 1000
    patients = pc.unique(changed[c.PATIENT_KEY])
    written: list[pa.Table] = []
    minutes = changed.filter(pc.equal(changed[c.WINDOW_SECONDS], 60))
    if minutes.num_rows:
        lo, hi = pc.min(minutes[c.WINDOW_START]).as_py(), pc.max(minutes[c.WINDOW_START]).as_py()
        span = TimeSpan(c.TIMESTAMP, lo, hi + timedelta(seconds=59.999999))
        silver = read_patients(lake, "silver", span, patients)
        fresh = gold_from_silver(silver, window_seconds=60, updated_at_us=now)
        lake.upsert(
            "gold", fresh, keys=c.GOLD_KEY, time_column=c.WINDOW_START, marker=BatchMarker("gold", batch_id)
        )
        written.append(fresh)
    hours = pc.unique(pc.floor_temporal(changed[c.WINDOW_START], multiple=3600, unit="second"))
    if len(hours):
        lo, hi = pc.min(hours).as_py(), pc.max(hours).as_py()
        span = _gold_span(lo, hi + timedelta(seconds=3599))
        gold = read_patients(lake, "gold", span, patients, where=_minutes)
        hourly = hours_from_minutes(gold, updated_at_us=now)
        lake.upsert(
            "gold",
            hourly,
            keys=c.GOLD_KEY,
            time_column=c.WINDOW_START,
            marker=BatchMarker("gold_hours", batch_id),
        )
        written.append(hourly)
    return pa.concat_tables(written) if written else c.GOLD_SCHEMA.empty_table()


def changed_minutes(rows: pa.Table) -> pa.Table:
    """(patient_key, window_start, window_seconds = 60) of every patient-minute with a reading in ``rows``:
    the input of :func:`upsert_gold_windows` outside Beam (the bare loop, recovery)."""
    minute = pc.floor_temporal(rows[c.TIMESTAMP], multiple=60, unit="second")
    keys = pa.table({c.PATIENT_KEY: rows[c.PATIENT_KEY], c.WINDOW_START: minute})
    keys = keys.group_by([c.PATIENT_KEY, c.WINDOW_START], use_threads=False).aggregate([])
    return keys.append_column(c.WINDOW_SECONDS, pa.repeat(pa.scalar(60, pa.int32()), keys.num_rows))


def derive_trends(lake: Lake, gold: pa.Table, *, batch_id: str) -> None:
    """Recompute the per-diagnosis hours and the per-patient rolling averages that ``gold`` (the rows
    one Gold commit wrote) touched."""
    now = time.time_ns() // 1000
    derive_diagnosis_hourly(lake, gold, batch_id=batch_id)
    minutes = gold.filter(pc.equal(gold[c.WINDOW_SECONDS], 60))
    if minutes.num_rows:
        # A changed minute also changes the trailing windows of the minutes after it.
        span = timedelta(minutes=c.ROLLING_MINUTES - 1)
        lo, hi = pc.min(minutes[c.WINDOW_START]).as_py(), pc.max(minutes[c.WINDOW_START]).as_py()
        patients = pc.unique(minutes[c.PATIENT_KEY])
        window = read_patients(lake, "gold", _gold_span(lo - span, hi + span), patients, where=_minutes)
        rolled = rolling_means(window, updated_at_us=now)
        ts = rolled[c.WINDOW_START]
        rolled = rolled.filter(
            pc.and_(
                pc.greater_equal(ts, pa.scalar(lo, ts.type)),
                pc.less_equal(ts, pa.scalar(hi + span, ts.type)),
            )
        )
        upsert_rolling_rows(lake, rolled, batch_id=batch_id)


def read_patients(
    lake: Lake,
    layer: c.Layer,
    span: TimeSpan,
    patients: pa.Array,
    *,
    by: str = c.PATIENT_KEY,
    where: pc.Expression | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Rows in a span, then only these patients (``patients``: values of column ``by``). The patient
    filter runs after the scan: files written by MERGE store strings as string_view, which an `isin`
    pushed down to their statistics does not match."""
    rows = lake.read(layer, columns=columns, where=where, span=span)
    return rows.filter(pc.is_in(rows[by], value_set=patients))


def _gold_span(lo: datetime, hi: datetime) -> TimeSpan:
    return TimeSpan(c.WINDOW_START, lo, hi)


_minutes: Final = pc.field(c.WINDOW_SECONDS) == 60
_hours: Final = pc.field(c.WINDOW_SECONDS) == 3600


def newest_per_key(rows: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """One row per key: the one computed last (a commit interval may hold two batches' versions)."""
    if rows.num_rows == 0:
        return rows
    return one_per_key(rows.sort_by([(c.UPDATED_AT, "ascending")]), keys, keep="last")


def upsert_gold_rows(lake: Lake, rows: pa.Table, *, batch_id: str) -> pa.Table:
    """Upsert Gold rows computed by the shards (minutes and hours); return the rows written."""
    rows = newest_per_key(rows, c.GOLD_KEY)
    lake.upsert(
        "gold", rows, keys=c.GOLD_KEY, time_column=c.WINDOW_START, marker=BatchMarker("gold", batch_id)
    )
    return rows


def upsert_rolling_rows(lake: Lake, rows: pa.Table, *, batch_id: str) -> None:
    """Upsert the rolling means the shards computed."""
    rows = newest_per_key(rows, c.ROLLING_KEY)
    lake.upsert(
        "rolling",
        rows,
        keys=c.ROLLING_KEY,
        time_column=c.WINDOW_START,
        marker=BatchMarker("rolling", batch_id),
    )


def derive_diagnosis_hourly(lake: Lake, gold: pa.Table, *, batch_id: str) -> None:
    """Recompute the per-diagnosis hours that ``gold`` (the rows one Gold commit wrote) touched.

    A diagnosis-hour sums over every patient of every shard, so it is read from Gold's hour rows of
    those hours (one row per patient and hour: the read is bounded by the hours touched, not the lake).
    """
    hours = gold.filter(pc.equal(gold[c.WINDOW_SECONDS], 3600))
    if hours.num_rows == 0:
        return
    lo, hi = pc.min(hours[c.WINDOW_START]).as_py(), pc.max(hours[c.WINDOW_START]).as_py()
    columns = list(DIAGNOSIS_INPUT_COLUMNS)
    hour_rows = lake.read("gold", columns=columns, where=_hours, span=_gold_span(lo, hi))
    summary = diagnosis_hourly(hour_rows, updated_at_us=time.time_ns() // 1000)
    lake.upsert(
        "diagnosis_hourly",
        summary,
        keys=c.DIAGNOSIS_HOURLY_KEY,
        time_column=c.WINDOW_START,
        marker=BatchMarker("diagnosis_hourly", batch_id),
        replace_range=True,
    )
