"""The admissions loader keeps BigQuery's ref_diagnosis_mapping current (the views join it; no other job
writes it in the cloud), against the BigQuery emulator: the first pass sends the mapping, a pass with
nothing new sends nothing, a new mapping file sends its load only, and the views read the newest; and
the Gold rows a late admission back-fills reach it too."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from harness.stack.bigquery import BigQueryEmulator
from pipelines import load_admissions
from pipelines.beam_vitals import run
from tests.factories import ids_by_key, raw, reading
from tests.unit.test_admissions import KEY, row, write_day, write_mapping
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from vitals_lake.pseudonym import KEY_ENV
from warehouse.bigquery import make_client
from warehouse.settings import BigQuerySettings


def test_the_diagnosis_reference_reaches_bigquery_once_per_load(
    bigquery_emulator: BigQueryEmulator, tmp_path, monkeypatch, capsys
):
    dataset = f"t_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("VITALS_BQ_ENDPOINT", bigquery_emulator.endpoint)
    monkeypatch.setenv("VITALS_BQ_DATASET", dataset)
    monkeypatch.setenv(KEY_ENV, KEY.hex())
    landing, mapping = tmp_path / "landing", tmp_path / "reference" / c.DIAGNOSIS_MAPPING_FILE
    write_day(landing, date(2026, 11, 20), [row("P1")])
    write_mapping(mapping, [("I10", "Hypertension"), ("J18", "Pneumonia")])
    argv = [
        "--landing",
        str(landing),
        "--reference",
        str(mapping),
        "--lake",
        str(tmp_path / "lake"),
        "--bigquery",
    ]

    client = make_client(BigQuerySettings.from_env())
    table = BigQuerySettings.from_env().table_ref(c.DIAGNOSIS_TABLE)

    def rows() -> list[tuple[str, str]]:
        sql = f"SELECT diagnosis_code, diagnosis_description FROM `{table}` ORDER BY 1, 2"
        return [(r[0], r[1]) for r in client.query(sql).result()]

    assert load_admissions.main(argv) == 0
    assert "ref_diagnosis_mapping -> BigQuery: 2 new row(s)" in capsys.readouterr().out
    assert rows() == [("I10", "Hypertension"), ("J18", "Pneumonia")]

    assert load_admissions.main(argv) == 0  # nothing new: nothing sent, nothing doubled
    assert "ref_diagnosis_mapping -> BigQuery: 0 new row(s)" in capsys.readouterr().out
    assert len(rows()) == 2

    write_mapping(mapping, [("I10", "Essential hypertension"), ("J18", "Pneumonia")])
    assert load_admissions.main(argv) == 0
    assert "ref_diagnosis_mapping -> BigQuery: 2 new row(s)" in capsys.readouterr().out
    latest = f"SELECT diagnosis_description FROM `{table}` WHERE diagnosis_code = 'I10' "
    latest += "ORDER BY loaded_at DESC LIMIT 1"
    assert [r[0] for r in client.query(latest).result()] == ["Essential hypertension"]
    client.close()


@pytest.mark.parametrize("argv", [["--bigquery"]])
def test_without_a_warehouse_setting_the_loader_says_what_is_missing(argv, tmp_path, monkeypatch):
    monkeypatch.setenv("VITALS_BQ_CREDENTIALS", "nonsense")
    args = ["--landing", str(tmp_path), "--reference", str(tmp_path / "m.csv"), "--lake", str(tmp_path / "l")]
    assert load_admissions.main([*args, *argv]) == 2


def test_gold_back_filled_by_a_late_admission_reaches_bigquery(
    bigquery_emulator: BigQueryEmulator, tmp_path, monkeypatch, capsys
):
    """Readings stream before their patient's admission (Gold without a ward, sent by the pipeline);
    the admission's pass back-fills the lake's Gold and sends those rows again, newer."""
    dataset = f"t_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("VITALS_BQ_ENDPOINT", bigquery_emulator.endpoint)
    monkeypatch.setenv("VITALS_BQ_DATASET", dataset)
    monkeypatch.setenv(KEY_ENV, KEY.hex())
    readings = tmp_path / "readings.jsonl"
    readings.write_bytes(
        b"\n".join(raw(reading(i, patient=p)) for p in ("P1", "P2") for i in range(12)) + b"\n"
    )
    lake_dir = str(tmp_path / "lake")
    project = BigQuerySettings.from_env().project
    warehouse = [
        "--bigquery-dataset",
        f"{project}.{dataset}",
        "--bigquery-endpoint",
        bigquery_emulator.endpoint,
    ]
    run(["--input-jsonl", str(readings), "--lake", lake_dir, *warehouse])
    landing, mapping = tmp_path / "landing", tmp_path / "reference" / c.DIAGNOSIS_MAPPING_FILE
    write_day(landing, date(2026, 11, 20), [row("P1", {c.WARD: "ICU"})])
    write_mapping(mapping, [("I10", "Hypertension")])
    argv = ["--landing", str(landing), "--reference", str(mapping), "--lake", lake_dir, "--bigquery"]
    assert load_admissions.main(argv) == 0

    lake = Lake(LocalLake(root=tmp_path / "lake"))
    gold = lake.read("gold")
    patient = ids_by_key(lake)  # Gold names patients by key only
    p1 = sum(1 for k in gold[c.PATIENT_KEY].to_pylist() if patient[k] == "P1")
    assert f"{c.GOLD_TABLE} -> BigQuery: {p1} back-filled row(s)" in capsys.readouterr().out
    client = make_client(BigQuerySettings.from_env())
    table = BigQuerySettings.from_env().table_ref(c.GOLD_TABLE)
    latest = (
        f"SELECT patient_key, known_patient, ward FROM `{table}` QUALIFY ROW_NUMBER() OVER"
        " (PARTITION BY patient_key, window_seconds, window_start ORDER BY updated_at DESC) = 1"
    )
    got = [(patient[r[0]], r[1], r[2]) for r in client.query(latest).result()]
    client.close()
    assert len(got) == gold.num_rows
    assert sorted(set(got)) == [("P1", True, "ICU"), ("P2", False, None)]
