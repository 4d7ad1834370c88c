"""Small builders of readings for tests, written with the contract's own field names."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from vitals_lake import contract as c
from vitals_lake import envelope

T0 = datetime(2026, 11, 22, 6, 0, 0, tzinfo=UTC)


def reading(
    i: int = 0, *, patient: str = "P000001", at: datetime | None = None, **overrides: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        c.EVENT_ID: f"evt-{patient}-{i}",
        c.PATIENT_ID: patient,
        c.DEVICE_ID: f"dev-{patient}",
        c.TIMESTAMP: (at or T0 + timedelta(seconds=5 * i)).isoformat(),
        c.HEART_RATE: 72,
        c.TEMPERATURE: 36.8,
        c.SPO2: 97.0,
        c.RESPIRATION_RATE: 16,
        c.BLOOD_PRESSURE: "120/80",
    }
    for key, value in overrides.items():
        if value is _DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


_DROP = object()
DROP = _DROP  # pass as a value to remove a field


def raw(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def bronze(lines: list[bytes], *, prefix: str = "file:test") -> pa.Table:
    return envelope.to_bronze(
        envelope.records_from_lines(lines), ingest_time_us=time.time_ns() // 1000, ref_prefix=prefix
    )


TEST_KEY = b"vitals-lake-test-key"


def gated_rows(lines: list[bytes], *, patients: pa.Table | None = None) -> pa.Table:
    """What the gate hands a shard for raw lines (``c.GATED_SCHEMA``: Silver's columns and the raw
    id), through the real code path."""
    from vitals_lake.readings import parse_batch  # noqa: PLC0415 - keep factories importable alone
    from vitals_lake.silver import to_silver  # noqa: PLC0415

    valid = parse_batch(bronze(lines)).valid
    return to_silver(
        valid, patients=patients if patients is not None else c.PATIENTS_SCHEMA.empty_table(), key=TEST_KEY
    )


def silver_rows(lines: list[bytes], *, patients: pa.Table | None = None) -> pa.Table:
    """Full Silver rows (validated, enriched, scored; the key, no raw id) for raw lines."""
    return gated_rows(lines, patients=patients).drop_columns([c.PATIENT_ID])


def key_of(patient_id: str) -> str:
    """The pseudonymous key the test key gives ``patient_id`` (how Silver and Gold name it)."""
    from vitals_lake.pseudonym import pseudonymise  # noqa: PLC0415

    return str(pseudonymise(pa.array([patient_id]), key=TEST_KEY)[0].as_py())


def ids_by_key(lake: Any) -> dict[str, str]:
    """The lake's identity map (``patient_keys``) as key -> raw id: how a test names Gold's patients."""
    rows = lake.read("patient_keys", columns=[c.PATIENT_KEY, c.PATIENT_ID]).to_pylist()
    return {r[c.PATIENT_KEY]: r[c.PATIENT_ID] for r in rows}
