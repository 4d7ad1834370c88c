"""Kafka → Pub/Sub bridge: the local stand-in for Google's Pub/Sub Kafka connector (CloudPubSubSinkConnector).

At-least-once: a partition's offset is committed only after every record before it was acknowledged by
Pub/Sub. Records travel in envelopes (``vitals_lake.envelope``); nothing is dropped, malformed values
included. On a publish failure the bridge stops consuming, commits only what is safe and raises
``BridgeError``: a restart re-reads from the last committed offset (duplicates are removed downstream by
``event_id``).

    python -m pipelines.kafka_bridge --bootstrap 127.0.0.1:9092 --topic patient-vitals \\
        --group vitals-bridge --project vitals-lake-local --pubsub-topic patient-vitals \\
        --emulator-host 127.0.0.1:8085 --stats-file var/bridge-stats.json
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from google.cloud.pubsub_v1.types import BatchSettings

from pipelines.kafka_bridge_offsets import OffsetTracker
from pipelines.kafka_bridge_packing import Envelope, EnvelopePacker
from pipelines.pubsub_clients import close_publisher, publisher_client
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, EnvelopeLimits, KafkaSettings, PubSubSettings
from vitals_lake.envelope import SourceRecord, heartbeat
from vitals_lake.logs import configure as configure_logging

log = logging.getLogger("pipelines.kafka_bridge")
PROG = "python -m pipelines.kafka_bridge"

__all__ = [
    "BridgeError",
    "BridgeStats",
    "Envelope",
    "EnvelopePacker",
    "KafkaToPubSubBridge",
    "OffsetTracker",
    "Publisher",
    "consumer_config",
    "main",
]


class Publisher(Protocol):
    """What the bridge needs from a Pub/Sub publisher (``pubsub_v1.PublisherClient`` fits)."""

    def publish(self, topic: str, data: bytes, **attrs: str) -> Future[str]: ...


class MessageLike(Protocol):
    """The part of ``confluent_kafka.Message`` the bridge reads."""

    def error(self) -> KafkaError | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


class ConsumerLike(Protocol):
    """The part of ``confluent_kafka.Consumer`` the bridge uses (tests substitute a fake)."""

    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = ...,
        on_revoke: RebalanceCallback | None = ...,
        on_lost: RebalanceCallback | None = ...,
    ) -> None: ...
    def consume(self, num_messages: int = ..., timeout: float = ...) -> Sequence[MessageLike]: ...
    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]: ...
    def close(self) -> None: ...


class BridgeError(RuntimeError):
    """Publishing (or Kafka) failed; the bridge stopped without committing past the failure."""

    def __init__(self, message: str, stats: BridgeStats) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass
class BridgeStats:
    records_consumed: int = 0
    records_published: int = 0  # acknowledged by Pub/Sub
    envelopes: int = 0  # acknowledged envelopes of readings
    heartbeats: int = 0
    bytes_published: int = 0
    publish_failures: int = 0
    commits: int = 0
    commit_failures: int = 0
    rebalances: int = 0
    committed_offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    elapsed_seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["committed_offsets"] = {str(p): o for p, o in sorted(self.committed_offsets.items())}
        return d

    def write_json(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)


@dataclass(frozen=True, slots=True)
class _InFlight:
    coords: tuple[tuple[int, int], ...]  # (partition, offset) of every record in the envelope
    size: int
    is_heartbeat: bool


def consumer_config(kafka: KafkaSettings) -> dict[str, str | int | float | bool]:
    return {
        **kafka.client_config(),  # bootstrap servers, and TLS + SASL for a managed Kafka
        "group.id": kafka.group_id,
        "client.id": "vitals-kafka-bridge",
        "enable.auto.commit": False,  # commits follow Pub/Sub acknowledgements, never the read position
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",  # cooperative-sticky orphans partitions on Tansu
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 2000,
    }


def _kafka_consumer(config: dict[str, str | int | float | bool]) -> ConsumerLike:
    return Consumer(config)


def _decode_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    return key.decode("utf-8", "backslashreplace")  # a key is a routing hint; the value stays exact


class KafkaToPubSubBridge:
    """Consumes a Kafka topic and publishes its records to a Pub/Sub topic in envelopes, at least once."""

    def __init__(
        self,
        kafka: KafkaSettings,
        pubsub: PubSubSettings,
        *,
        limits: EnvelopeLimits = EnvelopeLimits(),  # noqa: B008 (frozen dataclass: a safe default)
        publisher: Publisher | None = None,
        consumer_factory: Callable[[dict[str, str | int | float | bool]], ConsumerLike] = _kafka_consumer,
        consume_batch: int = 1000,
        poll_timeout: float = 0.1,
        heartbeat_interval: float = 1.0,
        commit_interval: float = 1.0,
        drain_timeout: float = 30.0,
        progress_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kafka = kafka
        self.pubsub = pubsub
        self.limits = limits
        self._publisher = publisher
        self._consumer_factory = consumer_factory
        self._consume_batch = consume_batch
        self._poll_timeout = poll_timeout
        self._heartbeat_interval = heartbeat_interval
        self._commit_interval = commit_interval
        self._drain_timeout = drain_timeout
        self._progress_interval = progress_interval
        self._clock = clock
        self.stats = BridgeStats()

    # --- the loop ---------------------------------------------------------------------------------
    def run(
        self, stop: threading.Event | None = None, *, max_idle_seconds: float | None = None
    ) -> BridgeStats:
        """Bridge until ``stop`` is set (or nothing arrived for ``max_idle_seconds``), then drain and commit.

        Raises BridgeError after a publish failure, once everything safe was committed.
        """
        stop = stop or threading.Event()
        self.stats = BridgeStats()
        self._tracker = OffsetTracker()
        self._packer = EnvelopePacker(self.limits, kafka_topic=self.kafka.topic, clock=self._clock)
        self._done: queue.SimpleQueue[tuple[_InFlight, BaseException | None]] = queue.SimpleQueue()
        self._in_flight = 0
        self._failure: BaseException | None = None
        self._assigned: set[int] = set()
        self._closing = False
        started = self._clock()
        self._last_publish = started
        self._last_record: float | None = None  # idle clock: starts at the first assignment
        last_commit = last_progress = started
        consumer = self._consumer_factory(consumer_config(self.kafka))
        self._consumer = consumer
        consumer.subscribe(
            [self.kafka.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        owned_client = None
        if self._publisher is None:
            try:
                owned_client = self._make_publisher()
            except BaseException:
                consumer.close()
                raise
            self._publisher = owned_client
        log.info(
            "bridging kafka %s/%s -> %s",
            self.kafka.bootstrap_servers,
            self.kafka.topic,
            self.pubsub.topic_path,
        )
        try:
            while not stop.is_set() and self._failure is None:
                messages = consumer.consume(num_messages=self._consume_batch, timeout=self._poll_timeout)
                self._take(messages)
                self._reap()
                if self._failure is not None:
                    break
                now = self._clock()
                if self._packer.due():
                    self._publish_envelopes(self._packer.flush())
                elif not self._packer and now - self._last_publish >= self._heartbeat_interval:
                    self._publish_heartbeat()
                if now - last_commit >= self._commit_interval:
                    self._commit()
                    last_commit = now
                if now - last_progress >= self._progress_interval:
                    self._log_progress(now - started)
                    last_progress = now
                if max_idle_seconds is not None and self._idle_for(now) >= max_idle_seconds:
                    log.info("nothing consumed for %.1f s: stopping", max_idle_seconds)
                    break  # the drain below publishes what is buffered and commits
        except KafkaException as exc:
            self._failure = self._failure or exc
            log.error("kafka failed: %s", exc)
        finally:
            self._drain()
            self._closing = True
            try:
                consumer.close()  # leaves the group; runs on_revoke, which finds nothing left to do
            finally:
                if owned_client is not None:
                    self._close_publisher(owned_client)
                    self._publisher = None
            self.stats.elapsed_seconds = round(self._clock() - started, 3)
        self._log_progress(self.stats.elapsed_seconds)
        if self._failure is not None:
            self.stats.error = f"{type(self._failure).__name__}: {self._failure}"
            raise BridgeError(f"bridge stopped: {self.stats.error}", self.stats) from self._failure
        return self.stats

    def _idle_for(self, now: float) -> float:
        # Counted from the last record or the last assignment: a group join takes seconds and is not idleness.
        return 0.0 if self._last_record is None else now - self._last_record

    def _take(self, messages: Sequence[MessageLike]) -> None:
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("kafka: %s", err)  # transient (e.g. topic not created yet): librdkafka retries
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is None or offset is None or partition not in self._assigned:
                continue  # fetched before a revoke: the partition's next owner reads it from the commit
            ts_type, ts = msg.timestamp()
            record = SourceRecord(
                value=msg.value() or b"",  # a null value (tombstone) travels as empty bytes
                key=_decode_key(msg.key()),
                partition=partition,
                offset=offset,
                timestamp_ms=ts if ts_type != 0 else None,  # 0: TIMESTAMP_NOT_AVAILABLE
            )
            if not self._tracker.add(partition, offset):
                log.warning(
                    "offset %s:%d seen again; published again (duplicates are harmless)", partition, offset
                )
            self.stats.records_consumed += 1
            self._last_record = self._clock()
            self._publish_envelopes(self._packer.add(record))

    # --- publishing -------------------------------------------------------------------------------
    def _publish_envelopes(self, envelopes: list[Envelope]) -> None:
        for env in envelopes:
            self._reap()
            if self._failure is not None:
                return  # stop publishing at once; these records stay pending, so they are never committed
            coords = tuple(
                (r.partition, r.offset)
                for r in env.records
                if r.partition is not None and r.offset is not None
            )
            self._publish(_InFlight(coords, len(env.data), is_heartbeat=False), env.data, env.attributes)

    def _publish_heartbeat(self) -> None:
        data, attrs = heartbeat()
        self._publish(_InFlight((), len(data), is_heartbeat=True), data, attrs)

    def _publish(self, item: _InFlight, data: bytes, attrs: dict[str, str]) -> None:
        assert self._publisher is not None
        self._in_flight += 1
        self._last_publish = self._clock()
        try:
            future = self._publisher.publish(self.pubsub.topic_path, data, **attrs)
        except Exception as exc:  # noqa: BLE001 (any synchronous failure counts like a failed future)
            self._done.put((item, exc))
            return
        # Runs on the publisher's thread (or at once if already done): hand the result to the loop's thread.
        future.add_done_callback(lambda f: self._done.put((item, f.exception())))

    def _reap(self, timeout: float | None = None) -> None:
        """Apply finished publishes to the tracker; with ``timeout``, wait that long for the first one."""
        while self._in_flight:
            try:
                item, exc = self._done.get(timeout=timeout) if timeout else self._done.get_nowait()
            except queue.Empty:
                return
            timeout = None
            self._in_flight -= 1
            if exc is None:
                for partition, offset in item.coords:
                    self._tracker.ack(partition, offset)
                self.stats.bytes_published += item.size
                if item.is_heartbeat:
                    self.stats.heartbeats += 1
                else:
                    self.stats.envelopes += 1
                    self.stats.records_published += len(item.coords)
                continue
            self.stats.publish_failures += 1
            for partition, offset in item.coords:
                self._tracker.fail(partition, offset)
            if self._failure is None:
                log.error("publish failed, stopping: %r", exc)
                self._failure = exc

    def _wait_in_flight(self, timeout: float) -> None:
        deadline = self._clock() + timeout
        while self._in_flight:
            left = deadline - self._clock()
            if left <= 0:
                log.error("%d publishes still unacknowledged after %.0f s", self._in_flight, timeout)
                return
            self._reap(timeout=min(left, 0.5))

    def _drain(self) -> None:
        """Publish what is buffered (unless publishing already failed), wait for acks, commit what is safe."""
        if self._failure is None:
            self._publish_envelopes(self._packer.flush())
        self._wait_in_flight(self._drain_timeout)
        if self._in_flight and self._failure is None:
            self._failure = TimeoutError(
                f"{self._in_flight} publishes unacknowledged after {self._drain_timeout} s"
            )
        self._commit()

    # --- commits and rebalances -------------------------------------------------------------------
    def _commit(self, partitions: set[int] | None = None) -> None:
        owned = self._assigned if partitions is None else partitions & self._assigned
        offsets = {p: o for p, o in self._tracker.to_commit().items() if p in owned}
        if not offsets:
            return
        tps = [TopicPartition(self.kafka.topic, p, o) for p, o in sorted(offsets.items())]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:  # e.g. a rebalance in progress: retried at the next interval
            self.stats.commit_failures += 1
            log.warning("commit failed (will retry): %s", exc)
            return
        failed = {tp.partition for tp in result or [] if tp.error is not None}
        done = {p: o for p, o in offsets.items() if p not in failed}
        if failed:
            self.stats.commit_failures += 1
            log.warning("commit failed for partitions %s (will retry)", sorted(failed))
        self._tracker.mark_committed(done)
        self.stats.committed_offsets.update(done)
        self.stats.commits += 1

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._assigned |= {tp.partition for tp in partitions}
        self._last_record = self._clock()
        self.stats.rebalances += 1
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Graceful hand-over: publish what is buffered, wait for acks, commit before the next owner starts.
        revoked = {tp.partition for tp in partitions}
        if not self._closing:  # at close() the drain already ran
            if self._failure is None:
                self._publish_envelopes(self._packer.flush())
            self._wait_in_flight(self._drain_timeout)
            self._commit(revoked)
        self._tracker.forget(revoked)
        self._assigned -= revoked
        if revoked:
            log.info("revoked partitions %s", sorted(revoked))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Lost (session timed out): committing is no longer allowed; the next owner re-reads from the commit.
        lost = {tp.partition for tp in partitions}
        self._tracker.forget(lost)
        self._assigned -= lost
        log.warning("lost partitions %s", sorted(lost))

    # --- helpers ----------------------------------------------------------------------------------
    def _make_publisher(self) -> Any:
        # Envelopes are already batches: send each promptly; leave room for one envelope per request.
        max_bytes = min(9_000_000, max(1_000_000, 2 * self.limits.max_bytes))
        return publisher_client(
            self.pubsub, batch_settings=BatchSettings(max_bytes=max_bytes, max_latency=0.005)
        )

    @staticmethod
    def _close_publisher(client: Any) -> None:
        try:
            close_publisher(client)
        except Exception as exc:  # noqa: BLE001 (closing must not hide the run's own outcome)
            log.warning("closing the Pub/Sub publisher: %s", exc)

    def _log_progress(self, elapsed: float) -> None:
        s = self.stats
        log.info(
            "progress: consumed=%d published=%d envelopes=%d heartbeats=%d in_flight=%d buffered=%d "
            "commits=%d committed=%s failures=%d elapsed=%.1fs",
            s.records_consumed,
            s.records_published,
            s.envelopes,
            s.heartbeats,
            self._in_flight,
            len(self._packer),
            s.commits,
            dict(sorted(s.committed_offsets.items())),
            s.publish_failures,
            elapsed,
        )


# --- CLI -------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    kafka, pubsub, limits = KafkaSettings.from_env(), PubSubSettings.from_env(), EnvelopeLimits()
    p = argparse.ArgumentParser(prog=PROG, description="Kafka -> Pub/Sub bridge")
    p.add_argument(
        "--bootstrap", default=kafka.bootstrap_servers, help="Kafka host:port (VITALS_KAFKA_BOOTSTRAP)"
    )
    p.add_argument("--topic", default=kafka.topic, help="Kafka topic")
    p.add_argument("--group", default=kafka.group_id, help="Kafka consumer group")
    p.add_argument("--project", default=pubsub.project, help="GCP project (VITALS_GCP_PROJECT)")
    p.add_argument("--pubsub-topic", default=pubsub.topic)
    p.add_argument("--emulator-host", default=pubsub.emulator_host, help="host:port (PUBSUB_EMULATOR_HOST)")
    p.add_argument("--max-records", type=int, default=limits.max_records)
    p.add_argument("--max-bytes", type=int, default=limits.max_bytes)
    p.add_argument("--linger", type=float, default=limits.linger_seconds, help="seconds")
    p.add_argument("--stats-file", type=Path, default=None)
    p.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS")
    p.add_argument("--progress-seconds", type=float, default=5.0)
    p.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        parser = _parser()
    except ConfigError as exc:  # a malformed VITALS_* / PUBSUB_EMULATOR_HOST variable (the defaults)
        return usage_error(argparse.ArgumentParser(prog=PROG), f"environment: {exc}")
    args = parser.parse_args(argv)
    configure_logging(args.log_level.upper(), fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # The command line names the broker and the group; how to authenticate comes from the environment.
        kafka = replace(
            KafkaSettings.from_env(), bootstrap_servers=args.bootstrap, topic=args.topic, group_id=args.group
        )
        pubsub = PubSubSettings(
            project=args.project, topic=args.pubsub_topic, emulator_host=args.emulator_host or None
        )
        limits = EnvelopeLimits(
            max_records=args.max_records, max_bytes=args.max_bytes, linger_seconds=args.linger
        )
    except ConfigError as exc:
        return usage_error(parser, str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: draining", signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second signal kills without draining

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    bridge = KafkaToPubSubBridge(kafka, pubsub, limits=limits, progress_interval=args.progress_seconds)
    code = 0
    try:
        stats = bridge.run(stop, max_idle_seconds=args.exit_when_idle)
    except BridgeError as exc:
        log.error("%s", exc)
        stats, code = exc.stats, 1
    if args.stats_file is not None:
        stats.write_json(args.stats_file)
    return code


if __name__ == "__main__":
    sys.exit(main())
