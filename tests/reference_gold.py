"""Gold partials merged as they were before the hot path was vectorised: a sort and a group-by per
"latest value" column. Kept, unchanged, as the reference
:func:`vitals_lake.gold_state.merge_partials` must match row for row."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.summaries import GOLD_ENRICHMENT, PARTIAL_LAST, PARTIAL_MAX, PARTIAL_MIN, PARTIAL_SUM

_KEYS = [c.PATIENT_ID, c.WINDOW_START]


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
                    (c.PATIENT_ID, "ascending", "at_end"),
                    (c.WINDOW_START, "ascending", "at_end"),
                    (at, "ascending", "at_start"),
                ],
            )
        )
        last = ordered.group_by(_KEYS, use_threads=False).aggregate([(value, "last")])
        columns[value] = last.sort_by([(k, "ascending") for k in _KEYS])[f"{value}_last"]
    return pa.table({name: columns[name] for name in partials.column_names}, schema=partials.schema)
