"""The DuckDB anchor of the pipeline_core benchmark (bench/duck_anchor.py): every line accounted for,
the contract's rules applied, duplicates dropped, NEWS2 as ours, and the same Silver as our gate."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.duck_anchor import GOLD_MINUTES_FILE, SILVER_FILE, AnchorCounts, run_duckdb_anchor
from simulator import FaultRates, JsonlSink, SimulationConfig, run_simulation
from tests.factories import DROP, T0, raw, reading
from vitals_lake import contract as c
from vitals_lake import envelope
from vitals_lake.news2 import score_news2
from vitals_lake.readings import TimeRules, parse_batch


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _run(tmp_path: Path, lines: list[bytes]) -> tuple[AnchorCounts, pa.Table, pa.Table]:
    readings = _write(tmp_path / "readings.jsonl", lines)
    out = tmp_path / "out"
    out.mkdir()
    counts = run_duckdb_anchor(readings, out)
    return counts, pq.read_table(out / SILVER_FILE), pq.read_table(out / GOLD_MINUTES_FILE)


def _by_event_id(silver: pa.Table) -> dict[str, dict[str, object]]:
    return {row[c.EVENT_ID]: row for row in silver.to_pylist()}


def test_counts_rules_and_duplicates(tmp_path):
    ok = raw(reading(1))
    no_id = raw(reading(2, event_id=DROP))  # the pipeline derives an id from device and instant
    lines = [
        ok,
        ok,  # the same valid line again: one Silver row, one duplicate
        no_id,
        no_id,
        raw(reading(3, heart_rate=999)),
        ok[:40],  # truncated JSON
        raw(reading(4, heart_rate="seventy-two")),  # wrong type: a NULL to DuckDB, quarantine to us
        raw(reading(5, patient_id=DROP)),
        raw(reading(6, blood_pressure="80/120")),
        raw(reading(7, timestamp="2026-11-22T06:00:00")),  # no UTC offset
        raw(reading(8, timestamp="2026-02-30T06:00:00+00:00")),  # no 30 February
        raw(reading(9, patient_id="P1'; DROP TABLE silver; --")),
        raw(reading(10, temperature=12.345)).replace(b"12.345", b"NaN"),
        raw(reading(11, temperature=100.58, temperature_unit="[degF]", at=T0 + timedelta(minutes=3))),
    ]
    counts, silver, gold = _run(tmp_path, lines)

    assert counts == AnchorCounts(silver=3, quarantined=9, duplicates=2, gold_minutes=2)
    assert counts.silver + counts.quarantined + counts.duplicates == len(lines)
    rows = _by_event_id(silver)
    derived = f"derived:dev-P000001:{int((T0 + timedelta(seconds=10)).timestamp() * 1_000_000)}"
    assert set(rows) == {"evt-P000001-1", derived, "evt-P000001-11"}
    first = rows["evt-P000001-1"]
    assert (first[c.SYSTOLIC], first[c.DIASTOLIC], first[c.HEART_RATE]) == (120, 80, 72)  # "120/80" split
    fahrenheit = rows["evt-P000001-11"]
    assert fahrenheit[c.TEMPERATURE] == 38.1 and fahrenheit[c.TEMPERATURE_CONVERTED] is True
    assert pc.sum(gold[c.READING_COUNT]).as_py() == silver.num_rows
    assert sorted(gold[c.WINDOW_START].to_pylist()) == [T0, T0 + timedelta(minutes=3)]


def test_news2_matches_ours_on_hand_picked_readings(tmp_path):
    picked = [  # band edges and in-between values of news2.py's chart
        {c.RESPIRATION_RATE: 8, c.SPO2: 91.5, c.HEART_RATE: 40, c.TEMPERATURE: 35.05},
        {c.RESPIRATION_RATE: 9, c.SPO2: 93.0, c.HEART_RATE: 41, c.TEMPERATURE: 35.0, c.CONSCIOUSNESS: "v"},
        {c.RESPIRATION_RATE: 21, c.SPO2: 95.5, c.HEART_RATE: 131, c.TEMPERATURE: 39.0},
        {
            c.RESPIRATION_RATE: 25,
            c.SPO2: 96.0,
            c.HEART_RATE: 91,
            c.TEMPERATURE: 39.1,
            c.SUPPLEMENTAL_OXYGEN: True,
        },
        {c.RESPIRATION_RATE: 20, c.HEART_RATE: 110, c.TEMPERATURE: 38.05, c.BLOOD_PRESSURE: "220/100"},
        {c.RESPIRATION_RATE: 12, c.SPO2: 99.0, c.HEART_RATE: 60, c.CONSCIOUSNESS: "A"},
        {c.SPO2: 92.0, c.HEART_RATE: 50, c.TEMPERATURE: 36.0, c.BLOOD_PRESSURE: "101/60"},
    ]
    defaults = {name: DROP for name in (c.RESPIRATION_RATE, c.SPO2, c.HEART_RATE, c.TEMPERATURE)}
    lines = [raw(reading(i, **{**defaults, **values})) for i, values in enumerate(picked)]
    counts, silver, _ = _run(tmp_path, lines)
    assert counts.silver == len(picked)

    rows = _by_event_id(silver)
    duck = [rows[f"evt-P000001-{i}"][c.NEWS2_SCORE] for i in range(len(picked))]
    measured = (c.RESPIRATION_RATE, c.SPO2, c.HEART_RATE, c.TEMPERATURE)
    bp = [str(v.get(c.BLOOD_PRESSURE, "120/80")).split("/") for v in picked]
    ours = score_news2(
        pa.table(
            {
                **{name: pa.array([v.get(name) for v in picked], pa.float64()) for name in measured},
                c.SYSTOLIC: pa.array([float(s) for s, _ in bp]),
                c.CONSCIOUSNESS: pa.array([v.get(c.CONSCIOUSNESS) for v in picked], pa.string()),
                c.SUPPLEMENTAL_OXYGEN: pa.array([v.get(c.SUPPLEMENTAL_OXYGEN) for v in picked], pa.bool_()),
            }
        )
    )
    assert duck == ours[c.NEWS2_SCORE].to_pylist()
    assert max(duck) >= 7 and min(duck) <= 2  # the readings span the responses, not only zeros


def test_same_silver_as_our_gate_on_simulated_faults(tmp_path):
    config = SimulationConfig(
        patients=6,
        duration_seconds=900,
        interval_seconds=60,
        seed=11,
        episode_rate=0.3,
        start=T0,
        faults=FaultRates(malformed=0.3, duplicate=0.1),  # every fault kind on a small cohort
        out_dir=tmp_path / "sim",
        admissions=False,
    )
    readings = tmp_path / "readings.jsonl"
    sink = JsonlSink(readings)
    try:
        run_simulation(config, sink, sink_name="jsonl")
    finally:
        sink.close()
    lines = [line.rstrip(b"\r\n") for line in readings.open("rb")]
    out = tmp_path / "out"
    out.mkdir()
    counts = run_duckdb_anchor(readings, out)
    silver = pq.read_table(out / SILVER_FILE)
    gold = pq.read_table(out / GOLD_MINUTES_FILE)

    bronze = envelope.to_bronze(
        envelope.records_from_lines(lines, source="file"), ingest_time_us=time.time_ns() // 1000
    )
    parsed = parse_batch(bronze, time_rules=TimeRules())
    ids = parsed.valid[c.EVENT_ID].to_pylist()
    assert counts.silver + counts.quarantined + counts.duplicates == len(lines)
    assert counts.quarantined == parsed.quarantine.num_rows > 0
    assert counts.duplicates == len(ids) - len(set(ids)) > 0
    assert set(silver[c.EVENT_ID].to_pylist()) == set(ids)
    assert pc.sum(gold[c.READING_COUNT]).as_py() == silver.num_rows == counts.silver
    assert gold.num_rows == counts.gold_minutes
    ours = score_news2(silver)  # on the anchor's own Silver values: every sub-score, aggregate, response
    for name in ours.column_names:
        assert silver[name].to_pylist() == ours[name].to_pylist(), name
