"""Packing Kafka records into Pub/Sub envelopes bounded by record count, bytes and linger time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vitals_lake.config import EnvelopeLimits
from vitals_lake.envelope import SourceRecord, encode_envelope

# Per-record cost in the columnar body besides the value: quotes, commas, key, partition, offset, timestamp.
_RECORD_OVERHEAD = 48


@dataclass(frozen=True, slots=True)
class Envelope:
    """One Pub/Sub message ready to publish and the records it carries."""

    data: bytes
    attributes: dict[str, str]
    records: tuple[SourceRecord, ...]


def estimated_size(record: SourceRecord) -> int:
    """Roughly the bytes a record adds to an envelope (JSON escapes quotes and backslashes)."""
    v = record.value
    return len(v) + v.count(b'"') + v.count(b"\\") + len(record.key or "") + _RECORD_OVERHEAD


def encode_bounded(
    records: Sequence[SourceRecord], max_bytes: int, kafka_topic: str | None
) -> list[Envelope]:
    """Encode records into envelopes of at most ``max_bytes``, halving a batch whose estimate was too low.

    A record larger than ``max_bytes`` travels alone, never dropped (Pub/Sub's own limit is 10 MB).
    """
    data, attrs = encode_envelope(records, source="kafka", kafka_topic=kafka_topic)
    if len(data) <= max_bytes or len(records) == 1:
        return [Envelope(data, attrs, tuple(records))]
    mid = len(records) // 2
    return encode_bounded(records[:mid], max_bytes, kafka_topic) + encode_bounded(
        records[mid:], max_bytes, kafka_topic
    )


class EnvelopePacker:
    """Buffers records; hands out an envelope when it is full (count or bytes) or has lingered long enough."""

    def __init__(
        self,
        limits: EnvelopeLimits,
        *,
        kafka_topic: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.kafka_topic = kafka_topic
        self._clock = clock
        self._records: list[SourceRecord] = []
        self._bytes = 0
        self._first_at = 0.0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def add(self, record: SourceRecord) -> list[Envelope]:
        """Buffer a record; returns the envelopes that became full (usually none)."""
        out: list[Envelope] = []
        size = estimated_size(record)
        if self._records and self._bytes + size > self.limits.max_bytes:
            out += self.flush()
        if not self._records:
            self._first_at = self._clock()
        self._records.append(record)
        self._bytes += size
        if len(self._records) >= self.limits.max_records or self._bytes >= self.limits.max_bytes:
            out += self.flush()
        return out

    def due(self) -> bool:
        """True when the oldest buffered record has waited ``linger_seconds``."""
        return bool(self._records) and self._clock() - self._first_at >= self.limits.linger_seconds

    def flush(self) -> list[Envelope]:
        """Everything buffered, as envelopes (empty list when nothing is buffered)."""
        if not self._records:
            return []
        records, self._records, self._bytes = self._records, [], 0
        return encode_bounded(records, self.limits.max_bytes, self.kafka_topic)
