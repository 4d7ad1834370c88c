from __future__ import annotations

import random
from datetime import timedelta

import pytest

from tests.factories import raw, reading, silver_rows
from vitals_lake import contract as c
from vitals_lake.summaries import gold_from_silver, hours_from_minutes, window_partials


def rows_of(docs):
    return silver_rows([raw(d) for d in docs])


def test_partials_by_hand():
    docs = [reading(i, heart_rate=hr) for i, hr in enumerate([60, 80, 100])]  # 0, 5, 10 s
    docs.append(reading(3, spo2=None, heart_rate=70))  # spo2 missing on the last reading
    p = window_partials(rows_of(docs), window_seconds=60).to_pylist()
    assert len(p) == 1
    p = p[0]
    assert p[c.READING_COUNT] == 4
    assert p[c.gold_column(c.HEART_RATE, "min")] == 60 and p[c.gold_column(c.HEART_RATE, "max")] == 100
    assert p[c.gold_column(c.HEART_RATE, "last")] == 70
    assert p[c.gold_column(c.SPO2, "count")] == 3
    row = gold_from_silver(rows_of(docs), window_seconds=60, updated_at_us=0).to_pylist()[0]
    assert row[c.gold_column(c.HEART_RATE, "mean")] == pytest.approx(77.5)
    assert row[c.gold_column(c.SPO2, "mean")] == pytest.approx(p[c.gold_column(c.SPO2, "sum")] / 3)
    assert row[c.READING_COUNT] == 4 and row[c.WINDOW_SECONDS] == 60
    assert row[c.WINDOW_END] - row[c.WINDOW_START] == timedelta(seconds=60)
    assert row[c.EVENT_DATE] == row[c.WINDOW_START].date()


def test_gold_means_are_null_where_nothing_was_counted_and_counts_zero():
    docs = [reading(i, spo2=None) for i in range(3)]  # no SpO2 at all, nothing scored by a model
    row = gold_from_silver(rows_of(docs), window_seconds=60, updated_at_us=0).to_pylist()[0]
    assert row[c.gold_column(c.SPO2, "count")] == 0
    assert row[c.gold_column(c.SPO2, "mean")] is None
    assert row[c.gold_column(c.ANOMALY_SCORE, "mean")] is None
    assert row[c.SCORED_READINGS] == 0 and row[c.ALERT_READINGS] == 0
    assert row[c.RISK_LEVEL] in c.NEWS2_RESPONSES


def test_windows_split_on_the_minute():
    docs = [reading(i) for i in range(24)]  # 0..115 s -> two 1-minute windows of 12
    p = window_partials(rows_of(docs), window_seconds=60)
    assert sorted(p[c.READING_COUNT].to_pylist()) == [12, 12]


def test_hours_from_minutes_equal_hours_straight_from_silver():
    rng = random.Random(3)
    docs = [
        reading(
            i,
            patient=f"P{p}",
            heart_rate=rng.randint(40, 160),
            spo2=float(rng.randint(85, 100)),
            temperature=round(rng.uniform(35.0, 39.5), 1),
        )
        for p in range(3)
        for i in range(0, 900, 7)  # every 35 s for 75 minutes: two hours touched
    ]
    silver = rows_of(docs)
    minutes = gold_from_silver(silver, window_seconds=60, updated_at_us=0)
    via_minutes = hours_from_minutes(minutes, updated_at_us=0)
    direct = gold_from_silver(silver, window_seconds=3600, updated_at_us=0)
    key = [(c.PATIENT_KEY, "ascending"), (c.WINDOW_START, "ascending")]
    a, b = via_minutes.sort_by(key).to_pylist(), direct.sort_by(key).to_pylist()
    assert len(a) == len(b) == 6
    for x, y in zip(a, b, strict=True):
        for name, value in y.items():
            if isinstance(value, float):
                assert x[name] == pytest.approx(value), name
            else:
                assert x[name] == value, name
