"""Gather elements into one batch per commit interval, whatever their event time.

Delta commits cost tens of milliseconds each, so tables are written once per interval. Batches are
cut on processing time (each element re-stamped to "now"): windowing Bronze on the readings' own
timestamps loses a backlog read late, because the DirectRunner's watermark jumps to wall-clock time.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import FixedWindows, IntervalWindow, TimestampedValue


class _RestampToNow(beam.DoFn):
    def process(self, element: Any) -> Iterator[TimestampedValue]:
        yield TimestampedValue(element, time.time())


class _NameBatch(beam.DoFn):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def process(
        self,
        keyed: tuple[int, Iterable[Any]],
        window: IntervalWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]  # Beam's marker
    ) -> Iterator[tuple[str, list[Any]]]:
        shard, elements = keyed
        # Deterministic per (window, shard) within a run, so a retried bundle carries the same id and
        # its commits are recognised (batch markers); the run id keeps two runs' batches apart.
        yield f"{int(window.start.micros)}-{shard}-{self.run_id}", list(elements)


def table_fingerprint(table: pa.Table) -> int:
    """A deterministic spread key for a table of rows: the CRC-32 of its first row's first column (a
    retried bundle puts the same element in the same batch, so batch markers recognise it)."""
    if table.num_rows == 0:
        return 0
    first = table.column(0)[0].as_py()
    return zlib.crc32(first if isinstance(first, bytes) else str(first).encode())


class _SpreadKey(beam.DoFn):
    def __init__(self, shards: int, fingerprint: Callable[[Any], int]) -> None:
        self.shards = shards
        self.fingerprint = fingerprint

    def process(self, element: Any) -> Iterator[tuple[int, Any]]:
        yield self.fingerprint(element) % self.shards if self.shards > 1 else 0, element


class BatchForCommit(beam.PTransform):
    """tables -> (batch_id, [tables]) once per ``interval`` seconds of processing time, in
    ``shards`` batches per interval (spread by ``fingerprint``) so that as many workers share them.
    ``clock="element"``: windows of ``interval`` over the elements' own timestamps instead (a replay's
    are its window numbers, ``sources.REPLAY_WINDOW``: one batch per replay window)."""

    def __init__(
        self,
        interval: float,
        *,
        run_id: str,
        shards: int = 1,
        fingerprint: Callable[[Any], int] = table_fingerprint,
        clock: Literal["processing", "element"] = "processing",
    ) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.run_id = run_id
        self.shards = shards
        self.fingerprint = fingerprint

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        # Typed as tables all the way, so that Beam codes them with ArrowTableCoder (no encoding just to
        # sample their sizes; pipelines/arrow_pickling.py).
        if self.clock == "processing":
            pcoll = pcoll | "RestampToProcessingTime" >> beam.ParDo(_RestampToNow()).with_input_types(
                pa.Table
            ).with_output_types(pa.Table)
        return (
            pcoll
            | "CommitWindows" >> beam.WindowInto(FixedWindows(self.interval)).with_output_types(pa.Table)
            | "SpreadOverShards"
            >> beam.ParDo(_SpreadKey(self.shards, self.fingerprint)).with_output_types(tuple[int, pa.Table])
            | "Gather" >> beam.GroupByKey()
            | "NameBatch" >> beam.ParDo(_NameBatch(self.run_id)).with_output_types(tuple[str, list[pa.Table]])
        )


def concat_batch(batch: tuple[str, list[pa.Table]], schema: pa.Schema) -> tuple[str, pa.Table]:
    """(batch_id, [tables]) -> (batch_id, one table) in ``schema``."""
    batch_id, tables = batch
    return batch_id, pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])
