"""Alert events: the combined rule's state changes as rows (Delta, BigQuery) and JSON (Pub/Sub).

One event per state change of a patient's alert: ``opened``, ``escalated`` (the severity rose while
open) or ``resolved``. ``alert_id`` is derived from the patient and the alert's opening time, so the
same alert re-derived after a restart keeps its id and a notifier can de-duplicate on it. It is keyed:
an HMAC-SHA256 of the opening time under the patient's ``patient_key``, itself the HMAC of the patient
id under the deployment's secret. A plain hash of (patient id, time) was reversible: from an alert
e-mail's id and time, enumerating ``P000001``... found the patient in under a second. Without the
secret nobody can compute a ``patient_key`` from an id, so no id can be tried.

The notifier Cloud Function deploys on its own and cannot import this package: it reads the event's
fields from ``functions/alert_notifier/alert_event.schema.json``, which is generated here
(``python -m vitals_lake.alert_events --write-schema``; a test fails when it is stale). The package
itself never reads that file: :func:`json_schema` builds the schema from the contract, so an installed
wheel has it without a checkout; only ``--write-schema``, a tool run in a checkout, writes the file.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.alerting import (
    NO_CHANGE,
    OPENED,
    REASON_MODEL,
    REASON_NEWS2,
    REASON_RED_SUBSCORE,
    RESOLVED,
    TRANSITION_STATES,
    AlertDecisions,
)

# Where --write-schema writes in a checkout: the function's own copy (it deploys from its directory).
SCHEMA_PATH: Final = (
    Path(__file__).resolve().parents[1] / "functions" / "alert_notifier" / "alert_event.schema.json"
)
# The arms of the rule, by name, as events list them.
REASON_NAMES: Final = {
    REASON_MODEL: "model",
    REASON_NEWS2: "news2_emergency",
    REASON_RED_SUBSCORE: "red_subscore",
}
_ALERT_RANK: Final = c.NEWS2_RESPONSES.index(c.RISK_LEVEL_ON_ALERT)


def severity_ranks(silver: pa.Table, reasons: np.ndarray) -> np.ndarray:
    """Per reading, the severity it would give an alert: its NEWS2 response (index into
    ``c.NEWS2_RESPONSES``), raised to "medium" when the model flagged it (as Gold's risk level is)."""
    rank = pc.fill_null(pc.index_in(silver[c.NEWS2_RESPONSE], value_set=pa.array(c.NEWS2_RESPONSES)), -1)
    ranks = np.asarray(rank.to_numpy(zero_copy_only=False), dtype=np.int8)
    by_model = (np.asarray(reasons) & REASON_MODEL) > 0
    return np.where(by_model, np.maximum(ranks, _ALERT_RANK), ranks).astype(np.int8)


def alert_id(patient_key: str, opened_at_us: int) -> str:
    """The alert's id (24 hex characters) from the patient's pseudonymous key and its opening time."""
    mac = hmac.new(bytes.fromhex(patient_key), f"alert|{opened_at_us}".encode(), hashlib.sha256)
    return mac.hexdigest()[:24]


def alert_events(silver: pa.Table, decisions: AlertDecisions, reasons: np.ndarray) -> pa.Table:
    """The ``c.ALERTS_SCHEMA`` rows of the state changes among ``silver``'s rows (same order)."""
    idx = np.flatnonzero(decisions.transition != NO_CHANGE)
    if idx.size == 0:
        return c.ALERTS_SCHEMA.empty_table()
    rows = silver.take(pa.array(idx))
    event_us = pc.cast(pc.cast(rows[c.TIMESTAMP], pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy()
    transition = decisions.transition[idx]
    opened_us = np.round(decisions.opened_at[idx] * 1e6).astype(np.int64)
    start_us = np.where(transition == OPENED, np.round(decisions.run_start[idx] * 1e6), opened_us).astype(
        np.int64
    )
    patients = rows[c.PATIENT_KEY].to_pylist()
    columns: dict[str, Any] = {
        c.ALERT_ID: [alert_id(p, int(o)) for p, o in zip(patients, opened_us, strict=True)],
        c.ALERT_STATE: [TRANSITION_STATES[int(t)] for t in transition],
        c.PATIENT_KEY: rows[c.PATIENT_KEY],
        c.WARD: rows[c.WARD],
        c.BED: rows[c.BED],
        c.SEVERITY: [c.NEWS2_RESPONSES[max(int(s), 0)] for s in decisions.severity[idx]],
        # A resolved alert lists no arm: none holds any more.
        c.ALERT_REASONS: [
            [] if t == RESOLVED else [name for bit, name in REASON_NAMES.items() if int(r) & bit]
            for t, r in zip(transition, np.asarray(reasons)[idx], strict=True)
        ],
        c.NEWS2_SCORE: rows[c.NEWS2_SCORE],
        **{c.news2_subscore_column(p): rows[c.news2_subscore_column(p)] for p in c.NEWS2_PARAMETERS},
        c.ALERT_FLAGS_RAISED: _flags(rows),
        c.ANOMALY_SCORE: rows[c.ANOMALY_SCORE],
        c.MODEL_VERSION: rows[c.MODEL_VERSION],
        **{v: pc.cast(rows[v], pa.float64()) for v in c.VITAL_NAMES},
        c.WINDOW_START: pa.array(start_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        c.WINDOW_END: pa.array(event_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        c.EVENT_TIME: pa.array(event_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        c.EVENT_DATE: pc.cast(pa.array(event_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")), pa.date32()),
    }
    return pa.table({f.name: columns[f.name] for f in c.ALERTS_SCHEMA}).cast(c.ALERTS_SCHEMA)


def _flags(rows: pa.Table) -> list[list[str]]:
    raised = [rows[c.flag_column(f)].to_pylist() for f in c.ALERT_FLAGS]
    return [[f for f, on in zip(c.ALERT_FLAGS, row, strict=True) if on] for row in zip(*raised, strict=True)]


def to_json(events: pa.Table) -> list[bytes]:
    """One UTF-8 JSON object per event (an alerts row: the pseudonymous key, ward and bed, never the
    hospital's patient id; a clinician re-identifies the patient on the dashboard's patient page):
    timestamps as ISO-8601 UTC with a Z, the date as YYYY-MM-DD."""
    out = []
    for row in events.select(c.ALERTS_SCHEMA.names).to_pylist():
        for key, value in row.items():
            if isinstance(value, datetime):
                row[key] = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            elif isinstance(value, float) and not np.isfinite(value):
                row[key] = None
        out.append(orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS))
    return out


def attributes(event: dict[str, Any]) -> dict[str, str]:
    """Pub/Sub message attributes: what a subscription filter or a router needs without the body."""
    return {k: str(event[k] or "") for k in (c.ALERT_ID, c.ALERT_STATE, c.SEVERITY, c.WARD)}


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one published event, from ``c.ALERTS_SCHEMA``."""
    props: dict[str, Any] = {}
    for f in c.ALERTS_SCHEMA:
        prop = _json_type(f.type)
        if f.name == c.ALERT_STATE:
            prop["enum"] = list(c.ALERT_STATES)
        elif f.name == c.SEVERITY:
            prop["enum"] = list(c.NEWS2_RESPONSES)
        elif f.name == c.ALERT_REASONS:
            prop["items"] = {"type": "string", "enum": list(REASON_NAMES.values())}
        elif f.name == c.ALERT_FLAGS_RAISED:
            prop["items"] = {"type": "string", "enum": list(c.ALERT_FLAGS)}
        if f.nullable:
            prop["type"] = [prop["type"], "null"]
        props[f.name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://vitals-lake.example/alert-event.schema.json",
        "title": "Vitals Lake alert event",
        "description": "Generated from vitals_lake/contract.py (ALERTS_SCHEMA: the patient by"
        " pseudonymous key only) by vitals_lake.alert_events.",
        "type": "object",
        "properties": props,
        "required": [f.name for f in c.ALERTS_SCHEMA if not f.nullable],
        "additionalProperties": False,
    }


def _json_type(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_string(t):
        return {"type": "string"}
    if pa.types.is_integer(t):
        return {"type": "integer"}
    if pa.types.is_floating(t):
        return {"type": "number"}
    if pa.types.is_timestamp(t):
        return {"type": "string", "format": "date-time"}
    if pa.types.is_date(t):
        return {"type": "string", "format": "date"}
    if pa.types.is_list(t):
        return {"type": "array"}
    raise TypeError(f"no JSON type for {t}")


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitals_lake.alert_events", description=__doc__)
    parser.add_argument("--write-schema", action="store_true", help=f"write {SCHEMA_PATH}")
    args = parser.parse_args(argv)
    if args.write_schema:
        if not SCHEMA_PATH.parent.is_dir():  # an installed package: no function directory beside it
            parser.error(f"{SCHEMA_PATH.parent} does not exist: run --write-schema in a source checkout")
        SCHEMA_PATH.write_text(schema_text())
        print(f"wrote {SCHEMA_PATH}")
    else:
        print(schema_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
