"""Per-patient window aggregates for Gold, computed in two steps that compose.

1. ``window_partials``: one vectorised ``group_by`` turns a batch of Silver rows into one partial per
   (patient, window): count, sum, min, max and last value per vital.
2. ``merge_partials`` combines partials of the same (patient, window) from different batches, so the
   streaming pipeline can fold late readings in, and ``gold_row`` turns the result into a Gold row.

A partial is a plain dict keyed by Gold's own column names, cheap for Beam to pickle.
"""

from __future__ import annotations

from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c

Partial = dict[str, Any]
_SUM: Final = "sum"
_LAST_TS: Final = "last_ts"  # per vital: when its last value was measured (microseconds)


def window_partials(silver: pa.Table, *, window_seconds: int) -> pa.Table:
    """One row per (patient, window start) with the partial aggregates of that batch."""
    ts = silver[c.TIMESTAMP]
    start = pc.floor_temporal(ts, multiple=window_seconds, unit="second")
    micros = pc.cast(ts, pa.int64())
    table = pa.table(
        {c.PATIENT_ID: silver[c.PATIENT_ID], c.WINDOW_START: start, "__ts": micros}
    ).append_column("__n", pa.array([1] * silver.num_rows, pa.int32()))
    aggs: list[tuple[str, str]] = [("__n", "sum"), ("__ts", "max")]
    for v in c.VITAL_NAMES:
        values = pc.cast(silver[v], pa.float64())
        table = table.append_column(v, values)
        # The time of each non-null value, so "last" can be chosen across batches.
        table = table.append_column(
            f"{v}__ts", pc.if_else(pc.is_valid(values), micros, pa.scalar(None, pa.int64()))
        )
        aggs += [(v, "sum"), (v, "min"), (v, "max"), (v, "count")]
    # Sorting by time first makes the order-dependent "last" aggregate mean "latest in time".
    table = table.sort_by([(c.PATIENT_ID, "ascending"), ("__ts", "ascending")])
    for v in c.VITAL_NAMES:
        aggs += [(v, "last"), (f"{v}__ts", "max")]
    grouped = table.group_by([c.PATIENT_ID, c.WINDOW_START], use_threads=False).aggregate(aggs)
    rename = {"__n_sum": c.READING_COUNT, "__ts_max": c.LAST_READING_TIME}
    for v in c.VITAL_NAMES:
        rename.update(
            {
                f"{v}_sum": c.gold_column(v, _SUM),
                f"{v}_min": c.gold_column(v, "min"),
                f"{v}_max": c.gold_column(v, "max"),
                f"{v}_count": c.gold_column(v, "count"),
                f"{v}_last": c.gold_column(v, "last"),
                f"{v}__ts_max": c.gold_column(v, _LAST_TS),
            }
        )
    return grouped.rename_columns([rename.get(n, n) for n in grouped.column_names])


def merge_partials(a: Partial, b: Partial) -> Partial:
    """Combine two partials of the same (patient, window); associative and commutative."""
    out: Partial = {
        c.READING_COUNT: a[c.READING_COUNT] + b[c.READING_COUNT],
        c.LAST_READING_TIME: max(a[c.LAST_READING_TIME], b[c.LAST_READING_TIME]),
    }
    for v in c.VITAL_NAMES:
        s, mn, mx, n = (c.gold_column(v, k) for k in (_SUM, "min", "max", "count"))
        last, last_ts = c.gold_column(v, "last"), c.gold_column(v, _LAST_TS)
        out[s] = _add(a[s], b[s])
        out[mn] = _pick(min, a[mn], b[mn])
        out[mx] = _pick(max, a[mx], b[mx])
        out[n] = a[n] + b[n]
        a_ts, b_ts = a[last_ts], b[last_ts]
        newer_b = a_ts is None or (b_ts is not None and b_ts >= a_ts)
        out[last], out[last_ts] = (b[last], b_ts) if newer_b else (a[last], a_ts)
    return out


def gold_row(
    patient_id: str, window_start_us: int, window_seconds: int, partial: Partial, updated_at_us: int
) -> dict[str, Any]:
    """A ``c.GOLD_SCHEMA`` row (timestamps as microseconds since the epoch)."""
    row: dict[str, Any] = {
        c.PATIENT_ID: patient_id,
        c.WINDOW_SECONDS: window_seconds,
        c.WINDOW_START: window_start_us,
        c.WINDOW_END: window_start_us + window_seconds * 1_000_000,
        c.READING_COUNT: partial[c.READING_COUNT],
        c.LAST_READING_TIME: partial[c.LAST_READING_TIME],
        c.UPDATED_AT: updated_at_us,
        c.EVENT_DATE: window_start_us // 86_400_000_000,
    }
    for v in c.VITAL_NAMES:
        n = partial[c.gold_column(v, "count")]
        row[c.gold_column(v, "mean")] = partial[c.gold_column(v, _SUM)] / n if n else None
        for stat in ("min", "max", "last", "count"):
            row[c.gold_column(v, stat)] = partial[c.gold_column(v, stat)]
    return row


def gold_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Build Gold rows into an Arrow table (integers for timestamps and dates are converted)."""
    columns: dict[str, pa.Array] = {}
    for f in c.GOLD_SCHEMA:
        values = [r[f.name] for r in rows]
        if pa.types.is_timestamp(f.type):
            columns[f.name] = pa.array(values, pa.int64()).cast(f.type)
        elif pa.types.is_date32(f.type):
            columns[f.name] = pa.array(values, pa.int32()).cast(pa.date32())
        else:
            columns[f.name] = pa.array(values, f.type)
    return pa.table(columns, schema=c.GOLD_SCHEMA)


def _add(x: float | None, y: float | None) -> float | None:
    if x is None:
        return y
    return x if y is None else x + y


def _pick(f: Any, x: float | None, y: float | None) -> float | None:
    if x is None:
        return y
    return x if y is None else f(x, y)
