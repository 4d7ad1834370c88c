"""The admissions loader keeps BigQuery's ref_diagnosis_mapping current (the views join it; no other job
writes it in the cloud), against the BigQuery emulator: the first pass sends the mapping, a pass with
nothing new sends nothing, a new mapping file sends its load only, and the views read the newest."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from harness.stack.bigquery import BigQueryEmulator
from pipelines import load_admissions
from tests.unit.test_admissions import KEY, row, write_day, write_mapping
from vitals_lake import contract as c
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
