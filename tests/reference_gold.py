"""Gold partials as they were computed before the hot path was vectorised: Arrow ``group_by`` for a
batch's partials, and a sort and a group-by per "latest value" column to merge them. Kept, unchanged,
as the references :func:`vitals_lake.summaries.window_partials` and
:func:`vitals_lake.gold_state.merge_partials` must match row for row."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.summaries import (
    _ANOMALY_MAX,
    _ANOMALY_SUM,
    _FLAG_COUNTS,
    _LAST_TS,
    _NEWS2_MAX,
    _READING_COUNTS,
    _RISK_RANK,
    _SUM,
    GOLD_ENRICHMENT,
    PARTIAL_LAST,
    PARTIAL_MAX,
    PARTIAL_MIN,
    PARTIAL_SUM,
    _combined_rank,
    _reading_indicators,
)

_KEYS = [c.PATIENT_KEY, c.WINDOW_START]


def merge_partials_by_sorting(partials: pa.Table) -> pa.Table:
    """Rows of ``window_partials`` -> one row per (patient, window start), as if computed at once."""
    if partials.num_rows == 0:
        return partials
    keyed = partials.group_by(_KEYS, use_threads=False).aggregate([])
    if keyed.num_rows == partials.num_rows:
        return partials
    aggs = [(name, "sum") for name in PARTIAL_SUM]
    aggs += [(name, "min") for name in PARTIAL_MIN] + [(name, "max") for name in PARTIAL_MAX]
    merged = partials.group_by(_KEYS, use_threads=False).aggregate(aggs)
    rename = {f"{name}_{how}": name for name, how in aggs}
    merged = merged.rename_columns([rename.get(n, n) for n in merged.column_names])
    merged = merged.sort_by([(k, "ascending") for k in _KEYS])
    columns = {name: merged[name] for name in merged.column_names}
    # "Latest value" per vital: the value measured last, by that vital's own time (null last-times
    # sort first, and "last" skips nulls). Enrichment: as of the window's latest reading.
    for value, at in (*PARTIAL_LAST.items(), *((e, c.LAST_READING_TIME) for e in GOLD_ENRICHMENT)):
        ordered = partials.select([*_KEYS, value, at]).take(
            pc.sort_indices(
                partials,
                sort_keys=[
                    (c.PATIENT_KEY, "ascending", "at_end"),
                    (c.WINDOW_START, "ascending", "at_end"),
                    (at, "ascending", "at_start"),
                ],
            )
        )
        last = ordered.group_by(_KEYS, use_threads=False).aggregate([(value, "last")])
        columns[value] = last.sort_by([(k, "ascending") for k in _KEYS])[f"{value}_last"]
    return pa.table({name: columns[name] for name in partials.column_names}, schema=partials.schema)


def window_partials_by_group_by(silver: pa.Table, *, window_seconds: int) -> pa.Table:
    """One row per (patient, window start) with the partial aggregates of that batch."""
    ts = silver[c.TIMESTAMP]
    start = pc.floor_temporal(ts, multiple=window_seconds, unit="second")
    micros = pc.cast(ts, pa.int64())
    table = pa.table(
        {c.PATIENT_KEY: silver[c.PATIENT_KEY], c.WINDOW_START: start, "__ts": micros}
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
    table = table.sort_by([(c.PATIENT_KEY, "ascending"), ("__ts", "ascending")])
    for v in c.VITAL_NAMES:
        aggs += [(v, "last"), (f"{v}__ts", "max")]
    aggs += [(name, "last") for name in GOLD_ENRICHMENT]
    grouped = table.group_by([c.PATIENT_KEY, c.WINDOW_START], use_threads=False).aggregate(aggs)
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
