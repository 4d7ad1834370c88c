"""Admission files: discovery exactly once, Bronze as text, cleaning, diagnosis join, enrichment."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from simulator.admissions import LANDING_DIR, REFERENCE_DIR, write_admissions
from simulator.cohort import DIAGNOSIS_BY_CODE, make_cohort
from vitals_lake import contract as c
from vitals_lake.admissions import (
    ENRICHED_SCHEMA,
    MAX_LENGTHS,
    PATIENT_ID_FORMAT,
    PatientDirectory,
    clean_patients,
    discover_new_files,
    enrich_readings,
    load_bronze,
    load_diagnoses,
    read_admission_file,
    read_diagnosis_mapping,
    refresh,
    rejection_reasons,
)
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from vitals_lake.pseudonym import KEY_ENV, pseudonymise

KEY = bytes(range(32))
DAY1, DAY2, DAY3 = date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)
MAPPING = [
    ("I10", "Essential (primary) hypertension"),
    ("J44.1", "Chronic obstructive pulmonary disease with (acute) exacerbation"),
]
ROOT = Path(__file__).resolve().parents[2]


def row(patient_id: str, changes: dict[str, str] | None = None) -> list[str]:
    values = {
        c.PATIENT_ID: patient_id,
        c.NAME: "Ann Lee",
        c.AGE: "70",
        c.GENDER: "F",
        c.ADMISSION_DATE: "2026-11-20",
        c.DIAGNOSIS_CODE: "I10",
        c.WARD: "GENMED",
        c.BED: "GENMED-01",
        c.HYPERCAPNIC: "N",
    }
    values.update(changes or {})
    return [values[name] for name in c.ADMISSION_COLUMNS]


def write_day(landing: Path, day: date, rows: list[list[str]], header=c.ADMISSION_COLUMNS) -> Path:
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / c.ADMISSION_FILE_PATTERN.format(date=day)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_mapping(path: Path, pairs=MAPPING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(c.DIAGNOSIS_COLUMNS)
        writer.writerows(pairs)
    return path


@pytest.fixture
def lake(tmp_path):
    return Lake(LocalLake(root=tmp_path / "lake"))


@pytest.fixture
def landing(tmp_path):
    return tmp_path / "landing"


@pytest.fixture
def mapping(tmp_path):
    return write_mapping(tmp_path / "reference" / c.DIAGNOSIS_MAPPING_FILE)


def by_id(table: pa.Table) -> dict[str, dict]:
    return {r[c.PATIENT_ID]: r for r in table.to_pylist()}


def test_each_file_is_loaded_exactly_once_across_refreshes_and_a_restart(tmp_path, lake, landing, mapping):
    write_day(landing, DAY2, [row("P2"), row("P3")])
    write_day(landing, DAY1, [row("P1")])
    (landing / "notes.csv").write_text("not an admission file\n")
    first = refresh(str(landing), str(mapping), lake, key=KEY)
    assert [Path(f).name for f in first.files] == [
        "patients_daily_file_20261120.csv",
        "patients_daily_file_20261121.csv",
    ]
    assert first.rows == 3 and first.patients_changed == 3 and first.diagnoses_reloaded
    assert refresh(str(landing), str(mapping), lake, key=KEY).files == ()

    restarted = Lake(LocalLake(root=tmp_path / "lake"))  # a new process: only the tables remember
    assert discover_new_files(str(landing), restarted) == []
    again = refresh(str(landing), str(mapping), restarted, key=KEY)
    assert (again.files, again.rows, again.patients_recomputed, again.diagnoses_reloaded) == ((), 0, 0, False)

    write_day(landing, DAY3, [row("P4")])
    third = refresh(str(landing), str(mapping), restarted, key=KEY)
    assert [Path(f).name for f in third.files] == ["patients_daily_file_20261122.csv"]
    bronze = restarted.read("bronze_admissions")
    assert bronze.num_rows == 4
    assert len(set(bronze[c.SOURCE_FILE].to_pylist())) == 3
    assert restarted.count("patients") == 4


def test_load_bronze_is_idempotent_and_a_crash_before_the_patients_merge_is_repaired(lake, landing, mapping):
    path = write_day(landing, DAY1, [row("P1"), row("P2")])
    assert load_bronze(str(path), lake) == 2
    assert load_bronze(str(path), lake) == 0  # the name check against the table is the bookkeeping
    assert lake.count("bronze_admissions") == 2
    # The process "died" after the Bronze append: nothing is rediscovered, yet patients catch up.
    report = refresh(str(landing), str(mapping), lake, key=KEY)
    assert report.files == () and report.rows == 0
    assert sorted(report.patient_ids) == ["P1", "P2"] and lake.count("patients") == 2


def test_bronze_keeps_text_maps_columns_by_name_and_keeps_unreadable_rows(landing):
    header = [c.PATIENT_ID.replace("_", " ").title(), "notes", *c.ADMISSION_COLUMNS[1:7]]  # no bed/flag
    good = ["P1", "likes tea", "Ann Lee", " 72 ", "female", "2026-11-19", "I10", "GENMED"]
    path = write_day(
        landing, DAY1, [good, ["P2", "x", "too", "few"], [*good, "one", "too many"], good], header
    )
    rows = read_admission_file(str(path), now=datetime(2026, 11, 22, 6, tzinfo=UTC))
    assert rows.schema == c.BRONZE_ADMISSIONS_SCHEMA
    assert rows[c.SOURCE_LINE].to_pylist() == [2, 3, 4, 5]
    assert rows[c.PATIENT_ID].to_pylist() == ["P1", None, None, "P1"]  # unreadable rows kept, all null
    assert rows[c.AGE].to_pylist()[0] == " 72 "  # Bronze is the text as received
    assert rows[c.BED].null_count == 4 and rows[c.HYPERCAPNIC].null_count == 4
    assert set(rows[c.SOURCE_FILE].to_pylist()) == {str(path.resolve())}
    assert set(rows[c.INGEST_DATE].to_pylist()) == {DAY3}


def test_messy_rows_are_cleaned(landing):
    cases = {  # patient: (changes, expected gender, age, age band, admission date, spo2 scale)
        "P01": ({c.GENDER: "F"}, "F", 70, "70-79", DAY1, 1),
        "P02": ({c.GENDER: "female", c.AGE: "95"}, "F", 95, "90+", DAY1, 1),
        "P03": ({c.GENDER: "Female", c.AGE: "5"}, "F", 5, "0-9", DAY1, 1),
        "P04": ({c.GENDER: " f ", c.AGE: ""}, "F", None, None, DAY1, 1),
        "P05": ({c.GENDER: "Male", c.AGE: "abc"}, "M", None, None, DAY1, 1),
        "P06": ({c.GENDER: "m", c.AGE: "-3"}, "M", None, None, DAY1, 1),
        "P07": ({c.GENDER: "MALE", c.AGE: "121"}, "M", None, None, DAY1, 1),
        "P08": ({c.GENDER: "x", c.AGE: "64.7"}, "U", 64, "60-69", DAY1, 1),
        "P09": ({c.GENDER: "", c.ADMISSION_DATE: "20/11/2026"}, "U", 70, "70-79", DAY1, 1),
        "P10": ({c.ADMISSION_DATE: "20261120", c.HYPERCAPNIC: "Y"}, "F", 70, "70-79", DAY1, 2),
        "P11": ({c.ADMISSION_DATE: "2026-11-20T08:15:00", c.HYPERCAPNIC: "yes"}, "F", 70, "70-79", DAY1, 2),
        "P12": ({c.ADMISSION_DATE: "not a date", c.HYPERCAPNIC: "TRUE"}, "F", 70, "70-79", None, 2),
        "P13": ({c.ADMISSION_DATE: "2026-13-45", c.HYPERCAPNIC: "1"}, "F", 70, "70-79", None, 2),
        "P14": ({c.ADMISSION_DATE: "", c.HYPERCAPNIC: "maybe"}, "F", 70, "70-79", None, 1),
        "P15": ({c.HYPERCAPNIC: "", c.ADMISSION_DATE: "2026/11/20"}, "F", 70, "70-79", DAY1, 1),
    }
    rows = [row(pid, changes) for pid, (changes, *_) in cases.items()]
    bronze = read_admission_file(str(write_day(landing, DAY1, [*rows, row("", {c.NAME: "no id"})])))
    patients = clean_patients(
        bronze, pa.table({n: pa.array([], pa.string()) for n in c.DIAGNOSIS_COLUMNS}), key=KEY
    )
    assert patients.schema == c.PATIENTS_SCHEMA
    got = by_id(patients)
    assert sorted(got) == sorted(cases)  # the row without a patient_id cannot be attributed
    for pid, (_, gender, age, band, admitted, scale) in cases.items():
        p = got[pid]
        assert (p[c.GENDER], p[c.AGE], p[c.AGE_BAND], p[c.ADMISSION_DATE], p[c.SPO2_SCALE]) == (
            gender,
            age,
            band,
            admitted,
            scale,
        ), pid
        assert p[c.PATIENT_KEY] == pseudonymise(pa.array([pid]), key=KEY)[0].as_py()


def test_duplicates_across_files_keep_the_latest_admission_then_the_latest_file(lake, landing, mapping):
    write_day(
        landing,
        DAY1,
        [
            row("A", {c.ADMISSION_DATE: "2026-11-01", c.WARD: "old"}),
            row("B", {c.WARD: "day1"}),
            row("C", {c.ADMISSION_DATE: "2026-11-18", c.WARD: "newer admission"}),
            row("D", {c.WARD: "same"}),
            row("D", {c.WARD: "same"}),  # exported twice
            row("E", {c.WARD: "readable date"}),
        ],
    )
    write_day(
        landing,
        DAY2,
        [
            row("A", {c.ADMISSION_DATE: "2026-11-05", c.WARD: "new"}),
            row("B", {c.WARD: "day2"}),
            row("C", {c.ADMISSION_DATE: "2026-11-02", c.WARD: "older admission"}),
            row("E", {c.ADMISSION_DATE: "garbled", c.WARD: "garbled date"}),
        ],
    )
    refresh(str(landing), str(mapping), lake, key=KEY)
    patients = lake.read("patients")
    assert patients.num_rows == 5
    wards = {pid: p[c.WARD] for pid, p in by_id(patients).items()}
    assert wards == {"A": "NEW", "B": "DAY2", "C": "NEWER ADMISSION", "D": "SAME", "E": "READABLE DATE"}
    assert Path(by_id(patients)["B"][c.SOURCE_FILE]).name == "patients_daily_file_20261121.csv"


def test_diagnosis_join_keeps_an_unknown_code_and_the_reference_refreshes(lake, landing, mapping):
    write_day(
        landing,
        DAY1,
        [
            row("P1", {c.DIAGNOSIS_CODE: "J44.1"}),
            row("P2", {c.DIAGNOSIS_CODE: " i10 "}),
            row("P3", {c.DIAGNOSIS_CODE: "Z99.9"}),
        ],
    )
    refresh(str(landing), str(mapping), lake, key=KEY)
    got = by_id(lake.read("patients"))
    assert got["P1"][c.DIAGNOSIS_DESCRIPTION] == MAPPING[1][1]
    assert (got["P2"][c.DIAGNOSIS_CODE], got["P2"][c.DIAGNOSIS_DESCRIPTION]) == ("I10", MAPPING[0][1])
    assert (got["P3"][c.DIAGNOSIS_CODE], got["P3"][c.DIAGNOSIS_DESCRIPTION]) == ("Z99.9", None)

    assert load_diagnoses(str(mapping), lake) is False  # same content: no new version
    version = lake.version("diagnoses")
    write_mapping(mapping, [*MAPPING[1:], ("Z99.9", "Dependence on unspecified enabling machines")])
    report = refresh(str(landing), str(mapping), lake, key=KEY)
    assert report.diagnoses_reloaded and lake.version("diagnoses") == version + 1
    assert lake.count("diagnoses") == 2  # replaced, not appended: I10 is gone
    got = by_id(lake.read("patients"))
    assert got["P3"][c.DIAGNOSIS_DESCRIPTION].startswith("Dependence")
    assert got["P2"][c.DIAGNOSIS_DESCRIPTION] is None
    assert sorted(report.patient_ids) == ["P2", "P3"]  # P1 was recomputed but did not change

    write_mapping(mapping, [])
    assert load_diagnoses(str(mapping), lake) is False and lake.count("diagnoses") == 2  # never wiped


def test_enrichment_keeps_row_order_flags_unknown_patients_and_never_carries_the_name(lake, landing, mapping):
    write_day(
        landing,
        DAY1,
        [
            row(
                "P1", {c.NAME: "Zelda Secretname", c.HYPERCAPNIC: "Y", c.DIAGNOSIS_CODE: "J44.1", c.AGE: "71"}
            ),
            row("P2", {c.NAME: "Yves Hiddenname", c.WARD: "CARDIO", c.BED: "CARDIO-02"}),
        ],
    )
    refresh(str(landing), str(mapping), lake, key=KEY)
    patients = lake.read("patients")
    ids = ["P2", "UNKNOWN", "P1", "P2", "P1", "UNKNOWN"]
    silver = pa.table({c.PATIENT_ID: ids, c.HEART_RATE: pa.array(range(6), pa.int16())})
    enriched = enrich_readings(silver, patients, key=KEY)
    assert enriched.schema == ENRICHED_SCHEMA
    assert enriched.column_names == [*(f.name for f in c.ENRICHMENT_FIELDS), c.SPO2_SCALE]
    assert enriched.num_rows == 6
    assert enriched[c.PATIENT_KEY].to_pylist() == pseudonymise(pa.array(ids), key=KEY).to_pylist()
    assert enriched[c.KNOWN_PATIENT].to_pylist() == [True, False, True, True, True, False]
    assert enriched[c.SPO2_SCALE].to_pylist() == [1, 1, 2, 1, 2, 1]
    assert enriched[c.WARD].to_pylist() == ["CARDIO", None, "GENMED", "CARDIO", "GENMED", None]
    assert enriched[c.BED].to_pylist()[0] == "CARDIO-02"
    assert enriched[c.AGE_BAND].to_pylist()[2] == "70-79"
    assert enriched[c.DIAGNOSIS_DESCRIPTION].to_pylist()[2] == MAPPING[1][1]
    unknown = enriched.slice(1, 1).to_pylist()[0]
    assert all(
        unknown[n] is None for n in (c.WARD, c.BED, c.AGE_BAND, c.DIAGNOSIS_CODE, c.DIAGNOSIS_DESCRIPTION)
    )
    text = str(enriched.to_pylist())
    assert "Secretname" not in text and "Hiddenname" not in text and c.NAME not in enriched.column_names
    # Another key gives other pseudonyms for the same readings.
    assert enrich_readings(silver, patients, key=KEY[::-1])[c.PATIENT_KEY][0] != enriched[c.PATIENT_KEY][0]


def test_a_late_admission_file_makes_an_unknown_patient_known(tmp_path, lake, landing, mapping):
    write_day(landing, DAY1, [row("P1")])
    refresh(str(landing), str(mapping), lake, key=KEY)
    now = [0.0]
    directory = PatientDirectory(
        Lake(LocalLake(root=tmp_path / "lake")), refresh_seconds=30, clock=lambda: now[0]
    )
    silver = pa.table({c.PATIENT_ID: ["P1", "P9"]})
    assert directory.enrich(silver, key=KEY)[c.KNOWN_PATIENT].to_pylist() == [True, False]

    write_day(landing, DAY2, [row("P1"), row("P9", {c.WARD: "RESP", c.HYPERCAPNIC: "Y"})])
    report = refresh(str(landing), str(mapping), lake, key=KEY)
    assert report.patient_ids == ("P9",) and report.patients_recomputed == 2
    now[0] = 29.0  # not yet due: the cached table is served
    assert directory.enrich(silver, key=KEY)[c.KNOWN_PATIENT].to_pylist() == [True, False]
    now[0] = 30.0
    late = directory.enrich(silver, key=KEY)
    assert late[c.KNOWN_PATIENT].to_pylist() == [True, True]
    assert late[c.WARD].to_pylist() == ["GENMED", "RESP"] and late[c.SPO2_SCALE].to_pylist() == [1, 2]
    assert directory.reloads == 2
    now[0] = 90.0  # due, but the Delta version did not move: no reload
    directory.table()
    assert directory.reloads == 2 and directory.version == lake.version("patients")


def test_end_to_end_with_the_simulator_csv_output(tmp_path, lake):
    as_of = datetime(2026, 11, 22, 6, tzinfo=UTC)
    cohort = make_cohort(80, seed=5, as_of=as_of)
    out = tmp_path / "sim"
    write_admissions(cohort, out, days=[DAY2, DAY3], seed=5)
    reference = out / REFERENCE_DIR / c.DIAGNOSIS_MAPPING_FILE
    report = refresh(str(out / LANDING_DIR), str(reference), lake, key=KEY)
    assert len(report.files) == 2
    present = [p for p in cohort if p.admitted_at.date() <= DAY3]
    patients = by_id(lake.read("patients"))
    assert sorted(patients) == sorted(p.patient_id for p in present)
    bronze_genders = set(lake.read("bronze_admissions")[c.GENDER].to_pylist())
    assert bronze_genders - {"F", "M"}  # the simulator's messy spellings did arrive...
    ages_missing = 0
    for p in present:
        row_ = patients[p.patient_id]
        assert row_[c.GENDER] == p.sex  # ...and were normalised
        assert row_[c.NAME] == p.name and row_[c.WARD] == p.ward and row_[c.BED] == p.bed
        assert row_[c.ADMISSION_DATE] == p.admitted_at.date()
        assert row_[c.DIAGNOSIS_DESCRIPTION] == DIAGNOSIS_BY_CODE[p.diagnosis_code].description
        assert row_[c.SPO2_SCALE] == (2 if p.hypercapnic else 1)
        assert row_[c.AGE] in (p.age, None)
        ages_missing += row_[c.AGE] is None
    assert ages_missing < len(present) / 4
    assert any(p.hypercapnic for p in present)
    silver = pa.table({c.PATIENT_ID: [p.patient_id for p in reversed(present)]})
    enriched = enrich_readings(silver, lake.read("patients"), key=KEY)
    assert all(enriched[c.KNOWN_PATIENT].to_pylist())
    assert enriched[c.BED].to_pylist() == [p.bed for p in reversed(present)]


def test_cli_one_pass_then_watch_until_sigterm(tmp_path, landing, mapping):
    write_day(landing, DAY1, [row("P1"), row("P2")])
    lake_dir = tmp_path / "lake"
    args = [sys.executable, "-m", "pipelines.load_admissions", "--landing", str(landing)]
    args += ["--reference", str(mapping), "--lake", str(lake_dir)]
    env = {**os.environ, KEY_ENV: KEY.hex()}
    once = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)
    assert once.returncode == 0, once.stderr.decode()
    out = once.stdout.decode()
    assert "loaded " in out and "patients_daily_file_20261120.csv: 2 rows" in out
    assert "changed patients: 2" in out
    assert "P1" not in out and "P2" not in out  # no patient id in a job's output

    write_day(landing, DAY2, [row("P3")])
    watcher = subprocess.Popen(
        [*args, "--watch", "0.2"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert watcher.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines.append(watcher.stdout.readline().decode())
            if "changed patients: 1" in lines[-1]:
                break
        assert any("patients_daily_file_20261121.csv: 1 rows" in line for line in lines), lines
        assert not any("P3" in line for line in lines), lines
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=60) == 0  # it finishes its pass first (slow on a cold start)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert Lake(LocalLake(root=lake_dir)).count("patients") == 3


# --- sanitising and validation (issue #13) ------------------------------------------------------------
def write_quoted_day(landing: Path, day: date, rows: list[list[str]]) -> Path:
    """Like write_day, with every value quoted: a CR or LF inside a value stays inside it."""
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / c.ADMISSION_FILE_PATTERN.format(date=day)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(c.ADMISSION_COLUMNS)
        writer.writerows(rows)
    return path


NO_DIAGNOSES = pa.table({n: pa.array([], pa.string()) for n in c.DIAGNOSIS_COLUMNS})


def test_text_fields_lose_control_characters_and_line_breaks(tmp_path, landing):
    dirty = {
        c.PATIENT_ID: " P1\r\n",
        c.NAME: "Ann\r\nLee\t\x00 Smith\u00a0",
        c.GENDER: "\tfemale\n",
        c.DIAGNOSIS_CODE: " j44.1\x85",
        c.WARD: "ICU\nEast",
        c.BED: "B\u20281\u2029",
        c.HYPERCAPNIC: "\x0bY\x1f",
    }
    bronze = read_admission_file(str(write_quoted_day(landing, DAY1, [row("", dirty)])))
    assert bronze[c.WARD].to_pylist() == ["ICU\nEast"]  # Bronze keeps the text as received
    reference = tmp_path / "mapping.csv"
    with reference.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(
            [c.DIAGNOSIS_COLUMNS, ["\tJ44.1\r\n", " COPD\r\n\u2028flare "]]
        )
    mapping = read_diagnosis_mapping(str(reference))
    assert mapping.to_pylist() == [{c.DIAGNOSIS_CODE: "J44.1", c.DIAGNOSIS_DESCRIPTION: "COPD flare"}]
    [p] = clean_patients(bronze, mapping, key=KEY).to_pylist()
    assert p[c.PATIENT_ID] == "P1"
    assert p[c.NAME] == "Ann Lee Smith"
    assert (p[c.WARD], p[c.BED]) == ("ICU EAST", "B 1")
    assert (p[c.GENDER], p[c.SPO2_SCALE]) == ("F", 2)
    assert (p[c.DIAGNOSIS_CODE], p[c.DIAGNOSIS_DESCRIPTION]) == ("J44.1", "COPD flare")
    control = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u00a0]")
    for value in p.values():
        assert not (isinstance(value, str) and control.search(value)), value


def test_the_sanitiser_blanks_an_all_control_value_to_null(landing):
    bronze = read_admission_file(
        str(write_quoted_day(landing, DAY1, [row("P1", {c.BED: "\r\n\t\u2028", c.WARD: " \x00 "})]))
    )
    [p] = clean_patients(bronze, NO_DIAGNOSES, key=KEY).to_pylist()
    assert (p[c.WARD], p[c.BED]) == (None, None)


def test_rejection_reasons_name_the_first_rule_a_row_fails():
    table = pa.table(
        {
            **{name: pa.array(["x"] * 6, pa.string()) for name in c.ADMISSION_COLUMNS},
            c.PATIENT_ID: ["P1", "P 1", "-P1", "P" * 129, "P" * 128, None],
        }
    )
    table = table.set_column(
        table.schema.get_field_index(c.WARD), c.WARD, pa.array(["W" * 65, "W" * 65, "x", "x", "W" * 64, "x"])
    )
    assert rejection_reasons(table).to_pylist() == [
        "ward_too_long",
        PATIENT_ID_FORMAT,  # the id is checked first
        PATIENT_ID_FORMAT,
        PATIENT_ID_FORMAT,
        None,  # 128 characters of id and 64 of ward are allowed
        None,  # no id: left out as unattributable, not "rejected"
    ]
    assert MAX_LENGTHS[c.WARD] == 64 and MAX_LENGTHS[c.BED] == 64
    assert MAX_LENGTHS[c.NAME] == 200 and MAX_LENGTHS[c.DIAGNOSIS_CODE] == 16


def test_rows_failing_validation_are_left_out_by_name_and_the_load_goes_on(lake, landing, mapping, caplog):
    caplog.set_level("WARNING", logger="vitals_lake.admissions")
    write_day(landing, DAY1, [row("P5", {c.WARD: "RESP"}), row("P6")])
    write_quoted_day(
        landing,
        DAY2,
        [
            row("P1"),
            row("P 2", {c.NAME: "Secret Spaceid"}),  # not the readings' id format
            row("P3/4"),
            row("P5", {c.WARD: "W" * 65}),  # P5's newer row is refused: the day-1 row stands
            row("P7", {c.BED: "B" * 65}),
            row("P8", {c.NAME: "N" * 201}),
            row("P9", {c.DIAGNOSIS_CODE: "I" * 17}),
            row("P10", {c.GENDER: "f" * 33}),
            row("P11", {c.WARD: "W" * 64, c.NAME: "N" * 200}),  # at the limits: kept
            row("P12", {c.WARD: "ICU\r\n" + " " * 80 + "EAST"}),  # long only before collapsing: kept
        ],
    )
    report = refresh(str(landing), str(mapping), lake, key=KEY)  # never crashes the load
    assert len(report.files) == 2 and report.rows == 12
    patients = by_id(lake.read("patients"))
    assert sorted(patients) == ["P1", "P11", "P12", "P5", "P6"]
    assert patients["P5"][c.WARD] == "RESP" and patients["P12"][c.WARD] == "ICU EAST"
    assert lake.count("bronze_admissions") == 12  # the refused rows stay in Bronze, as received
    [warning] = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    for reason, count in [
        (PATIENT_ID_FORMAT, 2),
        ("ward_too_long", 1),
        ("bed_too_long", 1),
        ("name_too_long", 1),
        ("diagnosis_code_too_long", 1),
        ("gender_too_long", 1),
    ]:
        assert f"'{reason}': {count}" in warning, warning
    assert "patients_daily_file_20261121.csv:3 patient_id_format" in warning
    assert "Secret" not in warning and "P 2" not in warning and "WWW" not in warning  # no values logged
