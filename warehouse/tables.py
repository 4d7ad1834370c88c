"""Warehouse tables: which lake data lands where, keyed how, partitioned and clustered how.

Both warehouses append (BigQuery streaming inserts cannot update); a row's *version* column orders
re-sent versions of the same key and the views keep the newest per key. A retried write of the same
version carries the same insert id, so BigQuery drops it within its de-duplication window and the
DuckDB sink skips it by (key, version).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import pyarrow as pa

from vitals_lake import contract as c

DEAD_LETTER_TABLE: Final = "dead_letter"
DEAD_LETTER_SCHEMA: Final = pa.schema(
    [
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("insert_id", pa.string(), nullable=False),
        pa.field("row_json", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("failed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True, kw_only=True)
class WarehouseTable:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]  # identifies a logical row
    version: str | None  # orders versions of the same key (None: rows never change)
    partition: str  # a DATE column: BigQuery partitions by it
    clustering: tuple[str, ...]  # BigQuery clustering, at most four columns

    def insert_ids(self, rows: pa.Table) -> list[str]:
        """Deterministic per (key, version): a retried insert of the same row is recognised."""
        cols = [*self.key, *([self.version] if self.version else [])]
        values = zip(*(rows[col].to_pylist() for col in cols), strict=True)
        return [hashlib.sha256(repr((self.name, *v)).encode()).hexdigest()[:32] for v in values]


WAREHOUSE_TABLES: Final[dict[str, WarehouseTable]] = {
    t.name: t
    for t in (
        WarehouseTable(
            name=c.GOLD_TABLE,
            schema=c.GOLD_SCHEMA,
            # The pseudonymous key, not the patient id: an insert id (a plain hash of the key) is kept
            # where analysts read it (dead letters), and a hash of an id could be reversed by trying ids.
            key=(c.PATIENT_KEY, c.WINDOW_SECONDS, c.WINDOW_START),
            version=c.UPDATED_AT,
            partition=c.EVENT_DATE,
            clustering=(c.WARD, c.PATIENT_KEY),
        ),
        WarehouseTable(
            name=c.ALERTS_TABLE,
            schema=c.ALERTS_SCHEMA,
            key=(c.ALERT_ID, c.ALERT_STATE, c.EVENT_TIME),
            version=None,
            partition=c.EVENT_DATE,
            clustering=(c.WARD, c.PATIENT_KEY),
        ),
        WarehouseTable(
            name=c.DQ_METRICS_TABLE,
            schema=c.DQ_METRICS_SCHEMA,
            key=(c.BATCH_ID, c.LAYER, c.RULE),
            version=None,
            partition=c.EVENT_DATE,
            clustering=(c.RULE,),
        ),
        WarehouseTable(
            # The identity map (restricted, like every base table): the identity view reads it.
            name=c.PATIENT_KEYS_TABLE,
            schema=c.PATIENT_KEYS_SCHEMA,
            key=c.PATIENT_KEYS_KEY,
            version=None,
            partition="",  # one row per patient: small, not partitioned
            clustering=(),
        ),
        WarehouseTable(
            name=c.DIAGNOSIS_TABLE,
            schema=c.DIAGNOSIS_SCHEMA,
            key=(c.DIAGNOSIS_CODE,),
            version=c.LOADED_AT,
            partition="",  # small reference table: not partitioned
            clustering=(),
        ),
    )
}
