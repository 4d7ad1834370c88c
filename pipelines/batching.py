"""Gather elements into one batch per commit interval, whatever their event time.

Delta commits cost tens of milliseconds each, so tables are written once per interval. Batches are
cut on processing time (each element re-stamped to "now"): windowing Bronze on the readings' own
timestamps loses a backlog read late, because the DirectRunner's watermark jumps to wall-clock time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

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


def _single_shard(element: Any) -> tuple[int, Any]:
    return 0, element


class BatchForCommit(beam.PTransform):
    """elements -> (batch_id, [elements]) once per ``interval`` seconds of processing time."""

    def __init__(self, interval: float, *, run_id: str) -> None:
        super().__init__()
        self.interval = interval
        self.run_id = run_id

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return (
            pcoll
            | "RestampToProcessingTime" >> beam.ParDo(_RestampToNow())
            | "CommitWindows" >> beam.WindowInto(FixedWindows(self.interval))
            | "OneWriter" >> beam.Map(_single_shard)
            | "Gather" >> beam.GroupByKey()
            | "NameBatch" >> beam.ParDo(_NameBatch(self.run_id))
        )


def concat_batch(batch: tuple[str, list[pa.Table]], schema: pa.Schema) -> tuple[str, pa.Table]:
    """(batch_id, [tables]) -> (batch_id, one table) in ``schema``."""
    batch_id, tables = batch
    return batch_id, pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])
