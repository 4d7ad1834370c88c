from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

from tests.factories import T0
from vitals_lake import contract as c
from vitals_lake.trends import diagnosis_hourly, rolling_means


def gold_rows(rows: list[dict]) -> pa.Table:
    """Gold rows with only the columns the trends read; the rest null."""
    full = []
    for r in rows:
        base = {f.name: None for f in c.GOLD_SCHEMA}
        base.update(
            {
                c.WINDOW_SECONDS: 60,
                c.READING_COUNT: 1,
                c.EVENT_DATE: T0.date(),
                c.KNOWN_PATIENT: False,
                c.PATIENT_KEY: f"k-{r.get(c.PATIENT_ID)}",
                c.WINDOW_END: T0,
                c.LAST_READING_TIME: T0,
                c.UPDATED_AT: T0,
            }
        )
        base.update(r)
        full.append(base)
    return pa.Table.from_pylist(full, schema=c.GOLD_SCHEMA)


HR_MEAN, HR_N = c.gold_column(c.HEART_RATE, "mean"), c.gold_column(c.HEART_RATE, "count")


def test_rolling_mean_over_the_trailing_fifteen_minutes():
    minutes = [m for m in range(21) if m != 3]  # minute 3 has no readings
    rows = gold_rows(
        [
            {c.PATIENT_ID: "P1", c.WINDOW_START: T0 + timedelta(minutes=m), HR_MEAN: float(m), HR_N: 1}
            for m in minutes
        ]
    )
    out = {r[c.WINDOW_START]: r for r in rolling_means(rows, updated_at_us=0).to_pylist()}
    last = out[T0 + timedelta(minutes=20)]
    assert last[c.READING_COUNT] == 15 and last[c.rolling_column(c.HEART_RATE)] == pytest.approx(13.0)
    at4 = out[T0 + timedelta(minutes=4)]
    assert at4[c.READING_COUNT] == 4  # minutes 0, 1, 2, 4
    assert at4[c.rolling_column(c.HEART_RATE)] == pytest.approx((0 + 1 + 2 + 4) / 4)


def test_rolling_means_are_weighted_by_readings_and_kept_per_patient():
    rows = gold_rows(
        [
            {c.PATIENT_ID: "P1", c.WINDOW_START: T0, HR_MEAN: 60.0, HR_N: 3, c.READING_COUNT: 3},
            {c.PATIENT_ID: "P1", c.WINDOW_START: T0 + timedelta(minutes=1), HR_MEAN: 100.0, HR_N: 1},
            {c.PATIENT_ID: "P2", c.WINDOW_START: T0 + timedelta(minutes=1), HR_MEAN: 200.0, HR_N: 1},
        ]
    )
    out = {(r[c.PATIENT_KEY], r[c.WINDOW_START]): r for r in rolling_means(rows, updated_at_us=0).to_pylist()}
    assert out[("k-P1", T0 + timedelta(minutes=1))][c.rolling_column(c.HEART_RATE)] == pytest.approx(70.0)
    assert out[("k-P2", T0 + timedelta(minutes=1))][c.rolling_column(c.HEART_RATE)] == pytest.approx(200.0)
    assert c.PATIENT_ID not in out[("k-P1", T0)]  # trends name the patient by key only


def test_diagnosis_hourly_groups_patients_and_weights_means():
    hour = {c.WINDOW_SECONDS: 3600, c.WINDOW_START: T0}
    rows = gold_rows(
        [
            {
                **hour,
                c.PATIENT_ID: "P1",
                c.DIAGNOSIS_CODE: "J44.1",
                HR_MEAN: 80.0,
                HR_N: 10,
                c.READING_COUNT: 10,
                c.RISK_LEVEL: "high",
                c.gold_column(c.NEWS2_SCORE, "max"): 7,
            },
            {
                **hour,
                c.PATIENT_ID: "P2",
                c.DIAGNOSIS_CODE: "J44.1",
                HR_MEAN: 100.0,
                HR_N: 30,
                c.READING_COUNT: 30,
                c.RISK_LEVEL: "low",
                c.gold_column(c.NEWS2_SCORE, "max"): 2,
            },
            {**hour, c.PATIENT_ID: "P3", c.DIAGNOSIS_CODE: None, HR_MEAN: 70.0, HR_N: 5, c.READING_COUNT: 5},
        ]
    )
    out = {r[c.DIAGNOSIS_CODE]: r for r in diagnosis_hourly(rows, updated_at_us=0).to_pylist()}
    copd = out["J44.1"]
    assert (copd[c.PATIENTS_COUNT], copd[c.READING_COUNT], copd[c.HIGH_RISK_PATIENTS]) == (2, 40, 1)
    assert copd[HR_MEAN] == pytest.approx(95.0)  # (80*10 + 100*30) / 40
    assert copd[c.gold_column(c.NEWS2_SCORE, "max")] == 7
    assert out[c.UNKNOWN_DIAGNOSIS][c.PATIENTS_COUNT] == 1
