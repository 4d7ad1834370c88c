"""Malformed records: every kind occurs, breaks the contract in its own way, and is counted exactly."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from simulator import (
    MALFORMED_KINDS,
    FaultRates,
    ListSink,
    MalformedKind,
    Manifest,
    Simulation,
    SimulationConfig,
    run_simulation,
)
from simulator.engine import MANIFEST_FILE
from simulator.faults import malform
from vitals_lake.contract import (
    BLOOD_PRESSURE,
    DEVICE_ID,
    DIASTOLIC,
    EVENT_ID,
    HEART_RATE,
    PATIENT_ID,
    RESPIRATION_RATE,
    SPO2,
    SYSTOLIC,
    TEMPERATURE,
    TIMESTAMP,
    VITALS_BY_NAME,
)

START = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
NUMERIC = (HEART_RATE, TEMPERATURE, SPO2, RESPIRATION_RATE)


def first_violation(raw: bytes) -> str | None:
    """An independent reading of the contract: the first rule ``raw`` breaks, named like MalformedKind."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "non_utf8"
    try:
        obj = json.loads(text)  # the stdlib accepts a bare NaN, so NaN is told apart below
    except json.JSONDecodeError:
        return "truncated_json" if text.startswith("{") else "not_json"
    if isinstance(obj, list):
        return "json_array"
    if not isinstance(obj, dict):
        return "not_json"
    if PATIENT_ID not in obj:
        return "missing_patient_id"
    if not isinstance(obj[PATIENT_ID], str) or not re.fullmatch(r"P\d{6}", obj[PATIENT_ID]):
        return "patient_id_injection"
    if TIMESTAMP not in obj:
        return "missing_timestamp"
    try:
        ts = datetime.fromisoformat(obj[TIMESTAMP])
    except (TypeError, ValueError):
        return "unparseable_timestamp"
    if ts.tzinfo is None:
        return "timestamp_without_offset"
    if not isinstance(obj.get(EVENT_ID), str):
        return "missing_event_id"
    if BLOOD_PRESSURE in obj:
        sys_, dia = (int(x) for x in obj[BLOOD_PRESSURE].split("/"))
    else:
        sys_, dia = obj[SYSTOLIC], obj[DIASTOLIC]
    values = {**{k: obj[k] for k in NUMERIC}, SYSTOLIC: sys_, DIASTOLIC: dia}
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"{name}_not_numeric"
        if math.isnan(v):
            return "nan_literal"
    hr_lo, hr_hi = VITALS_BY_NAME[HEART_RATE].possible
    if not hr_lo <= values[HEART_RATE] <= hr_hi:
        return "heart_rate_out_of_range"
    if values[SPO2] > 100:
        return "spo2_above_100"
    if values[TEMPERATURE] < 0:
        return "negative_temperature"
    for name, v in values.items():
        lo, hi = VITALS_BY_NAME[name].possible
        if not lo <= v <= hi:
            return f"{name}_out_of_range"
    if sys_ <= dia:
        return "systolic_not_above_diastolic"
    return None


@pytest.fixture(scope="module")
def messy_run():
    sink = ListSink()
    config = SimulationConfig(
        patients=30,
        interval_seconds=5,
        duration_seconds=300,
        seed=11,
        start=START,
        faults=FaultRates(malformed=0.5, duplicate=0.05, late=0.05, out_of_order=0.05),
    )
    return run_simulation(config, sink), sink.values


def test_every_kind_occurs_and_is_counted_exactly(messy_run):
    manifest, values = messy_run
    found = Counter(v for v in map(first_violation, values) if v is not None)
    assert set(found) == {str(k) for k in MALFORMED_KINDS}
    assert dict(found) == manifest.malformed_by_kind
    assert sum(found.values()) == manifest.malformed_sent


def test_manifest_counts_match_what_the_sink_received(tmp_path):
    faults = FaultRates(duplicate=0.05, malformed=0.05, late=0.05, out_of_order=0.05, dropout=0.002)
    config = SimulationConfig(
        patients=40, duration_seconds=600, seed=5, start=START, faults=faults, out_dir=tmp_path
    )
    sim = Simulation(config)
    sink = ListSink()
    manifest = sim.run(sink)
    seen: set[bytes] = set()
    event_ids: set[str] = set()
    duplicates = malformed = 0
    for raw in sink.values:
        if raw in seen:
            duplicates += 1
        elif first_violation(raw) is not None:
            malformed += 1
        else:
            event_ids.add(json.loads(raw)[EVENT_ID])
        seen.add(raw)
    assert manifest.messages_sent == len(sink.values)
    assert (
        manifest.messages_sent == manifest.valid_readings + manifest.duplicates_sent + manifest.malformed_sent
    )
    assert manifest.duplicates_sent == duplicates > 0
    assert manifest.malformed_sent == malformed > 0
    assert manifest.valid_readings == len(event_ids) == len(sink.values) - duplicates - malformed
    assert manifest.late_sent > 0 and manifest.out_of_order_sent > 0 and manifest.dropped_readings > 0
    # Every interval each device either sent a reading (good or broken) or was in a dropout.
    assert manifest.valid_readings + manifest.malformed_sent + manifest.dropped_readings == 40 * sim.ticks
    assert Manifest.read(tmp_path / MANIFEST_FILE) == manifest
    written = json.loads((tmp_path / MANIFEST_FILE).read_bytes())
    assert written["messages_sent"] == manifest.messages_sent
    assert written["malformed_by_kind"] == manifest.malformed_by_kind


def test_valid_readings_break_no_rule(messy_run):
    _, values = messy_run
    valid = [v for v in values if first_violation(v) is None]
    assert len(valid) > 500
    for raw in valid:
        obj = json.loads(raw)
        for name in (*NUMERIC, SYSTOLIC, DIASTOLIC):
            if name in obj:
                lo, hi = VITALS_BY_NAME[name].possible
                assert lo <= obj[name] <= hi


def test_no_message_contains_a_raw_newline(messy_run):
    _, values = messy_run
    assert not [v for v in values if b"\n" in v]


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
@pytest.mark.parametrize("bp_as_string", [True, False])
def test_each_kind_breaks_exactly_its_rule(kind: MalformedKind, bp_as_string: bool):
    reading: dict[str, object] = {
        EVENT_ID: "5b0d7f2e-8a61-4a43-9c41-0e6f1d2b3c4d",
        PATIENT_ID: "P000042",
        DEVICE_ID: "MON-00A1B2",
        TIMESTAMP: "2026-11-22T07:30:00.250+01:00",
        HEART_RATE: 72,
        TEMPERATURE: 36.8,
        SPO2: 97,
        RESPIRATION_RATE: 16,
    }
    if bp_as_string:
        reading[BLOOD_PRESSURE] = "121/79"
    else:
        reading[SYSTOLIC], reading[DIASTOLIC] = 121, 79
    assert first_violation(json.dumps(reading).encode()) is None
    rng = np.random.default_rng(3)
    for _ in range(12):  # every variant a kind picks from
        raw = malform(kind, reading, rng)
        assert first_violation(raw) == str(kind), raw
        assert b"\n" not in raw
    assert reading[PATIENT_ID] == "P000042"  # the source reading is left untouched
