"""After an incident, recovery rebuilds Gold from Silver and streams the rebuilt rows to BigQuery (the
local emulator): the pipeline sends Gold only as it commits it, so a closed window rebuilt in the lake
alone would stay wrong in the warehouse. The identity map can be sent whole, as after a migration."""

from __future__ import annotations

import json
import uuid

import pytest
from google.cloud import bigquery

from harness.stack.bigquery import BigQueryEmulator
from pipelines import recovery
from pipelines.beam_vitals import run
from tests.factories import ids_by_key, raw, reading
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from warehouse.bigquery import make_client
from warehouse.settings import BigQuerySettings


def test_rebuilt_gold_reaches_bigquery(
    bigquery_emulator: BigQueryEmulator, tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]
):
    readings = tmp_path / "readings.jsonl"
    readings.write_bytes(b"\n".join(raw(reading(i, patient=f"P{i % 3:06d}")) for i in range(60)) + b"\n")
    lake_dir = tmp_path / "lake"
    run(["--input-jsonl", str(readings), "--lake", str(lake_dir)])  # no warehouse: it has none of this Gold
    lake = Lake(LocalLake(root=lake_dir))
    whole = lake.read("gold").num_rows
    # The incident: one patient's Gold upserts were lost.
    key = {v: k for k, v in ids_by_key(lake).items()}["P000001"]
    lake.ensure("gold").delete(f"{c.PATIENT_KEY} = '{key}'")
    assert 0 < lake.read("gold").num_rows < whole
    dataset = f"vitals_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("VITALS_GCP_PROJECT", "local-project")
    monkeypatch.setenv("VITALS_BQ_DATASET", dataset)
    monkeypatch.setenv("VITALS_BQ_ENDPOINT", bigquery_emulator.endpoint)

    argv = ["--lake", str(lake_dir), "--rebuild-gold", "--gold-minutes", "600", "--bigquery"]
    assert recovery.main(argv) == 0

    report = json.loads(capsys.readouterr().out)
    assert lake.read("gold").num_rows == whole  # the lake's Gold is whole again
    assert report["gold_rows_rebuilt"] == whole
    assert report["warehouse"] == {c.GOLD_TABLE: {"inserted": whole, "duplicates": 0, "rejected": 0}}
    client = make_client(BigQuerySettings.for_emulator(bigquery_emulator.endpoint, dataset=dataset))
    got = one(
        client,
        f"SELECT COUNT(*) AS n, SUM(IF(window_seconds = 60, reading_count, 0)) AS readings FROM"
        f" (SELECT * FROM `local-project.{dataset}.{c.GOLD_TABLE}` QUALIFY ROW_NUMBER() OVER (PARTITION"
        " BY patient_key, window_seconds, window_start ORDER BY updated_at DESC) = 1)",
    )
    assert got["n"] == whole
    assert got["readings"] == lake.count("silver") == 60


def test_the_identity_map_is_sent_to_bigquery(
    bigquery_emulator: BigQueryEmulator, tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]
):
    """After a migration (or a lost streaming insert) the lake's identity map goes to BigQuery whole."""
    readings = tmp_path / "readings.jsonl"
    readings.write_bytes(b"\n".join(raw(reading(i, patient=f"P{i % 3:06d}")) for i in range(60)) + b"\n")
    lake_dir = tmp_path / "lake"
    run(["--input-jsonl", str(readings), "--lake", str(lake_dir)])  # no warehouse: it has no keys
    lake = Lake(LocalLake(root=lake_dir))
    written = ids_by_key(lake)
    assert sorted(written.values()) == ["P000000", "P000001", "P000002"]
    dataset = f"vitals_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("VITALS_GCP_PROJECT", "local-project")
    monkeypatch.setenv("VITALS_BQ_DATASET", dataset)
    monkeypatch.setenv("VITALS_BQ_ENDPOINT", bigquery_emulator.endpoint)

    assert recovery.main(["--lake", str(lake_dir), "--identity-map", "--bigquery"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["warehouse"] == {c.PATIENT_KEYS_TABLE: {"inserted": 3, "duplicates": 0, "rejected": 0}}
    client = make_client(BigQuerySettings.for_emulator(bigquery_emulator.endpoint, dataset=dataset))
    rows = client.query(
        f"SELECT patient_key, patient_id FROM `local-project.{dataset}.{c.PATIENT_KEYS_TABLE}`"
    )
    assert {r["patient_key"]: r["patient_id"] for r in rows.result()} == written
    assert recovery.main(["--lake", str(lake_dir), "--identity-map"]) == 2  # nowhere to send it
    assert "needs --bigquery" in capsys.readouterr().err


def test_bigquery_needs_rebuild_gold(tmp_path, capsys: pytest.CaptureFixture[str]):
    assert recovery.main(["--lake", str(tmp_path), "--bigquery"]) == 2
    assert "needs --rebuild-gold or --identity-map" in capsys.readouterr().err


def one(client: bigquery.Client, sql: str) -> bigquery.Row:
    return next(iter(client.query(sql).result()))
