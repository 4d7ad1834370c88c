"""Sinks: JSONL round trip, Pub/Sub envelopes, Kafka delivery accounting (fake clients, no network)."""

from __future__ import annotations

import os
from concurrent.futures import Future
from datetime import UTC, datetime

import pytest

from simulator import (
    FaultRates,
    JsonlSink,
    KafkaSink,
    ListSink,
    PubSubSink,
    SimulationConfig,
    SinkError,
    read_jsonl,
    run_simulation,
)
from simulator.sinks import kafka_producer_config
from vitals_lake.config import KafkaSettings, PubSubSettings
from vitals_lake.contract import RAW
from vitals_lake.envelope import ATTR_COUNT, ATTR_SOURCE, decode_envelope

START = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
MESSY = FaultRates(malformed=0.3, duplicate=0.05)


def test_jsonl_round_trip_is_byte_exact(tmp_path):
    config = SimulationConfig(patients=20, duration_seconds=120, seed=2, start=START, faults=MESSY)
    expected = ListSink()
    run_simulation(config, expected)
    path = tmp_path / "r.jsonl"
    with JsonlSink(path) as sink:
        run_simulation(config, sink)
    back = read_jsonl(path)
    assert back == expected.values
    assert any(b"\xb5" in v for v in back)  # the non-UTF-8 record survived unchanged


def test_jsonl_refuses_a_raw_newline(tmp_path):
    with JsonlSink(tmp_path / "r.jsonl") as sink:
        sink.send(b"{}", key="P000001")
        with pytest.raises(ValueError):
            sink.send(b'{"a":\n1}', key="P000001")
    assert read_jsonl(tmp_path / "r.jsonl") == [b"{}"]


class FakePublisher:
    def __init__(self, fail: bool = False) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.fail = fail

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future:
        self.published.append((topic, data, attributes))
        future: Future = Future()
        if self.fail:
            future.set_exception(RuntimeError("publish failed"))
        else:
            future.set_result(str(len(self.published)))
        return future


def test_pubsub_sink_packs_envelopes_of_at_most_500():
    config = SimulationConfig(patients=130, duration_seconds=60, seed=2, start=START, faults=MESSY)
    expected = ListSink()
    run_simulation(config, expected)
    settings = PubSubSettings(project="vitals-lake-local", topic="patient-vitals")
    publisher = FakePublisher()
    with PubSubSink(settings, publisher=publisher) as sink:
        run_simulation(config, sink)
    sizes = [int(attrs[ATTR_COUNT]) for _, _, attrs in publisher.published]
    assert max(sizes) == 500 and len(sizes) == -(-len(expected.values) // 500)
    assert {topic for topic, _, _ in publisher.published} == {settings.topic_path}
    assert {attrs[ATTR_SOURCE] for _, _, attrs in publisher.published} == {"simulator"}
    raw = [v for _, data, _ in publisher.published for v in decode_envelope(data).column(RAW).to_pylist()]
    assert raw == expected.values
    assert sink.published_messages == len(sizes)


def test_pubsub_sink_raises_when_a_publish_fails():
    sink = PubSubSink(PubSubSettings(), publisher=FakePublisher(fail=True), max_records=2)
    for i in range(3):
        sink.send(b"{}", key=f"P{i:06d}")
    with pytest.raises(SinkError, match="2 envelope"):
        sink.flush()


def test_pubsub_sink_points_the_client_at_the_emulator(monkeypatch):
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    sink = PubSubSink(PubSubSettings(emulator_host="127.0.0.1:8599"))
    assert os.environ["PUBSUB_EMULATOR_HOST"] == "127.0.0.1:8599"
    sink.close()  # nothing queued: no network needed


class FakeProducer:
    """Mimics confluent_kafka.Producer: deliveries are reported on poll/flush."""

    def __init__(self, fail_every: int = 0, full_once: bool = False) -> None:
        self.pending: list[tuple] = []
        self.produced: list[tuple[str, bytes, bytes]] = []
        self.fail_every = fail_every
        self.full_once = full_once

    def produce(self, topic, value, key, on_delivery):
        if self.full_once:
            self.full_once = False
            raise BufferError("queue full")
        self.produced.append((topic, key, value))
        self.pending.append(on_delivery)

    def poll(self, timeout):
        for i, callback in enumerate(self.pending, start=len(self.produced) - len(self.pending) + 1):
            err = "broker down" if self.fail_every and i % self.fail_every == 0 else None
            callback(err, None)
        self.pending = []
        return 0

    def flush(self, timeout):
        self.poll(timeout)
        return 0


def test_kafka_sink_keys_by_patient_and_counts_deliveries():
    producer = FakeProducer(full_once=True)
    sink = KafkaSink(KafkaSettings(topic="patient-vitals"), producer=producer)
    sink.send(b'{"a":1}', key="P000007")
    sink.send(b'{"a":2}', key="P000008")
    sink.close()
    assert producer.produced == [
        ("patient-vitals", b"P000007", b'{"a":1}'),
        ("patient-vitals", b"P000008", b'{"a":2}'),
    ]
    assert sink.delivered == 2 and not sink.errors


def test_kafka_sink_raises_on_delivery_errors():
    sink = KafkaSink(KafkaSettings(), producer=FakeProducer(fail_every=3))
    for i in range(7):
        sink.send(b"{}", key=f"P{i:06d}")
    with pytest.raises(SinkError, match="2 delivery error"):
        sink.flush()
    assert sink.delivered == 5


def test_kafka_producer_config_is_idempotent_and_acks_all():
    config = kafka_producer_config(KafkaSettings(bootstrap_servers="broker:9092"), linger_ms=7)
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["bootstrap.servers"] == "broker:9092" and config["linger.ms"] == 7


def test_kafka_sink_with_a_real_producer_flushes_nothing_quickly():
    sink = KafkaSink(KafkaSettings(bootstrap_servers="127.0.0.1:1"), flush_timeout=0.1)
    sink.close()  # nothing queued, so no broker is needed
    assert sink.delivered == 0 and not sink.errors
