"""``forget-patient`` on a demo lake: admissions, a simulated cohort with episodes and faults through the
batch engine, the DuckDB warehouse synced from it. Afterwards no file of the lake (data, transaction
log, checkpoints) and no table of the warehouse holds the patient's id, the other patients are intact,
and the audit row names the pseudonymous key only."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from harness.demo import load_cohort_admissions
from harness.stack.function import FUNCTION_DIR
from ml import evaluate
from pipelines import forget_patient
from tests.factories import T0, raw, reading
from vitals_lake import contract as c
from vitals_lake import envelope
from vitals_lake.config import LocalLake
from vitals_lake.engine import BatchEngine, EngineSettings
from vitals_lake.lake import Lake
from vitals_lake.pseudonym import KEY_ENV, pseudonymise
from warehouse.duck import DuckWarehouse
from warehouse.sync import sync_lake

if str(FUNCTION_DIR) not in sys.path:
    sys.path.insert(0, str(FUNCTION_DIR))
from notifier import erase, state

KEY = b"forget-patient-test-key-0123456789"


def _holds(path: Path, patient_id: str) -> bool:
    """Whether a lake file holds the id: every string and binary cell of a Parquet file (data and
    checkpoints are compressed, so their bytes are not searched), the bytes of any other file."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        text = json.dumps(table.to_pylist(), default=lambda v: v.hex() if isinstance(v, bytes) else str(v))
        raw_cells = [
            v
            for col in table.columns
            if pa.types.is_binary(col.type)
            for v in col.to_pylist()
            if v is not None
        ]
        return patient_id in text or any(patient_id.encode() in v for v in raw_cells)
    return patient_id.encode() in path.read_bytes()


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Lake, Path]:
    lake = Lake(LocalLake(root=tmp_path / "lake"))
    lake.ensure_all()
    load_cohort_admissions(tmp_path / "admissions", lake, patients=8, seed=5, key=KEY)
    readings, _ = evaluate.simulate(
        tmp_path / "sim", patients=8, hours=2, interval=60, seed=5, episode_rate=0.9
    )
    lines = readings.read_bytes().splitlines()
    # A deterioration of P000003 that the NEWS2 arm alerts on (five minutes of emergency vitals).
    sick = {
        c.HEART_RATE: 140,
        c.RESPIRATION_RATE: 30,
        c.SPO2: 85,
        c.BLOOD_PRESSURE: "85/50",
        c.TEMPERATURE: 39.5,
    }
    lines += [raw(reading(i, patient="P000003", at=T0 + timedelta(minutes=i), **sick)) for i in range(6)]
    # A record that never parses (a string where a number belongs): quarantined without a patient id.
    lines.append(
        b'{"event_id":"bad-1","patient_id":"P000003","timestamp":"2026-11-01T00:00:00Z","heart_rate":"x"}'
    )
    engine = BatchEngine(lake, settings=EngineSettings(time_rules=None), key=KEY)
    for number, start in enumerate(range(0, len(lines), 400)):
        records = envelope.records_from_lines(lines[start : start + 400], source="file")
        bronze = envelope.to_bronze(records, ingest_time_us=1_800_000_000_000_000, ref_prefix=f"f{number}")
        engine.run(bronze, batch_id=f"b{number}")
    warehouse = tmp_path / "warehouse.duckdb"
    with DuckWarehouse(warehouse) as wh:
        wh.ensure()
        sync_lake(lake, wh)
    return lake, warehouse


