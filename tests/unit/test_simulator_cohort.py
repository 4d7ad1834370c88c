"""Cohort and admission files."""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import UTC, date, datetime

import numpy as np

from simulator import DIAGNOSES, WARDS, ListSink, make_cohort
from simulator.admissions import (
    ADMISSION_COLUMNS,
    DIAGNOSIS_COLUMNS,
    write_admission_file,
    write_admissions,
)
from simulator.engine import Simulation, SimulationConfig

AS_OF = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
CODES = {d.code for d in DIAGNOSES}


def test_cohort_is_seeded_and_well_formed():
    cohort = make_cohort(500, seed=1, as_of=AS_OF)
    assert cohort == make_cohort(500, seed=1, as_of=AS_OF)
    assert cohort != make_cohort(500, seed=2, as_of=AS_OF)
    assert [p.patient_id for p in cohort][:2] == ["P000001", "P000002"]
    assert len({p.device_id for p in cohort}) == 500
    assert all(re.fullmatch(r"MON-[0-9A-F]{6}", p.device_id) for p in cohort)
    assert {p.ward for p in cohort} == set(WARDS)
    assert {p.diagnosis_code for p in cohort} <= CODES and len({p.diagnosis_code for p in cohort}) >= 15
    assert {p.sex for p in cohort} == {"F", "M"}
    assert all(18 <= p.age <= 99 and p.name.strip() for p in cohort)
    assert all(p.admitted_at < AS_OF for p in cohort)
    beds = [p.bed for p in cohort]
    assert len(set(beds)) == len(beds)
    assert all(p.bed.startswith(p.ward + "-") for p in cohort)


def test_hypercapnic_patients_are_mostly_copd():
    cohort = make_cohort(2000, seed=4, as_of=AS_OF)
    hyper = [p for p in cohort if p.hypercapnic]
    assert 0.03 < len(hyper) / len(cohort) < 0.2
    copd = sum(p.diagnosis_code.startswith(("J44", "J96")) for p in hyper)
    assert copd / len(hyper) >= 0.85


def test_admission_file_columns_and_realistic_mess(tmp_path):
    cohort = make_cohort(300, seed=9, as_of=AS_OF)
    path = write_admission_file(
        cohort, tmp_path, day=date(2026, 11, 22), rng=np.random.default_rng(0), duplicate_row_rate=0.05
    )
    assert path.name == "patients_daily_file_20261122.csv"
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert (
        tuple(rows[0])
        == ADMISSION_COLUMNS
        == (
            "patient_id",
            "name",
            "age",
            "gender",
            "admission_date",
            "diagnosis_code",
            "ward",
            "bed",
            "hypercapnic_respiratory_failure",
        )
    )
    body = rows[1:]
    ids = Counter(r[0] for r in body)
    assert set(ids) == {p.patient_id for p in cohort}
    assert any(n > 1 for n in ids.values())  # a row exported twice
    genders = Counter(r[3] for r in body)
    assert genders["F"] > 0 and genders["M"] > 0
    assert set(genders) - {"F", "M"}  # inconsistent spellings too
    assert set(genders) <= {"F", "M", "female", "Female", "f", "FEMALE", "male", "Male", "m", "MALE"}
    assert any(r[2] == "" for r in body)  # a missing age
    assert all(r[2] == "" or 18 <= int(r[2]) <= 99 for r in body)
    assert all(date.fromisoformat(r[4]) <= date(2026, 11, 22) for r in body)
    assert {r[5] for r in body} <= CODES and {r[6] for r in body} <= set(WARDS)
    by_id = {p.patient_id: p for p in cohort}
    assert all(r[7] == by_id[r[0]].bed for r in body)
    assert all(r[8] == ("Y" if by_id[r[0]].hypercapnic else "N") for r in body)
    assert {r[8] for r in body} == {"Y", "N"}
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed into place


def test_diagnosis_mapping_and_one_file_per_day(tmp_path):
    cohort = make_cohort(50, seed=9, as_of=AS_OF)
    paths = write_admissions(cohort, tmp_path, days=[date(2026, 11, 22), date(2026, 11, 21)], seed=3)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    assert names == [
        "landing/patients_daily_file_20261121.csv",
        "landing/patients_daily_file_20261122.csv",
        "reference/diagnosis_mapping.csv",
    ]
    with (tmp_path / "reference" / "diagnosis_mapping.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == DIAGNOSIS_COLUMNS == ("diagnosis_code", "diagnosis_description")
    mapping = dict(rows[1:])
    assert set(mapping) == CODES and mapping["J44.1"].startswith("Chronic obstructive pulmonary disease")
    assert all(mapping.values())


def test_a_run_across_midnight_writes_both_days(tmp_path):
    start = datetime(2026, 11, 21, 23, 58, tzinfo=UTC)
    Simulation(SimulationConfig(patients=5, duration_seconds=300, start=start, out_dir=tmp_path)).run(
        ListSink()
    )
    assert sorted(p.name for p in (tmp_path / "landing").iterdir()) == [
        "patients_daily_file_20261121.csv",
        "patients_daily_file_20261122.csv",
    ]
