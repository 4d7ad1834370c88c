"""Where readings come from: Pub/Sub envelopes (streaming), a JSONL file or Bronze (batch replay).

Every source emits the same element: one Arrow table of Bronze rows (``c.BRONZE_SCHEMA``), so all
downstream stages are shared between streaming and replay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from vitals_lake import envelope
from vitals_lake.config import LakeSettings
from vitals_lake.lake import Lake

log = logging.getLogger(__name__)


def _now_us() -> int:
    return time.time_ns() // 1000


class DecodeEnvelopeFn(beam.DoFn):
    """A Pub/Sub message -> a table of Bronze rows; heartbeats are dropped.

    Never raises for a message's content: a message that is not a decodable envelope becomes one Bronze
    row holding the whole message, which the gate quarantines as ``bad_envelope`` (a failed bundle
    would be retried forever on Dataflow, and stop the local runner after four tries).
    """

    def __init__(self) -> None:
        self.envelopes = Metrics.counter("ingest", "envelopes")
        self.records = Metrics.counter("ingest", "records")
        self.heartbeats = Metrics.counter("ingest", "heartbeats")
        self.single = Metrics.counter("ingest", "single_reading_messages")
        self.bad = Metrics.counter("ingest", "bad_envelopes")

    def process(self, message: beam.io.PubsubMessage) -> Iterator[pa.Table]:
        if envelope.is_heartbeat(message.attributes):
            self.heartbeats.inc()
            return
        publish_us = _publish_us(message)
        try:
            records = self._records(message)
            bronze = envelope.to_bronze(
                records, ingest_time_us=_now_us(), message_id=message.message_id, publish_time_us=publish_us
            )
        except Exception as exc:  # noqa: BLE001 (the whole message is kept; the gate names the fault)
            self.bad.inc()
            log.warning("message %s kept whole: %s: %s", message.message_id, type(exc).__name__, exc)
            records = envelope.records_from_lines([bytes(message.data or b"")], source="pubsub")
            bronze = envelope.to_bronze(
                records, ingest_time_us=_now_us(), message_id=message.message_id, publish_time_us=publish_us
            )
        self.records.inc(bronze.num_rows)
        yield bronze

    def _records(self, message: beam.io.PubsubMessage) -> pa.Table:
        if not envelope.is_envelope(message.data):
            # One reading per message (a device publishing directly, or the Managed Kafka Pub/Sub
            # sink connector): a record as it is; the gate judges it like any other.
            self.single.inc()
            return envelope.records_from_lines([message.data], source="pubsub")
        records = envelope.decode_envelope(message.data)  # raises EnvelopeError only
        self.envelopes.inc()
        return records


def _publish_us(message: beam.io.PubsubMessage) -> int | None:
    try:
        return int(message.publish_time.timestamp() * 1e6) if message.publish_time else None
    except (AttributeError, OverflowError, ValueError, TypeError):
        return None


class ReadEnvelopes(beam.PTransform):
    """Stream envelopes from a Pub/Sub subscription into Bronze-row tables."""

    def __init__(self, subscription: str) -> None:
        super().__init__()
        self.subscription = subscription

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "ReadPubSub" >> beam.io.ReadFromPubSub(subscription=self.subscription, with_attributes=True)
            | "DecodeEnvelopes" >> beam.ParDo(DecodeEnvelopeFn())
        )


class ReadJsonlFn(beam.DoFn):
    """A JSONL file (one raw reading per line) -> tables of ``batch_size`` Bronze rows.

    The file is read in blocks and each block split into lines with array operations
    (:func:`vitals_lake.envelope.split_lines`): no Python step per line."""

    def __init__(self, batch_size: int, *, block_bytes: int = 16 << 20) -> None:
        self.batch_size = batch_size
        self.block_bytes = block_bytes

    def process(self, path: str) -> Iterator[pa.Table]:
        pending: list[pa.Array] = []
        held = 0
        first = 0  # line number (from 0) of the first pending line
        tail = b""
        with FileSystems.open(path) as fh:
            while True:
                block = fh.read(self.block_bytes)
                lines, tail = envelope.split_lines(tail + block, final=not block)
                if len(lines):
                    pending.append(lines)
                    held += len(lines)
                while held >= self.batch_size or (not block and held):
                    lines = pa.concat_arrays(pending)
                    size = min(self.batch_size, held)
                    yield self._bronze(path, first, lines.slice(0, size))
                    first, held = first + size, held - size
                    pending = [lines.slice(size)] if held else []
                if not block:
                    return

    @staticmethod
    def _bronze(path: str, first_line: int, lines: pa.Array) -> pa.Table:
        records = envelope.records_from_lines(lines, source="file")
        # record_ref numbers lines within the whole file, not within the batch.
        return envelope.to_bronze(
            records, ingest_time_us=_now_us(), ref_prefix=f"file:{path}", first_index=first_line + 1
        )


class ReadJsonl(beam.PTransform):
    def __init__(self, path: str, *, batch_size: int) -> None:
        super().__init__()
        self.path, self.batch_size = path, batch_size

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Path" >> beam.Create([self.path])
            | "ReadLines" >> beam.ParDo(ReadJsonlFn(self.batch_size))
        )


class ReadBronzeFn(beam.DoFn):
    def __init__(self, lake: LakeSettings, batch_size: int) -> None:
        self.lake, self.batch_size = lake, batch_size

    def process(self, _: object) -> Iterator[pa.Table]:
        bronze = Lake(self.lake).read("bronze")
        for start in range(0, bronze.num_rows, self.batch_size):
            yield bronze.slice(start, self.batch_size)


class ReadBronze(beam.PTransform):
    """Replay the lake's Bronze table (to rebuild Silver and Gold with the same transforms)."""

    def __init__(self, lake: LakeSettings, *, batch_size: int) -> None:
        super().__init__()
        self.lake, self.batch_size = lake, batch_size

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Start" >> beam.Create([None])
            | "ReadTable" >> beam.ParDo(ReadBronzeFn(self.lake, self.batch_size))
        )
