"""The one interface both warehouses are written through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa


@dataclass(frozen=True)
class WriteResult:
    """What happened to the rows of one ``write``: every row is counted in exactly one field."""

    inserted: int = 0
    duplicates: int = 0  # recognised by insert id and skipped
    rejected: int = 0  # refused by the warehouse: written to the dead-letter table with the error
    errors: list[str] = field(default_factory=list)


class WarehouseSink(Protocol):
    def ensure(self) -> None:
        """Create the tables (and the dead-letter table) when missing; idempotent."""

    def write(self, table: str, rows: pa.Table) -> WriteResult:
        """Append ``rows`` (``WAREHOUSE_TABLES[table].schema``) idempotently; never lose a row."""
