"""Alert events: rows from the rule's state changes, JSON that validates against the generated schema."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import jsonschema
import numpy as np
import orjson

from tests.factories import T0, TEST_KEY, raw, reading, silver_rows
from vitals_lake import alert_events as ae
from vitals_lake import contract as c
from vitals_lake.alerting import AlertRule, AlertTracker
from vitals_lake.model.serving import StreamScorer
from vitals_lake.pseudonym import DEVELOPMENT_KEY, _digest

SICK = {c.HEART_RATE: 135, c.RESPIRATION_RATE: 28, c.SPO2: 90, c.BLOOD_PRESSURE: "88/50", c.TEMPERATURE: 39.4}
WELL = {c.HEART_RATE: 72, c.RESPIRATION_RATE: 16, c.SPO2: 97, c.BLOOD_PRESSURE: "120/80", c.TEMPERATURE: 36.8}
WORSE = {**SICK, c.SPO2: 84, c.RESPIRATION_RATE: 32, c.BLOOD_PRESSURE: "80/45", c.CONSCIOUSNESS: "V"}


def course(*minutes: dict) -> list[bytes]:
    return [
        raw(reading(i, patient="P000777", at=T0 + timedelta(minutes=i), **m)) for i, m in enumerate(minutes)
    ]


def test_a_deterioration_gives_opened_then_resolved_with_one_alert_id():
    silver, events = StreamScorer(None).score_with_events(
        silver_rows(course(SICK, SICK, SICK, WELL, WELL, WELL))
    )
    assert events.column(c.ALERT_STATE).to_pylist() == ["opened", "resolved"]
    ids = set(events[c.ALERT_ID].to_pylist())
    assert len(ids) == 1 and ids == {
        ae.alert_id(silver[c.PATIENT_KEY][0].as_py(), int((T0 + timedelta(minutes=1)).timestamp() * 1e6))
    }
    opened, resolved = events.to_pylist()
    assert opened[c.SEVERITY] == "high" and opened[c.ALERT_REASONS] == ["news2_emergency"]
    assert opened[c.WINDOW_START] == T0 and opened[c.EVENT_TIME] == T0 + timedelta(minutes=1)  # held 60 s
    assert resolved[c.ALERT_REASONS] == [] and resolved[c.WINDOW_START] == T0 + timedelta(minutes=1)
    assert resolved[c.EVENT_TIME] == T0 + timedelta(minutes=5)  # absent for the 120 s clear time
    assert opened[c.HEART_RATE] == 135 and opened[c.PATIENT_KEY] == silver[c.PATIENT_KEY][0].as_py()
    # What triggered it, for the clinician: the NEWS2 sub-scores and the simple flags.
    assert opened[c.news2_subscore_column(c.HEART_RATE)] == 3  # >= 131 /min
    assert {"tachycardia", "fever"} <= set(opened[c.ALERT_FLAGS_RAISED])
    assert resolved[c.ALERT_FLAGS_RAISED] == []


def test_an_alert_at_the_top_severity_does_not_escalate_and_severity_ranks_follow_news2():
    _, events = StreamScorer(None).score_with_events(silver_rows(course(SICK, SICK, WORSE, WORSE)))
    assert events[c.ALERT_STATE].to_pylist() == ["opened"]  # SICK is already "high": nothing higher
    ranks = ae.severity_ranks(silver_rows(course(WELL, SICK)), np.array([0, 0]))
    assert ranks.tolist() == [0, 3]
    model_only = ae.severity_ranks(silver_rows(course(WELL)), np.array([1]))  # the model flagged a "low"
    assert model_only.tolist() == [c.NEWS2_RESPONSES.index("medium")]


def test_events_serialise_to_json_the_generated_schema_accepts(tmp_path):
    _, events = StreamScorer(None).score_with_events(silver_rows(course(SICK, SICK, SICK, WELL, WELL, WELL)))
    schema = ae.json_schema()
    for body in ae.to_json(events):
        event = orjson.loads(body)
        jsonschema.validate(event, schema)
        assert event[c.EVENT_TIME].endswith("Z") and ae.attributes(event)[c.ALERT_STATE] in c.ALERT_STATES
    bad = {**orjson.loads(ae.to_json(events)[0]), c.SEVERITY: "catastrophic"}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("an unknown severity must not validate")


def test_the_function_ships_the_current_schema():
    assert ae.SCHEMA_PATH.read_text() == ae.schema_text(), "python -m vitals_lake.alert_events --write-schema"
    assert json.loads(ae.SCHEMA_PATH.read_text())["required"][0] == c.ALERT_ID


def test_a_model_alert_escalates_when_news2_reaches_the_emergency_level():
    silver = silver_rows(course(WELL, WELL, WELL, SICK, SICK))
    reasons = np.array([1, 1, 1, 3, 3], dtype=np.int8)  # the model flags all five; NEWS2 joins at 3
    tracker = AlertTracker(AlertRule())
    decisions = tracker.update(
        patient_ids=np.array(silver[c.PATIENT_KEY].to_pylist(), dtype=object),
        seconds=np.arange(5) * 60.0 + T0.timestamp(),
        condition=reasons > 0,
        severity=ae.severity_ranks(silver, reasons),
    )
    events = ae.alert_events(silver, decisions, reasons).to_pylist()
    assert [(e[c.ALERT_STATE], e[c.SEVERITY]) for e in events] == [
        ("opened", "medium"),
        ("escalated", "high"),
    ]
    assert events[1][c.ALERT_REASONS] == ["model", "news2_emergency"]
    assert events[0][c.ALERT_ID] == events[1][c.ALERT_ID]


def test_an_alert_id_and_its_time_do_not_reveal_the_patient():
    """From an alert e-mail (alert id + opening time) an attacker enumerates every patient id with a
    plain hash, and with the public development key: no match. Only the deployment's key finds it."""
    _, events = StreamScorer(None).score_with_events(silver_rows(course(SICK, SICK, SICK)))
    opened = events.to_pylist()[0]
    seen_id = opened[c.ALERT_ID]
    opened_us = int(opened[c.EVENT_TIME].timestamp() * 1e6)  # the e-mail shows when it opened
    candidates = [f"P{i:06d}" for i in range(1, 1000)]
    plain = {hashlib.sha256(f"{p}|{opened_us}".encode()).hexdigest()[:24] for p in candidates}
    with_public_key = {ae.alert_id(_digest(DEVELOPMENT_KEY, p), opened_us) for p in candidates}
    with_deployment_key = {ae.alert_id(_digest(TEST_KEY, p), opened_us) for p in candidates}
    assert seen_id not in plain and seen_id not in with_public_key
    assert seen_id in with_deployment_key  # the enumeration itself works: the key is what stops it
