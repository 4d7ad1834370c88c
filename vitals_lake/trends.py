"""Seed-two summaries derived from Gold: per diagnosis per hour, and per-patient rolling averages.

Both are recomputed from Gold for exactly the hours and minutes a Gold commit touched, so a late
reading that updates a Gold window also updates the summaries built on it.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c

_UTC_US: Final = pa.timestamp("us", tz="UTC")
_MINUTE_US: Final = 60_000_000


# The Gold columns diagnosis_hourly reads (a reader of Gold's hour rows need decode no others).
DIAGNOSIS_INPUT_COLUMNS: Final = (
    c.DIAGNOSIS_CODE,
    c.WINDOW_START,
    c.READING_COUNT,
    *(c.gold_column(v, stat) for v in c.VITAL_NAMES for stat in ("mean", "count")),
    c.gold_column(c.NEWS2_SCORE, "max"),
    *(c.gold_column(c.flag_column(f), "count") for f in c.ALERT_FLAGS),
    c.RISK_LEVEL,
)


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
    columns[c.UPDATED_AT] = pa.repeat(pa.scalar(updated_at_us, pa.int64()).cast(_UTC_US), g.num_rows)
    columns[c.EVENT_DATE] = pc.cast(g[c.WINDOW_START], pa.date32())
    return pa.table(columns, schema=c.DIAGNOSIS_HOURLY_SCHEMA)


def rolling_means(minute_rows: pa.Table, *, minutes: int = c.ROLLING_MINUTES, updated_at_us: int) -> pa.Table:
    """Gold one-minute rows -> per patient and minute, the mean of each vital over the trailing
    ``minutes`` minutes (this minute included), weighted by readings.

    Whole-batch NumPy: rows sorted by (patient, minute) hold at most one row per patient and minute,
    so a trailing window is this row plus at most ``minutes - 1`` rows before it; one vectorised pass
    per lag adds the lagged row where it belongs to the same patient and lies within the window."""
    if minute_rows.num_rows == 0:
        return c.ROLLING_SCHEMA.empty_table()
    rows = minute_rows.sort_by([(c.PATIENT_KEY, "ascending"), (c.WINDOW_START, "ascending")])
    patients = rows[c.PATIENT_KEY].combine_chunks()
    segment = np.cumsum(np.r_[0, pc.not_equal(patients[1:], patients[:-1]).to_numpy(zero_copy_only=False)])
    starts = pc.cast(rows[c.WINDOW_START], pa.int64()).to_numpy()
    values = {c.READING_COUNT: rows[c.READING_COUNT].to_numpy(zero_copy_only=False).astype(np.float64)}
    for v in c.VITAL_NAMES:
        n = pc.fill_null(rows[c.gold_column(v, "count")], 0).to_numpy(zero_copy_only=False).astype(np.float64)
        mean = pc.fill_null(rows[c.gold_column(v, "mean")], 0.0).to_numpy(zero_copy_only=False)
        values[f"{v}_n"], values[f"{v}_sum"] = n, mean * n
    totals = {name: x.copy() for name, x in values.items()}
    span = minutes * _MINUTE_US
    for lag in range(1, minutes):
        if lag >= len(starts):
            break
        same = (segment[lag:] == segment[:-lag]) & (starts[:-lag] > starts[lag:] - span)
        if not same.any():
            break  # rows are sorted: nothing further back can be in a window either
        for name, x in values.items():
            totals[name][lag:] += np.where(same, x[:-lag], 0.0)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        c.PATIENT_KEY: rows[c.PATIENT_KEY],
        c.WINDOW_START: rows[c.WINDOW_START],
        c.READING_COUNT: pa.array(totals[c.READING_COUNT].astype(np.int64), pa.int64()),
    }
    for v in c.VITAL_NAMES:
        total, n = totals[f"{v}_sum"], totals[f"{v}_n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, total / n, np.nan)
        columns[c.rolling_column(v)] = pa.array(mean, pa.float64(), from_pandas=True)
    columns[c.UPDATED_AT] = pa.array(np.full(rows.num_rows, updated_at_us, np.int64)).cast(_UTC_US)
    columns[c.EVENT_DATE] = pc.cast(rows[c.WINDOW_START], pa.date32())
    return pa.table(columns, schema=c.ROLLING_SCHEMA)
