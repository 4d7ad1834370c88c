"""The pipeline streams Gold and data-quality rows into BigQuery (the local emulator)."""

from __future__ import annotations

import uuid

import pytest
from google.cloud import bigquery

from harness.stack.bigquery import BigQueryEmulator
from pipelines.beam_vitals import run
from tests.factories import raw, reading
from vitals_lake import contract as c
from vitals_lake.config import ConfigError, LocalLake
from vitals_lake.lake import Lake
from warehouse.bigquery import make_client
from warehouse.settings import BigQuerySettings


def test_gold_and_data_quality_land_in_bigquery(bigquery_emulator: BigQueryEmulator, tmp_path):
    readings = tmp_path / "readings.jsonl"
    rows = [raw(reading(i, patient=f"P{i % 3:06d}")) for i in range(60)] + [b'{"broken": ']
    readings.write_bytes(b"\n".join(rows) + b"\n")
    dataset = f"vitals_{uuid.uuid4().hex[:8]}"
    lake = Lake(LocalLake(root=tmp_path / "lake"))
    run(
        ["--input-jsonl", str(readings), "--lake", str(tmp_path / "lake"),
         "--bigquery-dataset", f"local-project.{dataset}", "--bigquery-endpoint", bigquery_emulator.endpoint]
    )  # fmt: skip
    client = make_client(BigQuerySettings.for_emulator(bigquery_emulator.endpoint, dataset=dataset))
    latest = one(
        client,
        f"SELECT COUNT(*) AS n, SUM(reading_count) AS readings FROM (SELECT * FROM"
        f" `local-project.{dataset}.{c.GOLD_TABLE}` QUALIFY ROW_NUMBER() OVER (PARTITION BY patient_key,"
        f" window_seconds, window_start ORDER BY updated_at DESC) = 1) WHERE window_seconds = 60",
    )
    gold = lake.read("gold")
    minutes = gold.filter(gold[c.WINDOW_SECONDS].to_numpy() == 60)
    assert latest["n"] == minutes.num_rows > 0
    assert latest["readings"] == lake.count("silver") == 60
    dq = one(
        client,
        f"SELECT SUM(failed_rows) AS failed FROM `local-project.{dataset}.{c.DQ_METRICS_TABLE}`"
        " WHERE rule = 'malformed_json'",
    )
    assert dq["failed"] == 1
    # The identity map streamed too (Gold names patients by key only): each key once, with its id.
    identity = client.query(
        f"SELECT patient_key, patient_id FROM `local-project.{dataset}.{c.PATIENT_KEYS_TABLE}`"
    ).result()
    assert {r["patient_id"]: r["patient_key"] for r in identity} == {
        r[c.PATIENT_ID]: r[c.PATIENT_KEY] for r in lake.read("patient_keys").to_pylist()
    }
    assert len(lake.read("patient_keys")) == 3


def one(client: bigquery.Client, sql: str) -> bigquery.Row:
    return next(iter(client.query(sql).result()))


def test_bigquery_options_are_validated_at_the_edge(tmp_path):
    with pytest.raises(ConfigError, match=r"PROJECT\.DATASET"):
        run(["--input-jsonl", "x.jsonl", "--lake", str(tmp_path), "--bigquery-dataset", "nodot"])
    with pytest.raises(ConfigError, match="needs --bigquery-dataset"):
        run(
            ["--input-jsonl", "x.jsonl", "--lake", str(tmp_path), "--bigquery-endpoint", "http://127.0.0.1:1"]
        )
