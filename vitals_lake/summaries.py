"""Per-patient window aggregates for Gold, computed in two steps that compose.

1. ``window_partials`` (``window_partials_each`` for several window sizes from one sort) turns a batch
   of Silver rows into one partial per (patient, window), a table: count, sum, min, max and the latest
   value per vital with its time, and the risk, score and flag counts.
2. ``vitals_lake.gold_state.merge_partials`` combines partials of the same (patient, window) from
   different batches, so a shard folds late readings in, and ``gold_from_partials`` turns merged
   partials into Gold rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.grouped import GroupedColumn, SortedGroups, take_rows

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
# The enrichment Gold keeps, as of a window's latest reading (the key is Gold's own, not enrichment).
GOLD_ENRICHMENT: Final = tuple(
    f.name for f in c.ENRICHMENT_FIELDS if f.name in c.GOLD_SCHEMA.names and f.name != c.PATIENT_KEY
)


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
    """One row per (patient, window start) with the partial aggregates of that batch, ordered by
    patient and window: the rows are sorted by (patient, time) once and every aggregate is one NumPy
    pass over a column (:mod:`vitals_lake.grouped`), with Arrow ``group_by``'s results."""
    return window_partials_each(silver, window_seconds=(window_seconds,))[0]


def window_partials_each(silver: pa.Table, *, window_seconds: Sequence[int]) -> list[pa.Table]:
    """``window_partials`` for several window sizes (in that order) at the cost of little more than one:
    the sort by (patient, time) and each column's gather into that order are shared, since every size's
    windows are runs of the same order; only the group boundaries differ."""
    micros = np.asarray(pc.cast(silver[c.TIMESTAMP], pa.int64()).to_numpy(zero_copy_only=False), np.int64)
    patient = _sort_rank(silver[c.PATIENT_KEY])
    # Stable: equal times keep their input order, which decides "last" among them.
    order = np.lexsort((micros, patient))
    s_patient, s_micros = patient[order], micros[order]
    windows = [s_micros - s_micros % (seconds * 1_000_000) for seconds in window_seconds]
    sizes = [SortedGroups.runs(order, s_patient, window) for window in windows]
    out: list[dict[str, Any]] = []
    for groups, window in zip(sizes, windows, strict=True):
        first = groups.first_row()
        out.append(
            {
                c.PATIENT_KEY: silver[c.PATIENT_KEY].take(pa.array(first)),
                c.WINDOW_START: pa.array(window[groups.starts], pa.int64()).cast(
                    silver.schema.field(c.TIMESTAMP).type
                ),
                c.READING_COUNT: pa.array(groups.sizes.astype(np.int64)),
                # Sorted by time within a group: its last row is its latest reading.
                c.LAST_READING_TIME: pa.array(micros[groups.last_row()], pa.int64()),
            }
        )

    def each(column: pa.Array | pa.ChunkedArray) -> list[GroupedColumn]:
        grouped = sizes[0].column(column)
        return [grouped, *(grouped.regrouped(groups) for groups in sizes[1:])]

    for v in c.VITAL_NAMES:
        values = pc.cast(silver[v], pa.float64())
        for columns, vital in zip(out, each(values), strict=True):
            columns[c.gold_column(v, _SUM)] = vital.sum(type=pa.float64())
            columns[c.gold_column(v, "min")] = vital.extreme("min")
            columns[c.gold_column(v, "max")] = vital.extreme("max")
            columns[c.gold_column(v, "count")] = pa.array(vital.counts())
            # The time of the last non-null value, so "last" can be chosen across batches.
            row = vital.last_row()
            columns[c.gold_column(v, "last")] = take_rows(values, row)
            columns[c.gold_column(v, _LAST_TS)] = pa.array(
                micros[np.maximum(row, 0)], pa.int64(), mask=row < 0
            )
    for columns, rank in zip(out, each(_combined_rank(silver)), strict=True):
        columns[_RISK_RANK] = rank.extreme("max")
    for columns, news2 in zip(out, each(silver[c.NEWS2_SCORE]), strict=True):
        columns[_NEWS2_MAX] = news2.extreme("max")
    for columns, anomaly in zip(out, each(silver[c.ANOMALY_SCORE]), strict=True):
        columns[_ANOMALY_MAX] = anomaly.extreme("max")
        columns[_ANOMALY_SUM] = anomaly.sum(type=pa.float64())
    for name, present in _reading_indicators(silver).items():
        for columns, grouped in zip(out, each(present), strict=True):
            columns[name] = grouped.sum(type=pa.int64())
    for flag, count in _FLAG_COUNTS.items():
        for columns, grouped in zip(out, each(silver[flag]), strict=True):
            columns[count] = grouped.sum(type=pa.int64())
    for name in GOLD_ENRICHMENT:
        valid = np.asarray(silver[name].is_valid().to_numpy(zero_copy_only=False), dtype=bool)[order]
        for columns, groups in zip(out, sizes, strict=True):
            columns[name] = take_rows(silver[name], groups.last_where(valid))
    schema = partials_schema(silver.schema)  # which also orders the columns
    return [pa.table(columns, schema=schema) for columns in out]


