"""Assemble Silver rows: validated readings + enrichment from admissions + clinical scores.

The gate's rows still hold the raw ``patient_id`` (``c.GATED_SCHEMA``): the patient shard appends the
keys it has not seen with their ids to the identity map, and Silver gets the rest (the key only).

Order matters: the SpO2 scale NEWS2 needs comes from the patient's admission (scale 2 for
hypercapnic respiratory failure), so enrichment runs before scoring.
"""

from __future__ import annotations

import pyarrow as pa

from vitals_lake import contract as c
from vitals_lake.admissions import enrich_readings
from vitals_lake.clinical import derive_clinical
from vitals_lake.isolation import run_isolating
from vitals_lake.news2 import score_news2
from vitals_lake.readings import ParsedBatch, TimeRules, merge_parsed, parse_batch, unreadable


def to_silver(valid: pa.Table, *, patients: pa.Table, key: bytes) -> pa.Table:
    """``valid`` (``readings.VALIDATED_SCHEMA``) -> ``c.GATED_SCHEMA``, same rows, same order."""
    enrichment = enrich_readings(valid, patients, key=key)
    scored_input = valid.append_column(c.SPO2_SCALE, enrichment[c.SPO2_SCALE])
    clinical = derive_clinical(scored_input)
    news2 = score_news2(scored_input)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for f in c.GATED_SCHEMA:
        for source in (valid, enrichment, clinical, news2):
            if f.name in source.column_names:
                columns[f.name] = source[f.name]
                break
        else:
            columns[f.name] = pa.nulls(valid.num_rows, f.type)  # reserved (anomaly score)
    return pa.table(columns, schema=c.GATED_SCHEMA)


def gate_batch(
    bronze: pa.Table, *, time_rules: TimeRules | None, patients: pa.Table, key: bytes
) -> tuple[ParsedBatch, pa.Table]:
    """Parse, check and enrich a batch; a record that makes either step raise is quarantined alone
    (``unreadable_record``) and the rest of the batch goes on, so no record can stall the stream."""

    def gate(part: pa.Table) -> tuple[ParsedBatch, pa.Table]:
        parsed = parse_batch(part, time_rules=time_rules)
        return parsed, to_silver(parsed.valid, patients=patients, key=key)

    results, poison = run_isolating(bronze, gate)
    if not poison and len(results) == 1:
        return results[0]
    parsed = merge_parsed([r[0] for r in results] + ([unreadable(bronze, poison)] if poison else []))
    silver = pa.concat_tables([r[1] for r in results]) if results else c.GATED_SCHEMA.empty_table()
    return parsed, silver
