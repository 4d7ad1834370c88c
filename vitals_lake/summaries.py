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
_ANOMALY_MEAN: Final = c.gold_column(c.ANOMALY_SCORE, "mean")
_ANOMALY_SUM: Final = "anomaly_score__sum"  # partial only: the mean is sum / scored readings
# Readings counted per window (partial keys = Gold columns): scored, at or above threshold, alert open.
_READING_COUNTS: Final = (c.SCORED_READINGS, c.ANOMALOUS_READINGS, c.ALERT_READINGS)
_ALERT_RANK: Final = c.NEWS2_RESPONSES.index(c.RISK_LEVEL_ON_ALERT)
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
    table = table.append_column(_RISK_RANK, _combined_rank(silver))
    table = table.append_column(_NEWS2_MAX, silver[c.NEWS2_SCORE])
    table = table.append_column(_ANOMALY_MAX, silver[c.ANOMALY_SCORE])
    table = table.append_column(_ANOMALY_SUM, silver[c.ANOMALY_SCORE])
    aggs += [(_RISK_RANK, "max"), (_NEWS2_MAX, "max"), (_ANOMALY_MAX, "max"), (_ANOMALY_SUM, "sum")]
    for name, present in _reading_indicators(silver).items():
        table = table.append_column(name, present)
        aggs.append((name, "sum"))
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
    rename.update({f"{name}_sum": name for name in (_ANOMALY_SUM, *_READING_COUNTS)})
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
        _ANOMALY_SUM: _add(a[_ANOMALY_SUM], b[_ANOMALY_SUM]),
    }
    for count in (*_FLAG_COUNTS.values(), *_READING_COUNTS):
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
    scored = partial[c.SCORED_READINGS] or 0
    row[_ANOMALY_MEAN] = (
        partial[_ANOMALY_SUM] / scored if scored and partial[_ANOMALY_SUM] is not None else None
    )
    for count in (*_FLAG_COUNTS.values(), *_READING_COUNTS):
        row[count] = partial[count] or 0
    for name in GOLD_ENRICHMENT:
        row[name] = partial[name]
    for v in c.VITAL_NAMES:
        n = partial[c.gold_column(v, "count")]
        row[c.gold_column(v, "mean")] = partial[c.gold_column(v, _SUM)] / n if n else None
        for stat in ("min", "max", "last", "count"):
            row[c.gold_column(v, stat)] = partial[c.gold_column(v, stat)]
    return row


def _combined_rank(silver: pa.Table) -> pa.Array | pa.ChunkedArray:
    """Per reading, the risk rank: its NEWS2 response, raised to "medium" while an alert is open."""
    rank = pc.index_in(silver[c.NEWS2_RESPONSE], value_set=pa.array(c.NEWS2_RESPONSES))
    alert = pc.fill_null(silver[c.ALERT_OPEN], False)
    raised = pc.if_else(pc.greater(pc.fill_null(rank, -1), _ALERT_RANK), rank, _ALERT_RANK)
    return pc.if_else(alert, pc.cast(raised, pa.int32()), rank)


def _reading_indicators(silver: pa.Table) -> dict[str, pa.Array | pa.ChunkedArray]:
    """0/1 per reading for each counted condition (a missing value counts as 0)."""
    return {
        c.SCORED_READINGS: pc.cast(pc.is_valid(silver[c.ANOMALY_SCORE]), pa.int32()),
        c.ANOMALOUS_READINGS: pc.cast(pc.fill_null(silver[c.IS_ANOMALY], False), pa.int32()),
        c.ALERT_READINGS: pc.cast(pc.fill_null(silver[c.ALERT_OPEN], False), pa.int32()),
    }


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


def gold_from_silver(silver: pa.Table, *, window_seconds: int, updated_at_us: int) -> pa.Table:
    """Gold rows for every (patient, window) in ``silver``: the whole truth for those windows when
    ``silver`` holds all their readings (it is read back from the lake, so restarts cannot lose any)."""
    partials = window_partials(silver, window_seconds=window_seconds)
    starts = pc.cast(partials[c.WINDOW_START], pa.int64()).to_pylist()
    rows = []
    for start_us, partial in zip(starts, partials.drop_columns([c.WINDOW_START]).to_pylist(), strict=True):
        patient = partial.pop(c.PATIENT_ID)
        rows.append(gold_row(patient, start_us, window_seconds, partial, updated_at_us))
    return gold_table(rows) if rows else c.GOLD_SCHEMA.empty_table()


