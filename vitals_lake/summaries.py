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


# How partials of the same window combine (vitals_lake.gold_state.merge_partials), by column.
PARTIAL_SUM: Final = (
    c.READING_COUNT,
    *(c.gold_column(v, name) for v in c.VITAL_NAMES for name in (_SUM, "count")),
    _ANOMALY_SUM,
    *_READING_COUNTS,
    *_FLAG_COUNTS.values(),
)
PARTIAL_MIN: Final = tuple(c.gold_column(v, "min") for v in c.VITAL_NAMES)
PARTIAL_MAX: Final = (
    c.LAST_READING_TIME,
    *(c.gold_column(v, name) for v in c.VITAL_NAMES for name in ("max", _LAST_TS)),
    _RISK_RANK,
    _NEWS2_MAX,
    _ANOMALY_MAX,
)
# Latest value per vital -> the column holding when it was measured.
PARTIAL_LAST: Final = {c.gold_column(v, "last"): c.gold_column(v, _LAST_TS) for v in c.VITAL_NAMES}


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


def gold_from_partials(partials: pa.Table, *, window_seconds: int, updated_at_us: int) -> pa.Table:
    """``c.GOLD_SCHEMA`` rows from ``window_partials`` output: means from sums and counts, the risk
    level from its rank (vectorised: one Arrow expression per column, no row loop)."""
    n = partials.num_rows
    start = partials[c.WINDOW_START]
    columns: dict[str, Any] = {
        c.PATIENT_ID: partials[c.PATIENT_ID],
        c.WINDOW_SECONDS: pa.array([window_seconds] * n, pa.int32()),
        c.WINDOW_START: start,
        c.WINDOW_END: pc.add(start, pa.scalar(window_seconds * 1_000_000, pa.duration("us"))),
        c.READING_COUNT: partials[c.READING_COUNT],
        c.LAST_READING_TIME: partials[c.LAST_READING_TIME],
        c.UPDATED_AT: pa.array([updated_at_us] * n, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        c.EVENT_DATE: pc.cast(start, pa.date32()),
        c.RISK_LEVEL: pc.take(pa.array(c.NEWS2_RESPONSES), partials[_RISK_RANK]),
        _NEWS2_MAX: partials[_NEWS2_MAX],
        _ANOMALY_MAX: partials[_ANOMALY_MAX],
        _ANOMALY_MEAN: _mean(partials[_ANOMALY_SUM], partials[c.SCORED_READINGS]),
    }
    for count in (*_FLAG_COUNTS.values(), *_READING_COUNTS):
        columns[count] = pc.fill_null(partials[count], 0)
    for name in GOLD_ENRICHMENT:
        columns[name] = partials[name]
    for v in c.VITAL_NAMES:
        columns[c.gold_column(v, "mean")] = _mean(
            partials[c.gold_column(v, _SUM)], partials[c.gold_column(v, "count")]
        )
        for stat in ("min", "max", "last", "count"):
            columns[c.gold_column(v, stat)] = partials[c.gold_column(v, stat)]
    return pa.table({f.name: columns[f.name] for f in c.GOLD_SCHEMA}).cast(c.GOLD_SCHEMA)


def _mean(total: pa.ChunkedArray, count: pa.ChunkedArray) -> pa.ChunkedArray:
    """total / count, null where nothing was counted."""
    counted = pc.greater(pc.fill_null(count, 0), 0)
    return pc.if_else(counted, pc.divide(pc.cast(total, pa.float64()), pc.cast(count, pa.float64())), None)


def gold_from_silver(silver: pa.Table, *, window_seconds: int, updated_at_us: int) -> pa.Table:
    """Gold rows for every (patient, window) in ``silver``: the whole truth for those windows when
    ``silver`` holds all their readings (it is read back from the lake, so restarts cannot lose any)."""
    if silver.num_rows == 0:
        return c.GOLD_SCHEMA.empty_table()
    partials = window_partials(silver, window_seconds=window_seconds)
    return gold_from_partials(partials, window_seconds=window_seconds, updated_at_us=updated_at_us)


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
