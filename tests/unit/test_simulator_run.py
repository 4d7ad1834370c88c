"""The simulation loop: determinism, exact manifest counts, reading shape, timestamps, imperfections."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from simulator import FaultRates, ListSink, Simulation, SimulationConfig, run_simulation
from simulator.devices import make_fleet
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
NO_FAULTS = FaultRates(
    duplicate=0, malformed=0, late=0, out_of_order=0, skewed_device=0, local_offset_device=0, dropout=0
)


def _run(**overrides):
    kwargs = {"patients": 25, "interval_seconds": 5, "duration_seconds": 600, "seed": 5, "start": START}
    kwargs.update(overrides)
    sim = Simulation(SimulationConfig(**kwargs))
    sink = ListSink()
    return sim, sim.run(sink), sink


def _parse_ok(raw: bytes) -> dict | None:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _instant_ms(obj: dict) -> int:
    return round(datetime.fromisoformat(obj[TIMESTAMP]).timestamp() * 1000)


def test_same_seed_same_bytes_other_seed_other_bytes():
    _, m1, a = _run()
    _, m2, b = _run()
    _, _, c = _run(seed=6)
    assert a.messages == b.messages
    assert m1 == m2
    assert a.values != c.values


def test_readings_are_shaped_and_rounded_like_devices():
    _, manifest, sink = _run(faults=NO_FAULTS, episode_rate=0.5)
    readings = [json.loads(v) for v in sink.values]
    assert len(readings) == manifest.valid_readings == 25 * 120
    bp_forms = {BLOOD_PRESSURE in r for r in readings}
    assert bp_forms == {True, False}
    spo2_decimal = set()
    for r in readings:
        assert {EVENT_ID, PATIENT_ID, DEVICE_ID, TIMESTAMP} <= r.keys()
        if BLOOD_PRESSURE in r:
            assert SYSTOLIC not in r
            sys_, dia = (int(x) for x in r[BLOOD_PRESSURE].split("/"))
        else:
            sys_, dia = r[SYSTOLIC], r[DIASTOLIC]
        assert sys_ > dia
        for name, value in (
            (HEART_RATE, r[HEART_RATE]),
            (RESPIRATION_RATE, r[RESPIRATION_RATE]),
            (SYSTOLIC, sys_),
            (DIASTOLIC, dia),
        ):
            assert isinstance(value, int)
            lo, hi = VITALS_BY_NAME[name].possible
            assert lo <= value <= hi
        for name in (TEMPERATURE, SPO2):
            lo, hi = VITALS_BY_NAME[name].possible
            assert lo <= r[name] <= hi
            assert round(r[name], 1) == r[name]
        spo2_decimal.add(isinstance(r[SPO2], float))
    assert len({r[EVENT_ID] for r in readings}) == len(readings)
    assert spo2_decimal == {True, False}
    # One device per patient, always the same.
    devices = defaultdict(set)
    for r in readings:
        devices[r[PATIENT_ID]].add(r[DEVICE_ID])
    assert all(len(d) == 1 for d in devices.values())


def test_timestamps_carry_offsets_and_the_true_instant():
    faults = FaultRates(
        duplicate=0, malformed=0, late=0, out_of_order=0, dropout=0, local_offset_device=0.5, skewed_device=0
    )
    sim, _, sink = _run(faults=faults, duration_seconds=120)
    offsets_by_patient: dict[str, set[str]] = defaultdict(set)
    index = {p.patient_id: i for i, p in enumerate(sim.cohort)}
    for raw in sink.values:
        r = json.loads(raw)
        ts = datetime.fromisoformat(r[TIMESTAMP])
        assert ts.utcoffset() is not None
        offsets_by_patient[r[PATIENT_ID]].add(r[TIMESTAMP][-6:])
        i = index[r[PATIENT_ID]]
        assert ts.utcoffset() == timedelta(minutes=int(sim.fleet.utc_offset_min[i]))
        since_start = _instant_ms(r) - sim.start_ms - int(sim.fleet.phase_ms[i])
        assert since_start % sim.interval_ms == 0 and 0 <= since_start < 120_000
    all_offsets = set().union(*offsets_by_patient.values())
    assert "+00:00" in all_offsets and len(all_offsets) > 1
    assert all(len(o) == 1 for o in offsets_by_patient.values())  # a device keeps its offset


def test_skewed_devices_are_off_by_a_constant():
    faults = FaultRates(duplicate=0, malformed=0, late=0, out_of_order=0, dropout=0, skewed_device=0.5)
    sim, manifest, sink = _run(faults=faults, duration_seconds=60)
    index = {p.patient_id: i for i, p in enumerate(sim.cohort)}
    skewed = [p for p, i in index.items() if sim.fleet.clock_skew_ms[i] != 0]
    assert len(skewed) == manifest.skewed_devices > 0
    assert all(2_000 <= abs(int(s)) <= 90_000 for s in sim.fleet.clock_skew_ms if s)
    for pid in skewed:
        i = index[pid]
        readings = [json.loads(v) for k, v in sink.messages if k == pid]
        offsets = {
            _instant_ms(r) - (sim.start_ms + k * sim.interval_ms + int(sim.fleet.phase_ms[i]))
            for k, r in enumerate(readings)
        }
        assert offsets == {int(sim.fleet.clock_skew_ms[i])}


def test_late_and_out_of_order_readings_really_arrive_late():
    faults = FaultRates(duplicate=0.02, malformed=0, late=0.03, out_of_order=0.05, skewed_device=0, dropout=0)
    sim, manifest, sink = _run(faults=faults, patients=40)
    seen: set[bytes] = set()
    newest = -(2**62)
    late = out_of_order = late_at_the_end = 0
    for raw in sink.values:
        if raw in seen:
            continue
        seen.add(raw)
        t = _instant_ms(json.loads(raw))
        lag = newest - t
        if lag >= 25_000:  # late readings are sent >= 30 s after their time
            late += 1
        elif lag > 0:  # out-of-order ones are overtaken by 1-2 intervals
            out_of_order += 1
            # ... and so are late ones from the last 30 s: nothing newer exists to overtake them
            late_at_the_end += t >= sim.end_ms - 30_000
        newest = max(newest, t)
    assert manifest.late_sent > 20 and manifest.out_of_order_sent > 20
    assert late + out_of_order == manifest.late_sent + manifest.out_of_order_sent
    assert manifest.late_sent - late_at_the_end <= late <= manifest.late_sent


def test_dropouts_leave_gaps():
    faults = FaultRates(
        duplicate=0, malformed=0, late=0, out_of_order=0, dropout=0.01, dropout_seconds=(60, 120)
    )
    sim, manifest, sink = _run(faults=faults)
    per_patient: dict[str, list[int]] = defaultdict(list)
    for raw in sink.values:
        r = json.loads(raw)
        per_patient[r[PATIENT_ID]].append(_instant_ms(r))
    gaps = [np.diff(sorted(ts)).max() for ts in per_patient.values()]
    assert max(gaps) >= 60_000
    assert manifest.dropped_readings == 25 * sim.ticks - manifest.valid_readings > 0


def test_baselines_are_lower_on_spo2_scale_2():
    sim = Simulation(SimulationConfig(patients=400, seed=3, start=START))
    hyper = sim.baselines.hypercapnic
    spo2 = sim.baselines.column(SPO2)
    assert hyper.any() and (~hyper).any()
    assert spo2[hyper].max() < 93 <= spo2[~hyper].min()


def test_real_time_mode_sleeps_and_stamps_wall_clock():
    faults = FaultRates(late=0, out_of_order=0, duplicate=0, malformed=0, skewed_device=0, dropout=0)
    config = SimulationConfig(
        patients=3, interval_seconds=0.1, duration_seconds=0.5, fast=False, faults=faults
    )
    sink = ListSink()
    began = time.time()
    manifest = run_simulation(config, sink)
    took = time.time() - began
    assert manifest.mode == "realtime" and manifest.valid_readings == 15
    assert took >= 0.45
    for raw in sink.values:
        t = datetime.fromisoformat(json.loads(raw)[TIMESTAMP]).timestamp()
        assert began - 0.01 <= t <= time.time()


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        SimulationConfig(interval_seconds=10, duration_seconds=5)
    with pytest.raises(ValueError):
        SimulationConfig(start=datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError):
        SimulationConfig(fast=False, start=START)
    with pytest.raises(ValueError):
        SimulationConfig(seed=-1)
    with pytest.raises(ValueError):
        FaultRates(duplicate=1.5)
    sim = Simulation(SimulationConfig(patients=2, duration_seconds=10, start=START))
    sim.run(ListSink())
    with pytest.raises(RuntimeError):
        sim.run(ListSink())


def test_even_two_devices_use_both_blood_pressure_forms():
    for seed in range(30):
        fleet = make_fleet(
            2,
            rng=np.random.default_rng(seed),
            interval_ms=5000,
            local_offset_rate=0.1,
            skewed_device_rate=0.1,
            skew_seconds=(2, 90),
        )
        assert set(fleet.bp_as_string.tolist()) == {True, False}


class _StampingSink(ListSink):
    """Records when each message left, to compare with the reading's own time."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_at: list[float] = []

    def send(self, value: bytes, *, key: str) -> None:
        self.sent_at.append(time.time())
        super().send(value, key=key)


def test_real_time_readings_leave_when_measured_not_at_the_end_of_their_interval():
    # 20 monitors, one reading each per 2 s: holding a tick's readings until its end would age them by
    # 1 s on average; released as they come due, the typical age is the release step (0.25 s).
    config = SimulationConfig(
        patients=20, interval_seconds=2, duration_seconds=4, fast=False, faults=NO_FAULTS, seed=3
    )
    sink = _StampingSink()
    run_simulation(config, sink)
    ages = [
        sent - datetime.fromisoformat(json.loads(raw)[TIMESTAMP]).timestamp()
        for raw, sent in zip(sink.values, sink.sent_at, strict=True)
    ]
    assert len(ages) == 40
    assert min(ages) >= -0.01  # never before the reading was taken
    assert float(np.median(ages)) < 0.6, f"median age at send {np.median(ages):.2f} s"
