"""Where readings come from: Pub/Sub envelopes (streaming), a JSONL file or Bronze (batch replay).

Every source ends in the same element: one Arrow table of Bronze rows (``c.BRONZE_SCHEMA``). The
stream's tables are gathered into commit batches (``batching.BatchForCommit``); a replay's sources
emit their batches directly, (batch id, rows) in windows by their place in the input
(:class:`InReplayWindows`), so that all later stages are shared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from vitals_lake import envelope
from vitals_lake.config import LakeSettings
from vitals_lake.lake import Lake
from vitals_lake.memory import retain_freed_memory

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


@dataclass(frozen=True)
class LineRange:
    """Whole lines ``[first_line, first_line + lines)`` of a file (numbered from 0), at bytes
    ``[start, end)``: what one worker reads and gates, so a replay moves offsets, not payloads."""

    path: str
    start: int
    end: int
    first_line: int
    lines: int


class IndexLinesFn(beam.DoFn):
    """A JSONL file -> ranges of ``lines_per_range`` whole lines (the last may hold fewer).

    Counts line breaks in blocks with NumPy; nothing is parsed or kept. Cutting right after a line
    break means each range splits into exactly its lines, with no line shared between two."""

    def __init__(self, lines_per_range: int, *, block_bytes: int = 16 << 20) -> None:
        if lines_per_range < 1:
            raise ValueError("lines_per_range must be >= 1")
        self.lines_per_range = lines_per_range
        self.block_bytes = block_bytes

    def process(self, path: str) -> Iterator[LineRange]:
        per = self.lines_per_range
        start = first = held = 0  # the open range: its first byte and line, and the breaks it holds
        offset = 0  # bytes read so far
        last = b""
        with FileSystems.open(path) as fh:
            while block := fh.read(self.block_bytes):
                breaks = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n")) + offset
                for cut in breaks[per - held - 1 :: per].tolist():
                    yield LineRange(path, start, cut + 1, first, per)
                    start, first = cut + 1, first + per
                held = (held + len(breaks)) % per
                offset += len(block)
                last = block[-1:]
        unfinished = 1 if offset > start and last != b"\n" else 0  # a last line with no break
        if held + unfinished:
            yield LineRange(path, start, offset, first, held + unfinished)


class ReadLineRangeFn(beam.DoFn):
    """A :class:`LineRange` -> (batch id, its Bronze rows): one batch of a replay, read, gated and
    committed to Bronze together wherever the range landed."""

    def __init__(self, *, run_id: str, started_us: int) -> None:
        self.run_id = run_id
        self.started_us = started_us
        self.records = Metrics.counter("ingest", "records")

    def setup(self) -> None:
        retain_freed_memory()

    def process(self, span: LineRange) -> Iterator[tuple[str, pa.Table]]:
        with FileSystems.open(span.path) as fh:
            fh.seek(span.start)
            data = fh.read(span.end - span.start)
        lines, _ = envelope.split_lines(data, final=True)
        if len(lines) != span.lines:  # the file changed under the replay
            raise ValueError(
                f"{span.path}: expected {span.lines} lines at byte {span.start}, read {len(lines)}"
            )
        self.records.inc(len(lines))
        yield replay_batch_id(self.started_us, f"f{span.first_line}", self.run_id), _bronze(span, lines)


def replay_batch_id(started_us: int, part: str, run_id: str) -> str:
    """``<window start in µs>-<part>-<run id>``, as ``batching.BatchForCommit`` names a stream's batches;
    a replay's window is its start, and ``part`` (where in the input: a letter, then the number of its
    first row) keeps the id the same when a retried bundle reads the part again, so its commits are
    recognised."""
    return f"{started_us}-{part}-{run_id}"


def replay_place(batch_id: str) -> int:
    """The number of the first input row of a replay batch (:func:`replay_batch_id`'s part)."""
    return int(batch_id.split("-", 2)[1][1:])


# A replay's batches are gathered per shard in windows of this many input rows (about 270 MB of gated
# rows, spread over the shards): by their place in the input, so the same file always makes the same
# windows and commits, however fast the machine. (Windows of processing time, as a stream has, cut
# 716,132 readings into one to three windows from run to run: a second Gold MERGE then rewrote the
# first one's files.)
REPLAY_WINDOW_ROWS: Final = 1_000_000
REPLAY_WINDOW: Final = 1  # a replay window's width in its elements' timestamps, which are window numbers


class _StampByPlace(beam.DoFn):
    def process(self, batch: tuple[str, pa.Table]) -> Iterator[TimestampedValue]:
        yield TimestampedValue(batch, REPLAY_WINDOW * (replay_place(batch[0]) // REPLAY_WINDOW_ROWS))


class InReplayWindows(beam.PTransform):
    """(batch id, rows) of a replay -> the same, in a window per ``REPLAY_WINDOW_ROWS`` input rows (a
    window's timestamps are window numbers, not times): the shard stage gathers each shard's rows once
    per window, as a stream's once per commit interval."""

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        batch = tuple[str, pa.Table]
        return (
            pcoll
            | "StampByPlace" >> beam.ParDo(_StampByPlace()).with_input_types(batch).with_output_types(batch)
            | "Windows" >> beam.WindowInto(FixedWindows(REPLAY_WINDOW)).with_output_types(batch)
        )


def _bronze(span: LineRange, lines: pa.Array) -> pa.Table:
    records = envelope.records_from_lines(lines, source="file")
    # record_ref numbers lines within the whole file (from 1), not within the range.
    return envelope.to_bronze(
        records, ingest_time_us=_now_us(), ref_prefix=f"file:{span.path}", first_index=span.first_line + 1
    )


class ReplayJsonl(beam.PTransform):
    """A JSONL file -> (batch id, Bronze rows) of ``batch_size`` lines each, in replay windows.

    One step indexes the file (line breaks only), the ranges are spread over the workers, and each
    worker reads its range: the payloads are read where they are gated and never cross a shuffle."""

    def __init__(self, path: str, *, batch_size: int, run_id: str, started_us: int) -> None:
        super().__init__()
        self.path, self.batch_size = path, batch_size
        self.run_id, self.started_us = run_id, started_us

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Path" >> beam.Create([self.path])
            | "IndexLines" >> beam.ParDo(IndexLinesFn(self.batch_size))
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadRanges"
            >> beam.ParDo(ReadLineRangeFn(run_id=self.run_id, started_us=self.started_us)).with_output_types(
                tuple[str, pa.Table]
            )
            | "ReplayWindows" >> InReplayWindows()
        )


class ReadBronzeFn(beam.DoFn):
    """The lake's Bronze -> (batch id, ``batch_size`` rows) slices, each id naming where it starts."""

    def __init__(self, lake: LakeSettings, batch_size: int, *, run_id: str, started_us: int) -> None:
        self.lake, self.batch_size = lake, batch_size
        self.run_id, self.started_us = run_id, started_us

    def process(self, _: object) -> Iterator[tuple[str, pa.Table]]:
        bronze = Lake(self.lake).read("bronze")
        for start in range(0, bronze.num_rows, self.batch_size):
            yield (
                replay_batch_id(self.started_us, f"b{start}", self.run_id),
                bronze.slice(start, self.batch_size),
            )


class ReplayBronze(beam.PTransform):
    """Replay the lake's Bronze table (to rebuild Silver and Gold with the same transforms): (batch id,
    ``batch_size`` Bronze rows) in replay windows. The table is read in one step and its slices spread
    over the workers (a rebuild is rare; a file replay moves offsets instead)."""

    def __init__(self, lake: LakeSettings, *, batch_size: int, run_id: str, started_us: int) -> None:
        super().__init__()
        self.lake, self.batch_size = lake, batch_size
        self.run_id, self.started_us = run_id, started_us

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Start" >> beam.Create([None])
            | "ReadTable"
            >> beam.ParDo(
                ReadBronzeFn(self.lake, self.batch_size, run_id=self.run_id, started_us=self.started_us)
            ).with_output_types(tuple[str, pa.Table])
            | "SpreadSlices" >> beam.Reshuffle().with_output_types(tuple[str, pa.Table])
            | "ReplayWindows" >> InReplayWindows()
        )
