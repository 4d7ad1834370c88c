"""Gold: per-patient aggregates in event-time windows that stay correct when readings arrive late.

New Silver rows become one partial per (patient, window) on the batch (vectorised), stamped with the
window's start. Beam then combines partials per patient in fixed event-time windows. Panes fire
early every commit interval (dashboards see the running window), on time at the watermark, and again
for every late reading within the allowed lateness; panes accumulate, so each one carries the whole
window and Gold simply upserts it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms.window import FixedWindows, IntervalWindow, TimestampedValue
from apache_beam.utils.timestamp import Duration

from vitals_lake import contract as c
from vitals_lake.summaries import Partial, gold_row, merge_partials, window_partials


class ToPartialsFn(beam.DoFn):
    def __init__(self, window_seconds: int) -> None:
        self.window_seconds = window_seconds

    def process(self, silver: pa.Table) -> Iterator[TimestampedValue]:
        partials = window_partials(silver, window_seconds=self.window_seconds)
        starts = pc.cast(partials[c.WINDOW_START], pa.int64()).to_pylist()
        body = partials.drop_columns([c.WINDOW_START])
        for start_us, row in zip(starts, body.to_pylist(), strict=True):
            patient = row.pop(c.PATIENT_ID)
            yield TimestampedValue((patient, row), start_us / 1e6)


class CombinePartialsFn(beam.CombineFn):
    def create_accumulator(self) -> Partial | None:
        return None

    def add_input(self, acc: Partial | None, partial: Partial) -> Partial:
        return partial if acc is None else merge_partials(acc, partial)

    def merge_accumulators(self, accs: Iterable[Partial | None]) -> Partial | None:
        out: Partial | None = None
        for a in accs:
            if a is not None:
                out = a if out is None else merge_partials(out, a)
        return out

    def extract_output(self, acc: Partial | None) -> Partial | None:
        return acc


class ToGoldRowFn(beam.DoFn):
    def __init__(self, window_seconds: int) -> None:
        self.window_seconds = window_seconds
        self.panes = Metrics.counter("gold", "panes")

    def process(
        self,
        keyed: tuple[str, Partial | None],
        window: IntervalWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]  # Beam's marker
    ) -> Iterator[dict[str, Any]]:
        patient, partial = keyed
        if partial is None:
            return
        self.panes.inc()
        yield gold_row(
            patient, int(window.start.micros), self.window_seconds, partial, time.time_ns() // 1000
        )


def streaming_trigger(every: float) -> trigger.TriggerFn:
    """Early panes every ``every`` s of processing time, the on-time pane, then late panes likewise."""
    delay = max(1, round(every))
    return trigger.AfterWatermark(
        early=trigger.AfterProcessingTime(delay), late=trigger.AfterProcessingTime(delay)
    )


class SummarizeWindows(beam.PTransform):
    """New Silver rows -> Gold rows (dicts), one per pane of each (patient, window)."""

    def __init__(self, *, window_seconds: int, allowed_lateness: int, fire: trigger.TriggerFn | None) -> None:
        """``fire`` None: one pane per window at the watermark (batch replay, where every reading is
        on time and the runner has no processing-time triggers)."""
        super().__init__()
        self.window_seconds = window_seconds
        self.allowed_lateness = allowed_lateness
        self.fire = fire

    def expand(self, silver: beam.PCollection) -> beam.PCollection:
        if self.fire is None:
            windows = beam.WindowInto(FixedWindows(self.window_seconds))
        else:
            windows = beam.WindowInto(
                FixedWindows(self.window_seconds),
                trigger=self.fire,
                allowed_lateness=Duration(seconds=self.allowed_lateness),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            )
        return (
            silver
            | "PartialsPerPatientWindow" >> beam.ParDo(ToPartialsFn(self.window_seconds))
            | "EventTimeWindows" >> windows
            | "CombinePerPatient" >> beam.CombinePerKey(CombinePartialsFn())
            | "ToGoldRows" >> beam.ParDo(ToGoldRowFn(self.window_seconds))
        )
