"""Episodes: labels cover every type and the labelled readings really deviate from the patient's norm."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import pytest

from simulator import (
    LABELS_FILE,
    EpisodeType,
    FaultRates,
    ListSink,
    Simulation,
    SimulationConfig,
    read_labels,
)
from vitals_lake.contract import (
    BLOOD_PRESSURE,
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


@pytest.fixture(scope="module")
def episode_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("episodes")
    # Skewed clocks and local offsets on purpose: labels must line up with what readings carry.
    faults = FaultRates(
        duplicate=0,
        malformed=0,
        late=0,
        out_of_order=0,
        dropout=0,
        skewed_device=0.3,
        local_offset_device=0.3,
    )
    config = SimulationConfig(
        patients=60, duration_seconds=3600, seed=21, start=START, episode_rate=1.0, faults=faults, out_dir=out
    )
    sim = Simulation(config)
    sink = ListSink()
    manifest = sim.run(sink)
    series: dict[str, list[tuple[datetime, dict]]] = defaultdict(list)
    for raw in sink.values:
        r = json.loads(raw)
        if BLOOD_PRESSURE in r:
            r[SYSTOLIC] = int(r[BLOOD_PRESSURE].split("/")[0])
        series[r[PATIENT_ID]].append((datetime.fromisoformat(r[TIMESTAMP]), r))
    return manifest, read_labels(out / LABELS_FILE), series


def test_labels_cover_every_type(episode_run):
    manifest, labels, _ = episode_run
    assert {e.type for e in labels} == set(EpisodeType)
    assert len(labels) == manifest.episodes == 60
    assert sum(manifest.episodes_by_type.values()) == 60
    for e in labels:
        assert e.start.utcoffset().total_seconds() == 0 and e.start < e.end


def _inside(series, label):
    return [r for t, r in series if label.start <= t < label.end]


def _outside(series, label):
    return [r for t, r in series if not label.start <= t < label.end]


def _deviation(label, inside, outside) -> bool:
    def peak(vital, fn):
        return fn([r[vital] for r in inside])

    def norm(vital):
        return float(np.median([r[vital] for r in outside]))

    kind = label.type
    if kind is EpisodeType.TACHYCARDIA:
        return peak(HEART_RATE, max) >= max(norm(HEART_RATE) + 25, 110)
    if kind is EpisodeType.BRADYCARDIA:
        return peak(HEART_RATE, min) <= min(norm(HEART_RATE) - 8, 50)
    if kind is EpisodeType.DESATURATION:
        return peak(SPO2, min) <= norm(SPO2) - 4
    if kind is EpisodeType.FEVER:
        return peak(TEMPERATURE, max) >= max(norm(TEMPERATURE) + 1.2, 38.0)
    if kind is EpisodeType.HYPOTENSION:
        return peak(SYSTOLIC, min) <= min(norm(SYSTOLIC) - 15, 95)
    if kind is EpisodeType.SEPSIS:
        return (
            peak(HEART_RATE, max) >= norm(HEART_RATE) + 20
            and peak(TEMPERATURE, max) >= norm(TEMPERATURE) + 1.0
            and peak(SYSTOLIC, min) <= norm(SYSTOLIC) - 15
            and peak(RESPIRATION_RATE, max) >= norm(RESPIRATION_RATE) + 5
            and peak(SPO2, min) <= norm(SPO2) - 2
        )
    assert kind is EpisodeType.SENSOR_ARTIFACT
    return peak(HEART_RATE, max) >= 170 or peak(SPO2, min) <= 72


def test_labelled_readings_deviate_from_the_patients_norm(episode_run):
    _, labels, series = episode_run
    for label in labels:
        inside = _inside(series[label.patient_id], label)
        outside = _outside(series[label.patient_id], label)
        assert inside, label
        assert _deviation(label, inside, outside), label


def test_the_same_windows_elsewhere_do_not_deviate(episode_run):
    # Control: each label's window applied to another patient's quiet readings must not fire.
    _, labels, series = episode_run
    by_patient = {e.patient_id: e for e in labels}
    patients = sorted(series)
    false_hits = 0
    checked = 0
    for label in labels:
        other = patients[(patients.index(label.patient_id) + 7) % len(patients)]
        own = by_patient[other]
        quiet = [(t, r) for t, r in series[other] if not own.start <= t < own.end]
        inside = _inside(quiet, label)
        if not inside:
            continue
        checked += 1
        false_hits += _deviation(label, inside, [r for _, r in quiet])
    assert checked > 30
    assert false_hits <= 1


def test_episode_readings_stay_physiologically_possible(episode_run):
    _, _, series = episode_run
    for readings in series.values():
        for _, r in readings:
            for vital in (HEART_RATE, TEMPERATURE, SPO2, RESPIRATION_RATE, SYSTOLIC):
                lo, hi = VITALS_BY_NAME[vital].possible
                assert lo <= r[vital] <= hi
