"""The pipeline's alert stream: events in the lake's alerts table and on the alerts topic, the same."""

from __future__ import annotations

import uuid
from datetime import timedelta

import orjson
import pytest

from harness.stack import subscriber_client
from pipelines.beam_vitals import run
from tests.factories import T0, ids_by_key, raw, reading
from vitals_lake import contract as c
from vitals_lake.config import ConfigError, LocalLake
from vitals_lake.lake import Lake

SICK = {c.HEART_RATE: 135, c.RESPIRATION_RATE: 28, c.SPO2: 90, c.BLOOD_PRESSURE: "88/50", c.TEMPERATURE: 39.4}
WELL = {c.HEART_RATE: 72, c.RESPIRATION_RATE: 16, c.SPO2: 97, c.BLOOD_PRESSURE: "120/80", c.TEMPERATURE: 36.8}


def test_alert_events_land_in_the_lake_and_on_the_alerts_topic(local_stack, tmp_path, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", local_stack.emulator.host_port)  # as the demo's env does
    suffix = uuid.uuid4().hex[:8]
    topic = local_stack.create_pubsub_topic(f"alerts-{suffix}", subscriptions=(f"alerts-{suffix}-sub",))
    # Two patients deteriorate for four minutes and recover; one stays well.
    lines = []
    for minute in range(10):
        for patient, sick in (("P000001", minute < 4), ("P000002", 2 <= minute < 6), ("P000003", False)):
            at = T0 + timedelta(minutes=minute)
            lines.append(raw(reading(minute, patient=patient, at=at, **(SICK if sick else WELL))))
    readings = tmp_path / "readings.jsonl"
    readings.write_bytes(b"\n".join(lines) + b"\n")
    run(
        ["--input-jsonl", str(readings), "--lake", str(tmp_path / "lake"),
         "--alerts-topic", f"projects/{topic.project}/topics/{topic.topic}"]
    )  # fmt: skip

    lake = Lake(LocalLake(root=tmp_path / "lake"))
    alerts = lake.read("alerts")
    assert c.PATIENT_ID not in alerts.column_names  # the alerts name the patient by key only
    patient_of = ids_by_key(lake)
    by_patient = {}
    for e in alerts.to_pylist():
        by_patient.setdefault(patient_of[e[c.PATIENT_KEY]], []).append(e[c.ALERT_STATE])
    assert by_patient == {"P000001": ["opened", "resolved"], "P000002": ["opened", "resolved"]}

    sub = subscriber_client(topic)
    messages = []
    for _ in range(20):
        resp = sub.pull(subscription=topic.subscription_path, max_messages=100, timeout=2)
        messages += resp.received_messages
        if len(messages) >= alerts.num_rows:
            break
    published = {
        (orjson.loads(m.message.data)[c.ALERT_ID], m.message.attributes[c.ALERT_STATE]) for m in messages
    }
    assert published == {(e[c.ALERT_ID], e[c.ALERT_STATE]) for e in alerts.to_pylist()}
    assert all(m.message.attributes[c.SEVERITY] == "high" for m in messages)
    # Minimum necessary: neither the lake's alerts nor the published events carry the hospital id.
    for m in messages:
        event = orjson.loads(m.message.data)
        assert c.PATIENT_ID not in event and event[c.PATIENT_KEY]
        assert not any(patient.encode() in m.message.data for patient in ("P000001", "P000002"))


def test_the_alerts_topic_is_validated_at_the_edge(tmp_path):
    with pytest.raises(ConfigError, match="alerts-topic"):
        run(["--input-jsonl", "x.jsonl", "--lake", str(tmp_path), "--alerts-topic", "vitals-alerts"])
