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
_RISK_RANK: Final = "risk_rank"  # index into c.NEWS2_RESPONSES of the highest response reached
_NEWS2_MAX: Final = c.gold_column(c.NEWS2_SCORE, "max")
_ANOMALY_MAX: Final = c.gold_column(c.ANOMALY_SCORE, "max")
_FLAG_COUNTS: Final = {c.flag_column(f): c.gold_column(c.flag_column(f), "count") for f in c.ALERT_FLAGS}
# Enrichment Gold carries as of the window's latest reading.
GOLD_ENRICHMENT: Final = tuple(f.name for f in c.ENRICHMENT_FIELDS if f.name in c.GOLD_SCHEMA.names)


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
    rank = pc.index_in(silver[c.NEWS2_RESPONSE], value_set=pa.array(c.NEWS2_RESPONSES))
    table = table.append_column(_RISK_RANK, rank).append_column(_NEWS2_MAX, silver[c.NEWS2_SCORE])
    table = table.append_column(_ANOMALY_MAX, silver[c.ANOMALY_SCORE])
    aggs += [(_RISK_RANK, "max"), (_NEWS2_MAX, "max"), (_ANOMALY_MAX, "max")]
    for flag, count in _FLAG_COUNTS.items():
        table = table.append_column(count, pc.cast(silver[flag], pa.int32()))
        aggs.append((count, "sum"))
    # Sorting by time first makes the order-dependent "last" aggregate mean "latest in time".
    for name in GOLD_ENRICHMENT:
        table = table.append_column(name, silver[name])
    table = table.sort_by([(c.PATIENT_ID, "ascending"), ("__ts", "ascending")])
    for v in c.VITAL_NAMES:
        aggs += [(v, "last"), (f"{v}__ts", "max")]
    aggs += [(name, "last") for name in GOLD_ENRICHMENT]
    grouped = table.group_by([c.PATIENT_ID, c.WINDOW_START], use_threads=False).aggregate(aggs)
    rename = {"__n_sum": c.READING_COUNT, "__ts_max": c.LAST_READING_TIME}
    rename.update({f"{x}_max": x for x in (_RISK_RANK, _NEWS2_MAX, _ANOMALY_MAX)})
    rename.update({f"{count}_sum": count for count in _FLAG_COUNTS.values()})
    rename.update({f"{name}_last": name for name in GOLD_ENRICHMENT})
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
        _RISK_RANK: _pick(max, a[_RISK_RANK], b[_RISK_RANK]),
        _NEWS2_MAX: _pick(max, a[_NEWS2_MAX], b[_NEWS2_MAX]),
        _ANOMALY_MAX: _pick(max, a[_ANOMALY_MAX], b[_ANOMALY_MAX]),
    }
    for count in _FLAG_COUNTS.values():
        out[count] = (a[count] or 0) + (b[count] or 0)
    latest = b if b[c.LAST_READING_TIME] >= a[c.LAST_READING_TIME] else a
    for name in GOLD_ENRICHMENT:
        out[name] = latest[name]
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
    rank = partial[_RISK_RANK]
    row[c.RISK_LEVEL] = c.NEWS2_RESPONSES[rank] if rank is not None else None
    row[_NEWS2_MAX] = partial[_NEWS2_MAX]
    row[_ANOMALY_MAX] = partial[_ANOMALY_MAX]
    for count in _FLAG_COUNTS.values():
        row[count] = partial[count] or 0
    for name in GOLD_ENRICHMENT:
        row[name] = partial[name]
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
