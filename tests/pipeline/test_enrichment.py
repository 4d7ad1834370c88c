"""Readings joined with admissions in the pipeline, and a late admission file back-filling Gold."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from pipelines.beam_vitals import run
from tests.factories import ids_by_key, raw, reading
from vitals_lake import contract as c
from vitals_lake.admissions import refresh
from vitals_lake.backfill import backfill_gold, gold_rows_updated_at
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from vitals_lake.pseudonym import PseudonymKey

ADMITTED = {
    # patient: (age, gender, diagnosis, ward, bed, hypercapnic)
    "P000101": ("67", "female", "J44.1", "resp", "RESP-03", "Y"),
    "P000102": ("45", "M", "I21.9", "CARDIO", "CARDIO-07", "N"),
}
UNKNOWN = "P000999"


def write_landing(root: Path, *, ward: str | None = None, day: str = "20261122") -> tuple[Path, Path]:
    landing, reference = root / "landing", root / "reference"
    landing.mkdir(parents=True)
    reference.mkdir()
    with (landing / f"patients_daily_file_{day}.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(c.ADMISSION_COLUMNS)
        for pid, (age, gender, dx, own_ward, bed, hyper) in ADMITTED.items():
            w.writerow([pid, f"Name of {pid}", age, gender, "2026-11-20", dx, ward or own_ward, bed, hyper])
    mapping = reference / c.DIAGNOSIS_MAPPING_FILE
    mapping.write_text("diagnosis_code,diagnosis_description\nJ44.1,COPD with exacerbation\nI21.9,Acute MI\n")
    return landing, mapping


def write_readings(path: Path) -> None:
    # SpO2 90 % on air: NEWS2 SpO2 sub-score 3 on scale 1, but 0 on scale 2 (the COPD patient's target).
    lines = [raw(reading(i, patient=pid, spo2=90.0)) for pid in [*ADMITTED, UNKNOWN] for i in range(24)]
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture
def key() -> bytes:
    return PseudonymKey.from_env().secret  # the pipeline's own key (the development default here)


def test_readings_are_enriched_and_scored_with_the_patients_scale(tmp_path, key):
    landing, mapping = write_landing(tmp_path)
    lake = Lake(LocalLake(root=tmp_path / "lake"))
    refresh(str(landing), str(mapping), lake, key=key)
    write_readings(tmp_path / "r.jsonl")
    run(["--input-jsonl", str(tmp_path / "r.jsonl"), "--lake", str(tmp_path / "lake")])

    patient = ids_by_key(lake)  # Silver names patients by key only
    silver = {patient[r[c.PATIENT_KEY]]: r for r in lake.read("silver").to_pylist()}
    assert c.PATIENT_ID not in lake.read("silver").column_names
    copd, mi, unknown = silver["P000101"], silver["P000102"], silver[UNKNOWN]
    assert (copd[c.WARD], copd[c.BED], copd[c.AGE_BAND], copd[c.DIAGNOSIS_DESCRIPTION]) == (
        "RESP",
        "RESP-03",
        "60-69",
        "COPD with exacerbation",
    )
    assert copd[c.SPO2_SCALE] == 2 and copd[c.news2_subscore_column(c.SPO2)] == 0
    assert mi[c.SPO2_SCALE] == 1 and mi[c.news2_subscore_column(c.SPO2)] == 3
    assert unknown[c.KNOWN_PATIENT] is False and unknown[c.WARD] is None
    assert unknown[c.PATIENT_KEY] and UNKNOWN not in unknown[c.PATIENT_KEY]
    # The restricted name never leaves the patients table.
    assert all("Name of" not in str(v) for row in silver.values() for v in row.values())
    assert lake.count("silver") == 3 * 24


def test_a_late_admission_file_back_fills_gold(tmp_path, key):
    lake = Lake(LocalLake(root=tmp_path / "lake"))
    write_readings(tmp_path / "r.jsonl")
    run(["--input-jsonl", str(tmp_path / "r.jsonl"), "--lake", str(tmp_path / "lake")])
    gold = lake.read("gold")
    assert not any(pc.fill_null(gold[c.KNOWN_PATIENT], False).to_pylist())

    landing, mapping = write_landing(tmp_path)
    report = refresh(str(landing), str(mapping), lake, key=key)
    assert set(report.patient_ids) == set(ADMITTED)
    updated = backfill_gold(lake, report.patient_ids)

    gold = lake.read("gold").to_pylist()
    patient = ids_by_key(lake)  # Gold names patients by key only
    assert set(patient.values()) == {*ADMITTED, UNKNOWN}
    assert updated == sum(1 for r in gold if patient[r[c.PATIENT_KEY]] in ADMITTED)
    for row in gold:
        if (patient_id := patient[row[c.PATIENT_KEY]]) in ADMITTED:
            assert row[c.KNOWN_PATIENT] is True and row[c.WARD] == ADMITTED[patient_id][3].upper()
        else:
            assert row[c.KNOWN_PATIENT] is False and row[c.WARD] is None
    # The back-filled rows carry the pass's stamp, and only they: what a warehouse is sent again.
    stamp = time.time_ns() // 1000
    assert backfill_gold(lake, report.patient_ids, updated_at_us=stamp) == 0  # already right: unchanged
    assert gold_rows_updated_at(lake, report.patient_ids, stamp).num_rows == 0
    # A transfer the next day changes the windows after it, not the ward the patients were on before.
    write_landing(tmp_path / "moved", ward="ICU", day="20261123")
    report = refresh(str(tmp_path / "moved" / "landing"), str(mapping), lake, key=key)
    assert set(report.patient_ids) == set(ADMITTED)
    assert backfill_gold(lake, report.patient_ids, updated_at_us=stamp) == 0
    assert "ICU" not in lake.read("gold")[c.WARD].to_pylist()