def test_nothing_of_the_patient_is_left_in_the_lake_or_the_warehouse(demo, monkeypatch, capsys):
    lake, warehouse = demo
    gone, kept = "P000003", "P000004"
    gone_key, kept_key = pseudonymise(pa.array([gone, kept]), key=KEY).to_pylist()
    silver = lake.read("silver", columns=[c.PATIENT_KEY])  # Silver names patients by key
    before = pc.value_counts(silver[c.PATIENT_KEY]).to_pylist()
    by_key = {r["values"]: r["counts"] for r in before}
    counts = {gone: by_key[gone_key], kept: by_key[kept_key]}
    assert counts[gone] > 0 and counts[kept] > 0
    alerts = lake.read("alerts", columns=[c.PATIENT_KEY])[c.PATIENT_KEY].to_pylist()
    assert gone_key in alerts  # the demo gave the patient an alert to forget (alerts carry the key)
    quarantined = lake.read("quarantine", columns=[c.RECORD_REF, c.PATIENT_ID, c.RAW])
    assert any(b"bad-1" in bytes(r) for r in quarantined[c.RAW].to_pylist())
    root = Path(lake.settings.root)
    assert any(_holds(p, gone) for p in root.rglob("*") if p.is_file())  # the check can find it

    # The alert notifier delivered the patient's alerts (and another patient's): its records.
    their_alerts = lake.read("alerts", columns=[c.ALERT_ID], where=pc.field(c.PATIENT_KEY) == gone_key)
    theirs = sorted(set(their_alerts[c.ALERT_ID].to_pylist()))
    notifier_dir = root.parent / "notifier"
    store = state.LocalState(notifier_dir)
    for alert_id in [*theirs, "someone-elses-alert"]:
        store.claim(f"{alert_id}:opened:2026-11-01T00:00:00Z", "email:ward")
        store.dead_letter({"kind": "delivery", "alert_id": alert_id, "error": "HTTP 500"})

    monkeypatch.setenv(KEY_ENV, KEY.hex())
    ids_file = root.parent / "alert_ids.txt"
    argv = ["--lake", str(root), "--patient-id", gone, "--requested-by", "dpo@h.example"]
    argv += ["--reason", "erasure request 2026-117", "--warehouse", str(warehouse), "--vacuum-now", "--json"]
    # A file that cannot be written is refused before anything is deleted (the ids would be lost).
    assert forget_patient.main([*argv, "--alert-ids-out", str(root.parent / "missing" / "ids.txt")]) == 2
    assert "--alert-ids-out: no directory" in capsys.readouterr().err
    assert lake.read("alerts", where=pc.field(c.PATIENT_KEY) == gone_key).num_rows > 0
    assert forget_patient.main([*argv, "--alert-ids-out", str(ids_file)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert gone not in out  # the command prints the pseudonymous key, never the id
    assert ids_file.read_text().split() == theirs and report["alert_ids"] == len(theirs) > 0
    # The notifier erases their records itself (it deploys on its own), from the ids file.
    monkeypatch.setenv("NOTIFIER_STATE", "local")
    monkeypatch.setenv("NOTIFIER_STATE_DIR", str(notifier_dir))
    assert erase.main(["--alert-ids-file", str(ids_file)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "alert_ids": len(theirs),
        "records_deleted": 2 * len(theirs),
    }
    assert [d["alert_id"] for d in store.dead_letters()] == ["someone-elses-alert"]
    assert store.status("someone-elses-alert:opened:2026-11-01T00:00:00Z", "email:ward") == "pending"
    rows = report["lake_rows_by_table"]
    assert rows[c.SILVER_TABLE] == counts[gone] and rows[c.ALERTS_TABLE] > 0 and rows[c.PATIENTS_TABLE] == 1
    assert rows[c.BRONZE_TABLE] >= counts[gone] and rows[c.QUARANTINE_TABLE] >= 1
    assert rows[c.GOLD_TABLE] > 0 and rows[c.PATIENT_KEYS_TABLE] >= 1  # Gold by key, the map by id
    assert report["warehouse_rows_by_table"][c.GOLD_TABLE] > 0
    assert report["warehouse_rows_by_table"][c.ALERTS_TABLE] > 0  # by key: alerts carry no patient id

    # Nothing left anywhere in the lake: data files, transaction logs, checkpoints.
    left = [p for p in root.rglob("*") if p.is_file() and _holds(p, gone)]
    assert left == []
    # The other patients are intact.
    after = lake.read("silver", columns=[c.PATIENT_KEY])[c.PATIENT_KEY].to_pylist()
    assert after.count(kept_key) == counts[kept] and len(after) == silver.num_rows - counts[gone]
    assert lake.count("patients") == 7
    # The audit row: who, why, how much, under the pseudonymous key.
    (audit,) = lake.read("erasure_log").to_pylist()
    assert audit[c.PATIENT_KEY] == pseudonymise(pa.array([gone]), key=KEY)[0].as_py() == report["patient_key"]
    assert audit["requested_by"] == "dpo@h.example" and audit["vacuumed"] is True
    assert json.loads(audit["rows_by_table"]) == rows

    # A second run (say, BigQuery was pending) finds no alerts left and keeps the ids already written.
    assert forget_patient.main([*argv, "--alert-ids-out", str(ids_file)]) == 0
    assert json.loads(capsys.readouterr().out)["alert_ids"] == 0 and ids_file.read_text().split() == theirs

    with DuckWarehouse(warehouse) as wh:
        sync_lake(lake, wh)  # a later sync brings nothing back (rewritten files hold known rows only)
        tables = wh.query("SELECT table_name FROM information_schema.tables")["table_name"].to_pylist()
        assert tables
        for table in tables:
            text = json.dumps(wh.query(f'SELECT * FROM "{table}"').to_pylist(), default=str)
            assert gone not in text and gone_key not in text, table
        assert wh.query(f"SELECT count(*) AS n FROM {c.GOLD_TABLE} WHERE patient_key = '{kept_key}'")["n"][
            0
        ].as_py()
        assert wh.query(f"SELECT patient_id FROM patient_identity WHERE patient_key = '{kept_key}'")[
            c.PATIENT_ID
        ].to_pylist() == [kept]