def partials_schema(silver: pa.Schema) -> pa.Schema:
    """The columns of ``window_partials`` for Silver rows of this schema."""
    fields = [silver.field(c.PATIENT_KEY), pa.field(c.WINDOW_START, silver.field(c.TIMESTAMP).type)]
    fields += [pa.field(c.READING_COUNT, pa.int64()), pa.field(c.LAST_READING_TIME, pa.int64())]
    for v in c.VITAL_NAMES:
        fields += [pa.field(c.gold_column(v, stat), pa.float64()) for stat in (_SUM, "min", "max")]
        fields.append(pa.field(c.gold_column(v, "count"), pa.int64()))
    fields += [pa.field(_RISK_RANK, pa.int32()), pa.field(_NEWS2_MAX, silver.field(c.NEWS2_SCORE).type)]
    fields += [pa.field(_ANOMALY_MAX, pa.float64()), pa.field(_ANOMALY_SUM, pa.float64())]
    fields += [pa.field(name, pa.int64()) for name in (*_READING_COUNTS, *_FLAG_COUNTS.values())]
    for v in c.VITAL_NAMES:
        fields += [
            pa.field(c.gold_column(v, "last"), pa.float64()),
            pa.field(c.gold_column(v, _LAST_TS), pa.int64()),
        ]
    fields += [pa.field(name, silver.field(name).type) for name in GOLD_ENRICHMENT]
    return pa.schema([f.with_nullable(True) for f in fields])


def _sort_rank(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per row, the rank of its value among the distinct values in Arrow's sort order (hash once, sort
    the distinct values only)."""
    encoded = pc.dictionary_encode(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values)
    rank = np.empty(len(encoded.dictionary), np.int64)
    rank[np.asarray(pc.sort_indices(encoded.dictionary))] = np.arange(len(encoded.dictionary))
    return rank[np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64)]


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
        c.PATIENT_KEY: partials[c.PATIENT_KEY],
        c.WINDOW_SECONDS: pa.repeat(pa.scalar(window_seconds, pa.int32()), n),
        c.WINDOW_START: start,
        c.WINDOW_END: pc.add(start, pa.scalar(window_seconds * 1_000_000, pa.duration("us"))),
        c.READING_COUNT: partials[c.READING_COUNT],
        c.LAST_READING_TIME: partials[c.LAST_READING_TIME],
        c.UPDATED_AT: pa.repeat(pa.scalar(updated_at_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")), n),
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
    m = minutes.sort_by([(c.PATIENT_KEY, "ascending"), (c.WINDOW_START, "ascending")])
    hour = pc.floor_temporal(m[c.WINDOW_START], multiple=3600, unit="second")
    t = pa.table({c.PATIENT_KEY: m[c.PATIENT_KEY], c.WINDOW_START: hour})
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
    g = t.group_by([c.PATIENT_KEY, c.WINDOW_START], use_threads=False).aggregate(aggs)
    n = g.num_rows
    columns: dict[str, Any] = {
        c.PATIENT_KEY: g[c.PATIENT_KEY],
        c.WINDOW_SECONDS: pa.repeat(pa.scalar(3600, pa.int32()), n),
        c.WINDOW_START: g[c.WINDOW_START],
        c.WINDOW_END: pc.add(g[c.WINDOW_START], pa.scalar(3_600_000_000, pa.duration("us"))),
        c.READING_COUNT: g[f"{c.READING_COUNT}_sum"],
        c.LAST_READING_TIME: g[f"{c.LAST_READING_TIME}_max"],
        c.UPDATED_AT: pa.repeat(pa.scalar(updated_at_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")), n),
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
