"""Forget one patient: delete every row of theirs from every lake table, and record that it was done.

What is deleted:

* the rows that name the patient: by ``patient_id`` in quarantine, the identity tables (``patients``,
  ``patient_keys``) and the admission rows (``bronze_admissions``); by ``patient_key`` in Silver,
  Gold, the alerts and the rolling means, which carry the pseudonymous key only;
* their raw payloads in Bronze and quarantine. Bronze has no patient column, and a quarantined
  record may never have parsed far enough to have one. So the rows deleted are the ones whose record
  Silver or quarantine traces to this patient (``record_ref``), and any other whose payload holds the
  id as a JSON string.

The per-diagnosis hours count patients without naming them and are left as they are.

A Delta delete leaves the old files in the table's history until vacuum removes them, and the old
commits in the transaction log keep those files' statistics (a column's min and max: possibly the
id). Maintenance vacuums after its retention (168 h by default). ``vacuum_now`` does it all at once:
vacuum with a zero retention, then a checkpoint and a log clean-up with a zero log retention (the
table's own setting is put back afterwards). That is safe only while nothing else writes the lake: a
writer's not-yet-committed file could be vacuumed too.

One row goes to ``erasure_log`` per erasure: when, the pseudonymous key (never the id), who asked,
why, and the rows deleted per table.

The report also names the patient's alert ids (read before the alerts rows go): the alert notifier's
stores key their records by them, and the notifier erases them itself (``python -m notifier.erase``
in ``functions/alert_notifier``, which deploys on its own).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from vitals_lake import contract as c
from vitals_lake.lake import Lake
from vitals_lake.maintenance import with_conflict_retries
from vitals_lake.pseudonym import pseudonymise

log = logging.getLogger(__name__)

# Tables whose rows name the patient, in the order they are erased (identity last: a failure part-way
# leaves the key to find the rest by).
NAMED_LAYERS: Final[tuple[c.Layer, ...]] = (
    "silver",
    "gold",
    "rolling",
    "alerts",
    "quarantine",
    "bronze_admissions",
    "patient_keys",
    "patients",
)
# The audit of an erasure keeps the pseudonymous key on purpose: it is the record that it was done.
KEPT_LAYERS: Final[tuple[c.Layer, ...]] = ("erasure_log",)
RAW_LAYERS: Final[tuple[c.Layer, ...]] = ("bronze", "quarantine")  # hold payloads, found by record_ref
_LOG_RETENTION: Final = "delta.logRetentionDuration"
_DEFAULT_LOG_RETENTION: Final = "interval 30 days"  # Delta's default
_REFS_PER_DELETE: Final = 500  # record_refs per Delta delete predicate


@dataclass
class ErasureReport:
    patient_key: str
    rows_by_table: dict[str, int] = field(default_factory=dict)
    alert_ids: list[str] = field(default_factory=list)  # for the notifier's erasure
    vacuumed_files: int = 0
    vacuumed: bool = False

    @property
    def rows_deleted(self) -> int:
        return sum(self.rows_by_table.values())


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def forget_patient(
    lake: Lake,
    patient_id: str,
    *,
    key: bytes,
    requested_by: str,
    reason: str,
    vacuum_now: bool = False,
) -> ErasureReport:
    """Delete every lake row of ``patient_id`` (see the module docstring) and append the audit row."""
    if not patient_id.strip() or not requested_by.strip() or not reason.strip():
        raise ValueError("patient_id, requested_by and reason are all required")
    patient_key = pseudonymise(pa.array([patient_id]), key=key)[0].as_py()
    report = ErasureReport(patient_key=patient_key)
    refs = _record_refs(lake, patient_id, patient_key)
    if lake.exists("alerts"):
        alerts = lake.read("alerts", columns=[c.ALERT_ID], where=pc.field(c.PATIENT_KEY) == patient_key)
        report.alert_ids = sorted(set(alerts[c.ALERT_ID].drop_null().to_pylist()))
    for layer in RAW_LAYERS:
        report.rows_by_table[c.TABLES[layer].name] = _delete_refs(lake, layer, refs)
    for layer in NAMED_LAYERS:
        match = c.patient_match(c.TABLES[layer].schema, patient_id=patient_id, patient_key=patient_key)
        assert match is not None  # NAMED_LAYERS name a patient (tests/unit/test_erasure_coverage.py)
        column, value = match
        deleted = _delete(lake, layer, f"{column} = {_quote(value)}")
        name = c.TABLES[layer].name
        report.rows_by_table[name] = report.rows_by_table.get(name, 0) + deleted
    if vacuum_now:
        for layer in dict.fromkeys((*RAW_LAYERS, *NAMED_LAYERS)):
            if lake.exists(layer):
                report.vacuumed_files += _purge_history(lake, layer)
        report.vacuumed = True
    audit = {
        "erased_at": pa.array([time.time_ns() // 1000], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        c.PATIENT_KEY: [patient_key],
        "requested_by": [requested_by],
        "reason": [reason],
        "rows_deleted": [report.rows_deleted],
        "rows_by_table": [json.dumps(report.rows_by_table, sort_keys=True)],
        "vacuumed": [report.vacuumed],
    }
    lake.append("erasure_log", pa.table(audit, schema=c.ERASURE_LOG_SCHEMA))
    log.info(
        "patient %s forgotten: %d row(s) deleted (%s), vacuumed: %s",
        patient_key,
        report.rows_deleted,
        report.rows_by_table,
        report.vacuumed,
    )
    return report


def _record_refs(lake: Lake, patient_id: str, patient_key: str) -> list[str]:
    """The records of this patient: traced from Silver (by key) and quarantine (by id), and any
    Bronze or quarantine payload that holds the id as a JSON string."""
    refs: set[str] = set()
    for layer in ("silver", "quarantine"):
        match = c.patient_match(c.TABLES[layer].schema, patient_id=patient_id, patient_key=patient_key)
        assert match is not None
        column, value = match
        rows = lake.read(layer, columns=[c.RECORD_REF], where=pc.field(column) == value)
        refs.update(rows[c.RECORD_REF].to_pylist())
    token = json.dumps(patient_id).encode()  # "P000123", quotes included: no longer id matches
    for layer in RAW_LAYERS:
        rows = lake.read(layer, columns=[c.RECORD_REF, c.RAW])
        if rows.num_rows:
            holds = pc.match_substring(rows[c.RAW].combine_chunks().cast(pa.binary()), token)
            refs.update(rows.filter(pc.fill_null(holds, False))[c.RECORD_REF].to_pylist())
    return sorted(r for r in refs if r is not None)


def _delete_refs(lake: Lake, layer: c.Layer, refs: list[str]) -> int:
    deleted = 0
    for start in range(0, len(refs), _REFS_PER_DELETE):
        chunk = ", ".join(_quote(r) for r in refs[start : start + _REFS_PER_DELETE])
        deleted += _delete(lake, layer, f"{c.RECORD_REF} IN ({chunk})")
    return deleted


def _purge_history(lake: Lake, layer: c.Layer) -> int:
    """Vacuum with a zero retention, then checkpoint and drop every older log file (their statistics
    may name the patient); the table's log retention is put back. Returns the files vacuumed."""
    storage = lake.settings.storage_options

    def table() -> DeltaTable:
        return DeltaTable(lake.uri(layer), storage_options=storage)

    files = table().vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    kept = table().metadata().configuration.get(_LOG_RETENTION, _DEFAULT_LOG_RETENTION)
    table().alter.set_table_properties({_LOG_RETENTION: "interval 0 seconds"}, raise_if_not_exists=False)
    dt = table()
    dt.create_checkpoint()
    dt.cleanup_metadata()
    table().alter.set_table_properties({_LOG_RETENTION: kept}, raise_if_not_exists=False)
    return len(files)


def _delete(lake: Lake, layer: c.Layer, predicate: str) -> int:
    """One Delta delete, re-planned on a fresh snapshot when a concurrent commit conflicts with it."""
    if not lake.exists(layer):
        return 0

    def delete() -> dict[str, Any]:
        return DeltaTable(lake.uri(layer), storage_options=lake.settings.storage_options).delete(predicate)

    metrics, _ = with_conflict_retries(delete, what=f"{c.TABLES[layer].name}: erase")
    return int(metrics.get("num_deleted_rows", 0))
