"""Seed-two summaries derived from Gold: per diagnosis per hour, and per-patient rolling averages.

Both are recomputed from Gold for exactly the hours and minutes a Gold commit touched, so a late
reading that updates a Gold window also updates the summaries built on it.
"""

from __future__ import annotations

import itertools
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c

_UTC_US: Final = pa.timestamp("us", tz="UTC")
_MINUTE_US: Final = 60_000_000


def diagnosis_hourly(hour_rows: pa.Table, *, updated_at_us: int) -> pa.Table:
    """Gold one-hour rows (``window_seconds`` = 3600) -> one row per diagnosis per hour."""
    if hour_rows.num_rows == 0:
        return c.DIAGNOSIS_HOURLY_SCHEMA.empty_table()
    dx = pc.fill_null(hour_rows[c.DIAGNOSIS_CODE], c.UNKNOWN_DIAGNOSIS)
    t = pa.table({c.DIAGNOSIS_CODE: dx, c.WINDOW_START: hour_rows[c.WINDOW_START]})
    t = t.append_column("__one", pa.array(np.ones(hour_rows.num_rows, dtype=np.int32)))
    t = t.append_column(c.READING_COUNT, pc.cast(hour_rows[c.READING_COUNT], pa.int64()))
    aggs: list[tuple[str, str]] = [("__one", "sum"), (c.READING_COUNT, "sum")]
    for v in c.VITAL_NAMES:
        mean, count = c.gold_column(v, "mean"), c.gold_column(v, "count")
        # Means weighted by how many readings each patient contributed.
        t = t.append_column(
            f"{v}__sum", pc.multiply(hour_rows[mean], pc.cast(hour_rows[count], pa.float64()))
        )
        t = t.append_column(f"{v}__n", pc.cast(hour_rows[count], pa.int64()))
        aggs += [(f"{v}__sum", "sum"), (f"{v}__n", "sum")]
    news2_max = c.gold_column(c.NEWS2_SCORE, "max")
    t = t.append_column(news2_max, hour_rows[news2_max])
    aggs.append((news2_max, "max"))
    for f in c.ALERT_FLAGS:
        name = c.gold_column(c.flag_column(f), "count")
        t = t.append_column(name, pc.cast(hour_rows[name], pa.int64()))
        aggs.append((name, "sum"))
    high = pc.cast(pc.fill_null(pc.equal(hour_rows[c.RISK_LEVEL], "high"), False), pa.int32())
    t = t.append_column(c.HIGH_RISK_PATIENTS, high)
    aggs.append((c.HIGH_RISK_PATIENTS, "sum"))
    g = t.group_by([c.DIAGNOSIS_CODE, c.WINDOW_START], use_threads=False).aggregate(aggs)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        c.DIAGNOSIS_CODE: g[c.DIAGNOSIS_CODE],
        c.WINDOW_START: g[c.WINDOW_START],
        c.PATIENTS_COUNT: pc.cast(g["__one_sum"], pa.int32()),
        c.READING_COUNT: g[f"{c.READING_COUNT}_sum"],
    }
    for v in c.VITAL_NAMES:
        n = g[f"{v}__n_sum"]
        columns[c.gold_column(v, "mean")] = pc.if_else(
            pc.greater(n, 0), pc.divide(g[f"{v}__sum_sum"], pc.cast(n, pa.float64())), None
        )
    columns[news2_max] = g[f"{news2_max}_max"]
    for f in c.ALERT_FLAGS:
        name = c.gold_column(c.flag_column(f), "count")
        columns[name] = g[f"{name}_sum"]
    columns[c.HIGH_RISK_PATIENTS] = pc.cast(g[f"{c.HIGH_RISK_PATIENTS}_sum"], pa.int32())
    columns[c.UPDATED_AT] = pa.array([updated_at_us] * g.num_rows, pa.int64()).cast(_UTC_US)
    columns[c.EVENT_DATE] = pc.cast(g[c.WINDOW_START], pa.date32())
    return pa.table(columns, schema=c.DIAGNOSIS_HOURLY_SCHEMA)


def rolling_means(minute_rows: pa.Table, *, minutes: int = c.ROLLING_MINUTES, updated_at_us: int) -> pa.Table:
    """Gold one-minute rows -> per patient and minute, the mean of each vital over the trailing
    ``minutes`` minutes (this minute included), weighted by readings. One NumPy pass per patient."""
    if minute_rows.num_rows == 0:
        return c.ROLLING_SCHEMA.empty_table()
    rows = minute_rows.sort_by([(c.PATIENT_ID, "ascending"), (c.WINDOW_START, "ascending")])
    patients = rows[c.PATIENT_ID].to_numpy(zero_copy_only=False)
    starts = pc.cast(rows[c.WINDOW_START], pa.int64()).to_numpy()
    counts = rows[c.READING_COUNT].to_numpy(zero_copy_only=False).astype(np.int64)
    sums: dict[str, np.ndarray] = {}
    ns: dict[str, np.ndarray] = {}
    for v in c.VITAL_NAMES:
        n = pc.fill_null(rows[c.gold_column(v, "count")], 0).to_numpy(zero_copy_only=False).astype(np.float64)
        mean = pc.fill_null(rows[c.gold_column(v, "mean")], 0.0).to_numpy(zero_copy_only=False)
        sums[v], ns[v] = mean * n, n
    out_counts = np.zeros(len(starts), dtype=np.int64)
    out_means = {v: np.full(len(starts), np.nan) for v in c.VITAL_NAMES}
    bounds = np.flatnonzero(np.r_[True, patients[1:] != patients[:-1], True])
    span = minutes * _MINUTE_US
    for lo, hi in itertools.pairwise(bounds):
        t = starts[lo:hi]
        first = np.searchsorted(t, t - span, side="right")  # rows with start > t - span
        out_counts[lo:hi] = _trailing_sum(counts[lo:hi], first)
        for v in c.VITAL_NAMES:
            total, n = _trailing_sum(sums[v][lo:hi], first), _trailing_sum(ns[v][lo:hi], first)
            with np.errstate(invalid="ignore", divide="ignore"):
                out_means[v][lo:hi] = np.where(n > 0, total / n, np.nan)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        c.PATIENT_ID: rows[c.PATIENT_ID],
        c.WINDOW_START: rows[c.WINDOW_START],
        c.READING_COUNT: pa.array(out_counts, pa.int64()),
    }
    for v in c.VITAL_NAMES:
        columns[c.rolling_column(v)] = pa.array(out_means[v], pa.float64(), from_pandas=True)
    columns[c.UPDATED_AT] = pa.array([updated_at_us] * rows.num_rows, pa.int64()).cast(_UTC_US)
    columns[c.EVENT_DATE] = pc.cast(rows[c.WINDOW_START], pa.date32())
    return pa.table(columns, schema=c.ROLLING_SCHEMA)


def _trailing_sum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Sum of x[first[i] .. i] for every i, from one cumulative sum."""
    cs = np.r_[0, np.cumsum(x)]
    return cs[1 : len(x) + 1] - cs[first]
