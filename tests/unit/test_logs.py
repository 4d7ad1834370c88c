"""Structured logs: JSON lines Cloud Logging reads (severity, message, the job's fields) in the cloud or
with VITALS_LOG_FORMAT=json; text locally."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

from tests.unit.test_admissions import KEY, row, write_day, write_mapping
from vitals_lake import contract as c
from vitals_lake.logs import JsonFormatter, log_format
from vitals_lake.pseudonym import KEY_ENV

ROOT = Path(__file__).resolve().parents[2]


def test_a_record_becomes_one_json_line_with_its_fields():
    record = logging.LogRecord(
        "vitals_lake.maintenance", logging.WARNING, __file__, 1, "table %s", ("x",), None
    )
    record.fields = {"table": "silver_patient_vitals", "expired_rows": 12}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["severity"] == "WARNING" and entry["message"] == "table x"
    assert entry["table"] == "silver_patient_vitals" and entry["expired_rows"] == 12
    assert entry["logger"] == "vitals_lake.maintenance" and entry["time"].endswith("+00:00")


def test_json_in_the_cloud_or_when_asked_text_otherwise():
    assert log_format({}) == "text"
    assert log_format({"CLOUD_RUN_JOB": "vitals-load-admissions"}) == "json"
    assert log_format({"VITALS_DATAFLOW_WORKER": "1"}) == "json"
    assert log_format({"VITALS_LOG_FORMAT": "json"}) == "json"
    assert log_format({"K_SERVICE": "x", "VITALS_LOG_FORMAT": "text"}) == "text"


def test_the_admissions_job_logs_its_pass_as_json_fields(tmp_path):
    landing, mapping = tmp_path / "landing", tmp_path / "reference" / c.DIAGNOSIS_MAPPING_FILE
    write_day(landing, date(2026, 11, 20), [row("P1"), row("P2")])
    write_mapping(mapping)
    env = {**os.environ, KEY_ENV: KEY.hex(), "VITALS_LOG_FORMAT": "json"}
    args = [sys.executable, "-m", "pipelines.load_admissions", "--landing", str(landing)]
    args += ["--reference", str(mapping), "--lake", str(tmp_path / "lake")]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]  # every line is JSON
    (pass_,) = [e for e in entries if e["message"] == "admissions pass"]
    assert pass_["severity"] == "INFO" and pass_["files"] == 1 and pass_["rows"] == 2
    assert pass_["patients_changed"] == 2 and pass_["failed_files"] == 0
