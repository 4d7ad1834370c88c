"""Assemble Silver rows: validated readings + enrichment from admissions + clinical scores.

Order matters: the SpO2 scale NEWS2 needs comes from the patient's admission (scale 2 for
hypercapnic respiratory failure), so enrichment runs before scoring.
"""

from __future__ import annotations

import pyarrow as pa

from vitals_lake import contract as c
from vitals_lake.admissions import enrich_readings
from vitals_lake.clinical import derive_clinical
from vitals_lake.news2 import score_news2


def to_silver(valid: pa.Table, *, patients: pa.Table, key: bytes) -> pa.Table:
    """``valid`` (``readings.VALIDATED_SCHEMA``) -> ``c.SILVER_SCHEMA``, same rows, same order."""
    enrichment = enrich_readings(valid, patients, key=key)
    scored_input = valid.append_column(c.SPO2_SCALE, enrichment[c.SPO2_SCALE])
    clinical = derive_clinical(scored_input)
    news2 = score_news2(scored_input)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for f in c.SILVER_SCHEMA:
        for source in (valid, enrichment, clinical, news2):
            if f.name in source.column_names:
                columns[f.name] = source[f.name]
                break
        else:
            columns[f.name] = pa.nulls(valid.num_rows, f.type)  # reserved (anomaly score)
    return pa.table(columns, schema=c.SILVER_SCHEMA)