def hours_from_minutes(minutes: pa.Table, *, updated_at_us: int) -> pa.Table:
    """One-hour Gold rows from the one-minute Gold rows of the same patients and hours (vectorised)."""
    if minutes.num_rows == 0:
        return c.GOLD_SCHEMA.empty_table()
    m = minutes.sort_by([(c.PATIENT_ID, "ascending"), (c.WINDOW_START, "ascending")])
    hour = pc.floor_temporal(m[c.WINDOW_START], multiple=3600, unit="second")
    t = pa.table({c.PATIENT_ID: m[c.PATIENT_ID], c.WINDOW_START: hour})
    aggs: list[tuple[str, str]] = [(c.READING_COUNT, "sum"), (c.LAST_READING_TIME, "max")]
    t = t.append_column(c.READING_COUNT, m[c.READING_COUNT]).append_column(
        c.LAST_READING_TIME, m[c.LAST_READING_TIME]
    )
    for v in c.VITAL_NAMES:
        mean, n = m[c.gold_column(v, "mean")], m[c.gold_column(v, "count")]
        t = t.append_column(f"{v}__sum", pc.multiply(mean, pc.cast(n, pa.float64())))
        for stat in ("min", "max", "count", "last"):
            t = t.append_column(c.gold_column(v, stat), m[c.gold_column(v, stat)])
        aggs += [(f"{v}__sum", "sum"), (c.gold_column(v, "min"), "min"), (c.gold_column(v, "max"), "max")]
        aggs += [(c.gold_column(v, "count"), "sum"), (c.gold_column(v, "last"), "last")]
    rank = pc.index_in(m[c.RISK_LEVEL], value_set=pa.array(c.NEWS2_RESPONSES))
    t = t.append_column(_RISK_RANK, rank).append_column(_NEWS2_MAX, m[_NEWS2_MAX])
    t = t.append_column(_ANOMALY_MAX, m[_ANOMALY_MAX])
    scored = pc.cast(m[c.SCORED_READINGS], pa.float64())
    t = t.append_column(_ANOMALY_SUM, pc.multiply(m[_ANOMALY_MEAN], scored))
    aggs += [(_RISK_RANK, "max"), (_NEWS2_MAX, "max"), (_ANOMALY_MAX, "max"), (_ANOMALY_SUM, "sum")]
    for count in (*_FLAG_COUNTS.values(), *_READING_COUNTS):
        t = t.append_column(count, m[count])
        aggs.append((count, "sum"))
    for name in GOLD_ENRICHMENT:
        t = t.append_column(name, m[name])
        aggs.append((name, "last"))
    # Rows are in time order within a patient, so "last" is the latest minute's value.
    g = t.group_by([c.PATIENT_ID, c.WINDOW_START], use_threads=False).aggregate(aggs)
    n = g.num_rows
    columns: dict[str, Any] = {
        c.PATIENT_ID: g[c.PATIENT_ID],
        c.WINDOW_SECONDS: pa.array([3600] * n, pa.int32()),
        c.WINDOW_START: g[c.WINDOW_START],
        c.WINDOW_END: pc.add(g[c.WINDOW_START], pa.scalar(3_600_000_000, pa.duration("us"))),
        c.READING_COUNT: g[f"{c.READING_COUNT}_sum"],
        c.LAST_READING_TIME: g[f"{c.LAST_READING_TIME}_max"],
        c.UPDATED_AT: pa.array([updated_at_us] * n, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        c.EVENT_DATE: pc.cast(g[c.WINDOW_START], pa.date32()),
        c.RISK_LEVEL: pc.take(pa.array(c.NEWS2_RESPONSES), g[f"{_RISK_RANK}_max"]),
        _NEWS2_MAX: g[f"{_NEWS2_MAX}_max"],
        _ANOMALY_MAX: g[f"{_ANOMALY_MAX}_max"],
    }
    scored_h = g[f"{c.SCORED_READINGS}_sum"]
    columns[_ANOMALY_MEAN] = pc.if_else(
        pc.greater(scored_h, 0), pc.divide(g[f"{_ANOMALY_SUM}_sum"], pc.cast(scored_h, pa.float64())), None
    )
    for count in (*_FLAG_COUNTS.values(), *_READING_COUNTS):
        columns[count] = g[f"{count}_sum"]
    for name in GOLD_ENRICHMENT:
        columns[name] = g[f"{name}_last"]
    for v in c.VITAL_NAMES:
        total = g[c.gold_column(v, "count") + "_sum"]
        columns[c.gold_column(v, "count")] = total
        columns[c.gold_column(v, "mean")] = pc.if_else(
            pc.greater(total, 0), pc.divide(g[f"{v}__sum_sum"], pc.cast(total, pa.float64())), None
        )
        columns[c.gold_column(v, "min")] = g[c.gold_column(v, "min") + "_min"]
        columns[c.gold_column(v, "max")] = g[c.gold_column(v, "max") + "_max"]
        columns[c.gold_column(v, "last")] = g[c.gold_column(v, "last") + "_last"]
    return pa.table({f.name: columns[f.name] for f in c.GOLD_SCHEMA}).cast(c.GOLD_SCHEMA)
