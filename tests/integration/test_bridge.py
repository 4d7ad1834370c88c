"""The Kafka → Pub/Sub bridge on the real local stack (Tansu + Pub/Sub emulator)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from harness.stack import publisher_client, subscriber_client
from harness.waiting import wait_until
from pipelines.kafka_bridge import BridgeError, KafkaToPubSubBridge
from pipelines.pubsub_clients import close_publisher
from tests.conftest import FreshTopics
from vitals_lake.config import EnvelopeLimits, KafkaSettings, PubSubSettings
from vitals_lake.envelope import ATTR_COUNT, ATTR_KIND, decode_envelope, is_heartbeat

REPO = Path(__file__).resolve().parents[2]
Coord = tuple[int, int]


def produce(kafka: KafkaSettings, n: int, partitions: int = 4) -> dict[Coord, bytes]:
    """Produce n records round-robin, some malformed; returns (partition, offset) -> value."""
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True, "acks": "all"}
    )
    produced: dict[Coord, bytes] = {}
    errors: list[Any] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            produced[(msg.partition(), msg.offset())] = msg.value()

    for i in range(n):
        if i % 97 == 5:
            value = b"\xff\xfe\x00not utf-8 " + i.to_bytes(4, "big")
        elif i % 89 == 7:
            value = b'{"event_id": "broken-' + str(i).encode() + b'", "heart_rate": '
        else:
            value = orjson.dumps(
                {"event_id": f"e-{i}", "patient_id": f"p-{i % 50}", "heart_rate": 60 + i % 40}
            )
        producer.produce(
            kafka.topic,
            value=value,
            key=f"p-{i % 50}".encode(),
            partition=i % partitions,
            on_delivery=delivered,
        )
        if i % 1000 == 999:
            producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors
    assert len(produced) == n
    return produced


def end_offsets(produced: dict[Coord, bytes]) -> dict[int, int]:
    # From the delivery reports: Tansu's high watermark gave wrong lag (docs/design.md, toolchain survey).
    ends: dict[int, int] = {}
    for p, o in produced:
        ends[p] = max(ends.get(p, 0), o + 1)
    return ends


def committed(kafka: KafkaSettings, partitions: int = 4) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": kafka.group_id})
    try:
        tps = consumer.committed([TopicPartition(kafka.topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}


def pull_all(
    pubsub: PubSubSettings, expected: int, *, timeout: float = 30.0
) -> tuple[list[tuple[Coord, bytes]], int]:
    """Pull and ack until ``expected`` records arrived and one more pull brings nothing.

    Returns every record as ((partition, offset), raw) including duplicates, and the number of heartbeats.
    """
    sub = subscriber_client(pubsub)
    rows: list[tuple[Coord, bytes]] = []
    heartbeats = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            # A short deadline: the emulator holds an empty pull open until shortly before it.
            resp = sub.pull(subscription=pubsub.subscription_path, max_messages=500, timeout=1)
            msgs = resp.received_messages
            if not msgs and len(rows) >= expected:
                break
            for m in msgs:
                attrs = dict(m.message.attributes)
                if is_heartbeat(attrs):
                    heartbeats += 1
                    continue
                table = decode_envelope(m.message.data)
                assert table.num_rows == int(attrs[ATTR_COUNT])
                coords = zip(
                    table.column("kafka_partition").to_pylist(),
                    table.column("kafka_offset").to_pylist(),
                    strict=True,
                )
                rows += list(zip(coords, table.column("raw").to_pylist(), strict=True))
            if msgs:
                sub.acknowledge(subscription=pubsub.subscription_path, ack_ids=[m.ack_id for m in msgs])
    finally:
        sub.close()
    return rows, heartbeats


def test_bridge_delivers_every_record_exactly_once(fresh_topics: FreshTopics) -> None:
    produced = produce(fresh_topics.kafka, 5000)
    limits = EnvelopeLimits(max_records=500, linger_seconds=0.25)
    bridge = KafkaToPubSubBridge(fresh_topics.kafka, fresh_topics.pubsub, limits=limits)
    stats = bridge.run(max_idle_seconds=1.5)

    assert stats.records_consumed == stats.records_published == 5000
    assert stats.publish_failures == 0
    assert stats.envelopes >= 10
    rows, heartbeats = pull_all(fresh_topics.pubsub, 5000)
    counts = Counter(coord for coord, _ in rows)
    assert not [c for c, k in counts.items() if k > 1], "duplicates on a clean run"
    assert (
        dict(rows) == produced
    )  # every (partition, offset), bytes identical (non-UTF-8 and broken JSON too)
    assert heartbeats == stats.heartbeats >= 1  # the idle second before exiting
    ends = end_offsets(produced)
    assert committed(fresh_topics.kafka) == ends
    assert stats.committed_offsets == ends


class FailingPublisher:
    """A real publisher that fails every readings envelope after the first ``ok`` ones."""

    def __init__(self, pubsub: PubSubSettings, ok: int) -> None:
        self.client = publisher_client(pubsub)
        self.ok = ok
        self.readings = 0

    def publish(self, topic: str, data: bytes, **attrs: str) -> Future[str]:
        if attrs.get(ATTR_KIND) == "readings":
            self.readings += 1
            if self.readings > self.ok:
                fut: Future[str] = Future()
                fut.set_exception(RuntimeError("injected publish failure"))
                return fut
        result: Future[str] = self.client.publish(topic, data, **attrs)
        return result


def test_publish_failure_then_restart_loses_nothing(fresh_topics: FreshTopics) -> None:
    kafka, pubsub = fresh_topics.kafka, fresh_topics.pubsub
    produced = produce(kafka, 3000)
    ends = end_offsets(produced)
    limits = EnvelopeLimits(max_records=200, linger_seconds=0.05)

    failing = FailingPublisher(pubsub, ok=4)
    try:
        with pytest.raises(BridgeError, match="injected publish failure") as info:
            KafkaToPubSubBridge(kafka, pubsub, limits=limits, publisher=failing).run(max_idle_seconds=10)
    finally:
        close_publisher(failing.client)
    first = info.value.stats
    assert first.publish_failures >= 1
    assert first.records_published <= 4 * 200

    after_failure = committed(kafka)
    first_rows, _ = pull_all(pubsub, first.records_published)
    on_pubsub = {coord for coord, _ in first_rows}
    assert len(on_pubsub) == first.records_published
    for p, pos in after_failure.items():
        missing = [o for o in range(pos) if (p, o) not in on_pubsub]
        assert not missing, f"partition {p} committed {pos} past unpublished offsets {missing[:5]}"
    assert sum(after_failure.values()) < 3000  # the failure stopped commits short of the end

    second = KafkaToPubSubBridge(kafka, pubsub, limits=limits).run(max_idle_seconds=1.5)
    # The restart resumes exactly at the committed offsets.
    assert second.records_consumed == 3000 - sum(after_failure.values())
    second_rows, _ = pull_all(pubsub, second.records_published)
    all_rows = first_rows + second_rows
    assert dict(all_rows) == produced  # nothing lost, bytes identical
    duplicates = len(all_rows) - len(produced)
    assert 0 <= duplicates <= first.records_published  # only records already published before the failure
    assert committed(kafka) == ends


def test_cli_sigterm_drains_and_writes_stats(fresh_topics: FreshTopics, tmp_path: Path) -> None:
    kafka, pubsub = fresh_topics.kafka, fresh_topics.pubsub
    produced = produce(kafka, 2000)
    stats_file = tmp_path / "stats.json"
    log_path = tmp_path / "bridge.log"
    argv = [
        sys.executable,
        "-m",
        "pipelines.kafka_bridge",
        "--bootstrap",
        kafka.bootstrap_servers,
        "--topic",
        kafka.topic,
        "--group",
        kafka.group_id,
        "--project",
        pubsub.project,
        "--pubsub-topic",
        pubsub.topic,
        "--emulator-host",
        str(pubsub.emulator_host),
        "--linger",
        "120",  # everything stays buffered until the SIGTERM: only a graceful drain publishes it
        "--max-records",
        "100000",
        "--stats-file",
        str(stats_file),
        "--progress-seconds",
        "0.2",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def all_consumed_none_published() -> bool:
            assert proc.poll() is None, log_path.read_text()
            return "consumed=2000 published=0" in log_path.read_text()

        try:
            wait_until(all_consumed_none_published, timeout=30, what="2000 records consumed, none published")
        except TimeoutError:
            print(log_path.read_text())  # the bridge's log, shown with the failure
            raise
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stats = json.loads(stats_file.read_text())
    ends = end_offsets(produced)
    assert stats["records_consumed"] == stats["records_published"] == 2000
    assert stats["publish_failures"] == 0
    assert stats["committed_offsets"] == {str(p): o for p, o in ends.items()}
    assert committed(kafka) == ends
    rows, _ = pull_all(pubsub, 2000)
    assert dict(rows) == produced and len(rows) == 2000
