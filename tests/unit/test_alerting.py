"""The combined alert rule: persistence, clear time, cooldown, arms, and state carried across batches."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference_alerting import PerPatientAlertTracker
from vitals_lake.alerting import (
    ESCALATED,
    NO_CHANGE,
    OPENED,
    REASON_MODEL,
    REASON_NEWS2,
    REASON_RED_SUBSCORE,
    RESOLVED,
    AlertRule,
    AlertTracker,
)

RULE = AlertRule(persistence_seconds=60, clear_seconds=120, cooldown_seconds=600)


def run(condition: list[int], *, rule: AlertRule = RULE, step: float = 60.0, patient: str = "A"):
    n = len(condition)
    return AlertTracker(rule).update(
        patient_ids=np.array([patient] * n), seconds=np.arange(n) * step, condition=np.array(condition, bool)
    )


def test_a_one_reading_spike_never_opens_a_sustained_condition_opens_once():
    d = run([0, 1, 0, 0, 1, 1, 1, 1, 0])
    assert d.opened.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert d.open.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]  # one absent reading does not close it


def test_an_alert_closes_after_the_clear_time_and_cooldown_blocks_reopening():
    #            0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17 18 19
    d = run([1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    assert d.opened.nonzero()[0].tolist() == [1, 18]  # 5-6 within the 600 s cooldown of the close at 4
    assert not d.open[4] and d.open[3]  # closed once absent for 120 s (readings 2..4)


def test_persistence_is_time_not_rows():
    assert not run([1, 1, 1], step=20.0).opened.any()  # 40 s of condition < 60 s
    assert run([1, 1, 1, 1], step=20.0).opened.tolist() == [0, 0, 0, 1]
    assert run([1], rule=AlertRule(persistence_seconds=0)).opened.tolist() == [1]


def test_state_carries_across_batches_and_patients_do_not_mix():
    tracker = AlertTracker(RULE)
    first = tracker.update(
        patient_ids=np.array(["A", "B"]), seconds=np.array([0.0, 0.0]), condition=np.array([True, False])
    )
    assert not first.opened.any()
    second = tracker.update(
        patient_ids=np.array(["B", "A"]), seconds=np.array([60.0, 60.0]), condition=np.array([True, True])
    )
    assert second.opened.tolist() == [False, True]  # A's run began in the previous batch


def test_rows_in_any_order_are_taken_in_time_order_and_old_readings_change_nothing():
    tracker = AlertTracker(RULE)
    d = tracker.update(
        patient_ids=np.array(["A"] * 3),
        seconds=np.array([120.0, 0.0, 60.0]),
        condition=np.array([1, 1, 1], bool),
    )
    assert d.opened.tolist() == [False, False, True]
    late = tracker.update(patient_ids=np.array(["A"]), seconds=np.array([30.0]), condition=np.array([False]))
    assert late.open.tolist() == [True]
    assert tracker.patient("A").run_start == 0.0  # the late absent reading did not break the run


def test_reasons_combine_the_arms_and_missing_values_count_as_absent():
    rule = AlertRule(red_subscore=True)
    reasons = rule.reasons(
        anomaly=np.array([True, False, None, False], dtype=object),
        news2=np.array([0, 7, np.nan, 3]),
        news2_max_subscore=np.array([3, 0, np.nan, 2]),
    )
    assert reasons.tolist() == [REASON_MODEL | REASON_RED_SUBSCORE, REASON_NEWS2, 0, 0]
    assert AlertRule().reasons(anomaly=np.array([False]), news2_max_subscore=np.array([3])).tolist() == [0]


@pytest.mark.parametrize(
    "bad", [{"persistence_seconds": -1}, {"clear_seconds": float("nan")}, {"news2_emergency": 0}]
)
def test_rules_are_validated_once(bad):
    with pytest.raises(ValueError, match="AlertRule"):
        AlertRule(**bad)


def test_an_alert_opens_escalates_once_per_rise_and_resolves_with_its_opening_time():
    #           0  1  2  3  4  5  6  7  8
    condition = [1, 1, 1, 1, 1, 0, 0, 0, 0]
    severity = [2, 2, 2, 3, 3, 0, 0, 0, 0]  # medium, then high from reading 3
    n = len(condition)
    d = AlertTracker(RULE).update(
        patient_ids=np.array(["A"] * n),
        seconds=np.arange(n) * 60.0,
        condition=np.array(condition, bool),
        severity=np.array(severity),
    )
    assert d.transition.tolist() == [NO_CHANGE, OPENED, NO_CHANGE, ESCALATED, NO_CHANGE, 0, 0, RESOLVED, 0]
    assert d.severity.tolist() == [-1, 2, 2, 3, 3, 3, 3, 3, -1]
    assert d.opened_at[1] == d.opened_at[3] == d.opened_at[7] == 60.0  # one alert, one identity
    assert np.isnan(d.opened_at[0]) and np.isnan(d.opened_at[8])
    assert d.run_start[1] == 0.0  # the condition began a reading before the alert opened
    assert d.open.tolist() == [0, 1, 1, 1, 1, 1, 1, 0, 0]


@pytest.mark.parametrize("seed", range(40))
def test_the_tracker_matches_the_reading_by_reading_reference(seed):
    """Random episodes over random rules, batches and patients, readings out of order and repeated,
    against the state machine stepped one reading at a time: every decision and the state after."""
    rng = np.random.default_rng(seed)
    rule = AlertRule(
        persistence_seconds=float(rng.choice([0, 20, 60])),
        clear_seconds=float(rng.choice([0, 30, 120])),
        cooldown_seconds=float(rng.choice([0, 100, 600])),
    )
    tracker, reference = AlertTracker(rule), PerPatientAlertTracker(rule)
    patients = [f"P{i}" for i in range(int(rng.integers(1, 7)))]
    clock = {p: 0.0 for p in patients}
    present = {p: False for p in patients}
    for _ in range(int(rng.integers(1, 5))):
        ids, seconds, condition = [], [], []
        for _ in range(int(rng.integers(0, 120))):
            p = str(rng.choice(patients))
            if rng.random() < 0.15:  # a run of the condition starts or ends
                present[p] = not present[p]
            late = rng.random() < 0.1  # an old reading, or one at a time already seen
            clock[p] += 0.0 if late else float(rng.choice([0, 10, 10, 10, 25]))
            ids.append(p)
            seconds.append(clock[p] - (float(rng.choice([0, 5, 40])) if late else 0.0))
            condition.append(present[p] if rng.random() < 0.9 else not present[p])
        severity = rng.integers(0, 4, len(ids)).astype(np.int8)
        args = {
            "patient_ids": np.array(ids, dtype=object),
            "seconds": np.array(seconds, dtype=np.float64),
            "condition": np.array(condition, dtype=bool),
            "severity": severity,
        }
        got, want = tracker.update(**args), reference.update(**args)
        for name in ("condition", "transition", "open", "severity", "opened_at", "run_start"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for p, state in reference.patients.items():
        mine = tracker.patient(p)
        assert mine is not None
        assert (mine.last_ts, mine.run_start, mine.is_open, mine.absent_since, mine.closed_at) == (
            state.last_ts,
            state.run_start,
            state.is_open,
            state.absent_since,
            state.closed_at,
        )
        assert mine.severity == state.severity
        np.testing.assert_array_equal(mine.opened_at, state.opened_at)
