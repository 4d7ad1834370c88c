"""Where readings go: a JSONL file, a Kafka topic, a Pub/Sub topic (envelopes), or a list in tests.

Every sink takes the message bytes exactly as a device sent them (valid or not) and a key, the
patient id, which Kafka uses for partitioning so one patient's readings stay in order.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Protocol, Self

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from vitals_lake.config import KafkaSettings, PubSubSettings
from vitals_lake.envelope import SourceRecord, encode_envelope

ENVELOPE_MAX_RECORDS: Final = 500


class SinkError(RuntimeError):
    """Messages could not be delivered."""


class Sink(Protocol):
    def send(self, value: bytes, *, key: str) -> None:
        """Queue one message."""

    def flush(self) -> None:
        """Deliver everything queued; raise :class:`SinkError` if anything was lost."""

    def close(self) -> None:
        """Flush and release resources."""


class _Closing:
    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ListSink(_Closing):
    """Keeps (key, value) pairs in memory, in send order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def send(self, value: bytes, *, key: str) -> None:
        self.messages.append((key, value))

    @property
    def values(self) -> list[bytes]:
        return [v for _, v in self.messages]


class NullSink(_Closing):
    """Discards everything (benchmarks, manifest-only runs)."""

    def send(self, value: bytes, *, key: str) -> None:
        return None


class JsonlSink(_Closing):
    """Raw message bytes, one per line, exactly as sent (valid or not, UTF-8 or not).

    Not "JSON Lines" in the strict sense: malformed messages are stored unchanged. That works
    because no message contains a raw newline byte (JSON escapes them and the malformed-record
    generator never emits one); :meth:`send` refuses one rather than corrupt the file. Read back
    with :func:`vitals_lake.envelope.read_jsonl`.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = self.path.open("wb")

    def send(self, value: bytes, *, key: str) -> None:
        if b"\n" in value:
            raise ValueError("a JSONL message must not contain a raw newline byte")
        self._file.write(value + b"\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def kafka_producer_config(settings: KafkaSettings, *, linger_ms: int = 5, **extra: Any) -> dict[str, Any]:
    """Idempotent, acks=all: broker-side retries never duplicate or drop a reading."""
    return {
        **settings.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,  # small: batches form under load without delaying a real-time tick
        "client.id": "vitals-simulator",
        **extra,
    }


class KafkaSink(_Closing):
    """An idempotent confluent-kafka producer (acks=all): no duplicates from retries, none lost.

    Delivery errors are counted from the delivery callbacks; :meth:`flush` raises if any occurred or
    if messages are still undelivered after ``flush_timeout`` seconds.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        linger_ms: int = 5,
        flush_timeout: float = 30.0,
        config: dict[str, Any] | None = None,
        producer: Any = None,
    ) -> None:
        self.settings = settings
        self.flush_timeout = flush_timeout
        self.delivered = 0
        self.errors: list[str] = []
        self._producer = producer or Producer(
            kafka_producer_config(settings, linger_ms=linger_ms, **(config or {}))
        )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.errors.append(str(err))

    def send(self, value: bytes, *, key: str) -> None:
        while True:
            try:
                self._producer.produce(
                    self.settings.topic, value=value, key=key.encode(), on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain, then retry
        self._producer.poll(0)

    def flush(self) -> None:
        remaining = self._producer.flush(self.flush_timeout)
        if remaining or self.errors:
            raise SinkError(
                f"kafka: {remaining} message(s) undelivered, {len(self.errors)} delivery error(s)"
                + (f"; first: {self.errors[0]}" if self.errors else "")
            )


def create_kafka_topic(settings: KafkaSettings, *, partitions: int = 3, timeout: float = 10.0) -> None:
    """Create the topic if it does not exist (a local broker; production topics come from Terraform)."""
    admin = AdminClient(settings.client_config())
    futures = admin.create_topics([NewTopic(settings.topic, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


class PubSubSink(_Closing):
    """Publishes readings to Pub/Sub directly, packed into envelopes of up to 500 records.

    With ``settings.emulator_host`` set, the client talks to the emulator (``PUBSUB_EMULATOR_HOST``
    is set for it, as the Google client only reads it from the environment). :meth:`flush` publishes
    the open envelope and waits for every publish future.
    """

    def __init__(
        self,
        settings: PubSubSettings,
        *,
        max_records: int = ENVELOPE_MAX_RECORDS,
        create_topic: bool = False,
        timeout: float = 60.0,
        publisher: Any = None,
    ) -> None:
        if not 1 <= max_records <= ENVELOPE_MAX_RECORDS:
            raise ValueError(f"max_records must be in 1..{ENVELOPE_MAX_RECORDS}")
        self.settings = settings
        self.max_records = max_records
        self.timeout = timeout
        self.published_messages = 0
        self._buffer: list[SourceRecord] = []
        self._futures: list[Future[str]] = []
        if publisher is None:
            if settings.emulator_host:
                os.environ["PUBSUB_EMULATOR_HOST"] = settings.emulator_host
            from google.cloud import pubsub_v1  # noqa: PLC0415 - 0.5 s import, only this sink needs it

            publisher = pubsub_v1.PublisherClient()
        self._publisher = publisher
        if create_topic:
            self._create_topic()

    def _create_topic(self) -> None:
        from google.api_core.exceptions import AlreadyExists  # noqa: PLC0415

        with contextlib.suppress(AlreadyExists):
            self._publisher.create_topic(name=self.settings.topic_path)

    def send(self, value: bytes, *, key: str) -> None:
        self._buffer.append(SourceRecord(value=value))
        if len(self._buffer) >= self.max_records:
            self._publish_buffer()

    def _publish_buffer(self) -> None:
        if not self._buffer:
            return
        body, attributes = encode_envelope(self._buffer, source="simulator")
        self._futures.append(self._publisher.publish(self.settings.topic_path, body, **attributes))
        self._buffer = []

    def flush(self) -> None:
        self._publish_buffer()
        failures: list[BaseException] = []
        deadline = time.monotonic() + self.timeout
        for future in self._futures:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
                self.published_messages += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported below
                failures.append(exc)
        self._futures = []
        if failures:
            raise SinkError(f"pubsub: {len(failures)} envelope(s) not published; first: {failures[0]!r}")
