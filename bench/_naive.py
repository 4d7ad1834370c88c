"""Gold the way per-element pipelines build it (variant B of ``pipeline_core``): one partial per
reading as a dict, combined pairwise per (patient, window) key, one Gold row per key.

The pipeline itself never combines dicts (it recomputes Gold from the lake, batch by batch); this
module exists so the naive variant does the same arithmetic per element.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
import pyarrow as pa

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
    gold_from_partials,
    window_partials,
)

Partial = dict[str, Any]


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


def _add(x: float | None, y: float | None) -> float | None:
    if x is None:
        return y
    return x if y is None else x + y


def _pick(f: Callable[[Any, Any], Any], x: float | None, y: float | None) -> float | None:
    if x is None:
        return y
    return x if y is None else f(x, y)


class CombinePartialsFn(beam.CombineFn):
    def create_accumulator(self) -> Partial | None:
        return None

    def add_input(self, acc: Partial | None, partial: Partial) -> Partial:
        return partial if acc is None else merge_partials(acc, partial)

    def merge_accumulators(self, accs: Iterable[Partial | None]) -> Partial | None:
        out: Partial | None = None
        for a in accs:
            if a is not None:
                out = a if out is None else merge_partials(out, a)
        return out

    def extract_output(self, acc: Partial | None) -> Partial | None:
        return acc


@functools.cache
def partial_schema() -> pa.Schema:
    return window_partials(c.SILVER_SCHEMA.empty_table(), window_seconds=60).schema


def gold_row(
    patient_key: str, window_start_us: int, window_seconds: int, partial: Partial, updated_at_us: int
) -> dict[str, Any]:
    """One Gold row (as a dict) from one combined partial."""
    row = {**partial, c.PATIENT_KEY: patient_key, c.WINDOW_START: window_start_us}
    schema = partial_schema()
    table = pa.table(
        {
            f.name: pa.array([row[f.name]], pa.int64()).cast(f.type)
            if pa.types.is_timestamp(f.type)
            else pa.array([row[f.name]], f.type)
            for f in schema
        },
        schema=schema,
    )
    return gold_from_partials(table, window_seconds=window_seconds, updated_at_us=updated_at_us).to_pylist()[
        0
    ]
