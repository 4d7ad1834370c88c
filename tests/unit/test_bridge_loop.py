"""The bridge's loop against a scripted consumer and publisher: commits follow acks, failures stop it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from pipelines.kafka_bridge import BridgeError, KafkaToPubSubBridge
from vitals_lake.config import EnvelopeLimits, KafkaSettings, PubSubSettings
from vitals_lake.envelope import ATTR_KIND, decode_envelope

KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic="patient-vitals", group_id="g")
PUBSUB = PubSubSettings(project="vitals-lake-local", emulator_host="127.0.0.1:1")


class FakeMessage:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._p, self._o, self._v = partition, offset, value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes:
        return b"k\xff"  # a non-UTF-8 key must not break anything

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._o)


class FakeConsumer:
    """Hands out scripted batches; ``events`` maps a consume() call number to a rebalance to simulate."""

    def __init__(self, batches: list[list[FakeMessage]], partitions: int = 4) -> None:
        self.batches = batches
        self.partitions = partitions
        self.calls = 0
        self.commits: list[dict[int, int]] = []
        self.on_commit: Callable[[dict[int, int]], None] = lambda offsets: None
        self.events: dict[int, Callable[[], None]] = {}
        self.closed = False
        self._cb: dict[str, Any] = {}

    def subscribe(
        self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None
    ) -> None:
        self._cb = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def tps(self, parts: list[int]) -> list[TopicPartition]:
        return [TopicPartition(KAFKA.topic, p) for p in parts]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        self.calls += 1
        if self.calls == 1:
            self._cb["assign"](self, self.tps(list(range(self.partitions))))
        if self.calls in self.events:
            self.events[self.calls]()
        if self.batches:
            return self.batches.pop(0)
        time.sleep(min(timeout, 0.005))
        return []

    def revoke(self, parts: list[int]) -> None:
        self._cb["revoke"](self, self.tps(parts))

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        assert asynchronous is False
        got = {tp.partition: tp.offset for tp in offsets}
        self.on_commit(got)
        self.commits.append(got)
        return offsets

    def close(self) -> None:
        self.closed = True

    def last_committed(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for c in self.commits:
            out.update(c)
        return out


class FakePublisher:
    """Acks from background threads, out of order; fails every readings envelope after ``fail_after``."""

    def __init__(self, *, fail_after: int | None = None, delay: float = 0.002) -> None:
        self.fail_after = fail_after
        self.delay = delay
        self.readings = 0
        self.published: list[tuple[bytes, dict[str, str]]] = []
        self.acked: set[tuple[int, int]] = set()
        self._lock = threading.Lock()

    def publish(self, topic: str, data: bytes, **attrs: str) -> Future[str]:
        fut: Future[str] = Future()
        if attrs[ATTR_KIND] == "heartbeat":
            fut.set_result("hb")
            return fut
        self.readings += 1
        if self.fail_after is not None and self.readings > self.fail_after:
            fut.set_exception(RuntimeError("pubsub unavailable"))
            return fut
        # Later envelopes are acknowledged sooner: acks arrive out of order.
        delay = self.delay * max(0, 5 - self.readings % 5)

        def ack() -> None:
            time.sleep(delay)
            table = decode_envelope(data)
            with self._lock:
                self.published.append((data, attrs))
                self.acked.update(
                    zip(
                        table.column("kafka_partition").to_pylist(),
                        table.column("kafka_offset").to_pylist(),
                        strict=True,
                    )
                )
            fut.set_result(str(self.readings))

        threading.Thread(target=ack, daemon=True).start()
        return fut


def _batches(
    n: int, partitions: int = 4, batch: int = 37
) -> tuple[list[list[FakeMessage]], list[tuple[int, int]]]:
    msgs = [FakeMessage(i % partitions, i // partitions, f'{{"i": {i}}}'.encode()) for i in range(n)]
    return [msgs[i : i + batch] for i in range(0, n, batch)], [(m.partition(), m.offset()) for m in msgs]


def _bridge(publisher: FakePublisher, consumer: FakeConsumer, **kw: Any) -> KafkaToPubSubBridge:
    return KafkaToPubSubBridge(
        KAFKA,
        PUBSUB,
        limits=EnvelopeLimits(max_records=50, linger_seconds=0.01),
        publisher=publisher,
        consumer_factory=lambda config: consumer,
        poll_timeout=0.005,
        commit_interval=0.01,
        heartbeat_interval=0.05,
        **kw,
    )


def _check_commit_never_passes_unacked(
    consumer: FakeConsumer, publisher: FakePublisher, n_per_part: int
) -> None:
    def on_commit(offsets: dict[int, int]) -> None:
        for p, pos in offsets.items():
            missing = [o for o in range(min(pos, n_per_part)) if (p, o) not in publisher.acked]
            assert not missing, f"commit {p}:{pos} passes unacknowledged offsets {missing[:5]}"

    consumer.on_commit = on_commit


def test_every_record_published_and_committed_after_out_of_order_acks() -> None:
    batches, coords = _batches(1000)
    consumer, publisher = FakeConsumer(batches), FakePublisher()
    _check_commit_never_passes_unacked(consumer, publisher, 250)
    stats = _bridge(publisher, consumer).run(max_idle_seconds=0.2)
    assert sorted(publisher.acked) == sorted(coords)
    assert stats.records_consumed == stats.records_published == 1000
    assert stats.envelopes == len(publisher.published) >= 20
    assert all(int(a["count"]) <= 50 for _, a in publisher.published)
    assert consumer.last_committed() == {0: 250, 1: 250, 2: 250, 3: 250}
    assert stats.committed_offsets == {0: 250, 1: 250, 2: 250, 3: 250}
    assert stats.heartbeats >= 1  # the idle tail before exiting
    assert consumer.closed


def test_publish_failure_raises_and_never_commits_past_the_failed_record() -> None:
    batches, _ = _batches(1000)
    consumer, publisher = FakeConsumer(batches), FakePublisher(fail_after=6)
    _check_commit_never_passes_unacked(consumer, publisher, 250)
    with pytest.raises(BridgeError) as info:
        _bridge(publisher, consumer).run(max_idle_seconds=5)
    stats = info.value.stats
    assert stats.publish_failures >= 1
    assert stats.records_published == len(publisher.acked) <= 6 * 50
    committed = consumer.last_committed()
    assert sum(committed.values()) <= len(publisher.acked)
    assert stats.error is not None and "pubsub unavailable" in stats.error
    assert consumer.closed


def test_revoke_drains_and_commits_the_revoked_partitions_before_returning() -> None:
    batches, _ = _batches(400, batch=20)
    consumer, publisher = FakeConsumer(batches), FakePublisher(delay=0.01)
    seen_at_revoke: dict[str, Any] = {}

    def revoke() -> None:
        consumer.revoke([0, 1])
        seen_at_revoke["committed"] = consumer.last_committed()
        seen_at_revoke["acked"] = set(publisher.acked)

    consumer.events[6] = revoke  # after 5 batches of 20 records: 25 per partition consumed
    bridge = KafkaToPubSubBridge(
        KAFKA,
        PUBSUB,
        limits=EnvelopeLimits(max_records=1000, linger_seconds=60),  # nothing would leave without the revoke
        publisher=publisher,
        consumer_factory=lambda config: consumer,
        poll_timeout=0.005,
        commit_interval=60,
    )
    bridge.run(max_idle_seconds=0.2)
    assert seen_at_revoke["committed"][0] == 25
    assert seen_at_revoke["committed"][1] == 25
    assert {(p, o) for p in (0, 1) for o in range(25)} <= seen_at_revoke["acked"]
    # Records of revoked partitions fetched afterwards belong to the next owner: not published, not committed.
    assert consumer.last_committed() == {0: 25, 1: 25, 2: 100, 3: 100}
    assert not any(p in (0, 1) and o >= 25 for p, o in publisher.acked)


def test_stop_event_drains_buffered_records() -> None:
    batches, coords = _batches(120)
    consumer, publisher = FakeConsumer(batches), FakePublisher()
    stop = threading.Event()
    consumer.events[len(batches) + 2] = stop.set
    bridge = KafkaToPubSubBridge(
        KAFKA,
        PUBSUB,
        limits=EnvelopeLimits(max_records=1000, linger_seconds=60),
        publisher=publisher,
        consumer_factory=lambda config: consumer,
        poll_timeout=0.005,
    )
    stats = bridge.run(stop)
    assert stats.records_published == 120
    assert sorted(publisher.acked) == sorted(coords)
    assert consumer.last_committed() == {0: 30, 1: 30, 2: 30, 3: 30}
