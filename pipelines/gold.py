"""Gold: which per-patient event-time windows changed, decided by Beam's windows and triggers.

The Gold rows themselves are recomputed from the lake (``UpsertGoldFn``): after a restart Beam's
window state is empty, so a pane's own aggregates could replace a fuller Gold row. What Beam decides
is *when* a window changed and whether a reading is still in time for it (allowed lateness). So a
pane carries only the patients whose window got new readings.

Each Silver batch becomes one element per window it touches: the Arrow array of its patients, stamped
with the window's start (vectorised: one ``group_by`` per batch, a handful of elements, not one per
patient). Beam combines them per window in fixed event-time windows. Panes fire early every commit
interval (dashboards see the running window), on time at the watermark, and again for late readings
within the allowed lateness.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms.window import FixedWindows, IntervalWindow, TimestampedValue
from apache_beam.utils.timestamp import Duration

from vitals_lake import contract as c

# Combining is a set union of patient ids, so it lifts before the shuffle on Dataflow and one key per
# window size is no hot key. Accumulators compact to distinct ids once they hold this many arrays.
_COMPACT_AFTER: Final = 16
Patients = list[pa.Array]


class TouchedPatientsFn(beam.DoFn):
    """Silver batch -> (window_seconds, patients) per window it touches, stamped at the window start."""

    def __init__(self, window_seconds: int) -> None:
        self.window_seconds = window_seconds

    def process(self, silver: pa.Table) -> Iterator[TimestampedValue]:
        if silver.num_rows == 0:
            return
        start = pc.floor_temporal(silver[c.TIMESTAMP], multiple=self.window_seconds, unit="second")
        keys = pa.table({"start": pc.cast(start, pa.int64()), c.PATIENT_ID: silver[c.PATIENT_ID]})
        grouped = keys.group_by("start", use_threads=False).aggregate([(c.PATIENT_ID, "distinct")])
        starts = grouped["start"].to_pylist()
        patients = grouped[f"{c.PATIENT_ID}_distinct"].combine_chunks()
        for i, start_us in enumerate(starts):
            yield TimestampedValue((self.window_seconds, patients[i].values), start_us / 1e6)


class UnionPatientsFn(beam.CombineFn):
    """The distinct patients of a window, as a list of Arrow arrays (cheap to pickle)."""

    def create_accumulator(self) -> Patients:
        return []

    def add_input(self, acc: Patients, patients: pa.Array) -> Patients:
        acc.append(patients)
        return _compact(acc) if len(acc) >= _COMPACT_AFTER else acc

    def merge_accumulators(self, accs: Iterable[Patients]) -> Patients:
        return _compact([a for acc in accs for a in acc])

    def extract_output(self, acc: Patients) -> Patients:
        return _compact(acc)


def _compact(arrays: Patients) -> Patients:
    if len(arrays) <= 1:
        return arrays
    return [pc.unique(pa.concat_arrays(arrays))]


class ChangedWindowsFn(beam.DoFn):
    """A pane -> one table of (patient_id, window_seconds, window_start): the windows to recompute."""

    def __init__(self) -> None:
        self.panes = Metrics.counter("gold", "panes")
        self.windows = Metrics.counter("gold", "patient_windows_changed")

    def process(
        self,
        keyed: tuple[int, Patients],
        window: IntervalWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]  # Beam's marker
    ) -> Iterator[pa.Table]:
        seconds, acc = keyed
        if not acc:
            return
        patients = acc[0]
        n = len(patients)
        self.panes.inc()
        self.windows.inc(n)
        start = pa.array([int(window.start.micros)] * n, pa.int64()).cast(
            c.GOLD_SCHEMA.field(c.WINDOW_START).type
        )
        yield pa.table(
            {
                c.PATIENT_ID: patients.cast(pa.string()),
                c.WINDOW_SECONDS: pa.array([seconds] * n, pa.int32()),
                c.WINDOW_START: start,
            }
        )


def streaming_trigger(every: float) -> trigger.TriggerFn:
    """Early panes every ``every`` s of processing time, the on-time pane, then late panes likewise."""
    delay = max(1, round(every))
    return trigger.AfterWatermark(
        early=trigger.AfterProcessingTime(delay), late=trigger.AfterProcessingTime(delay)
    )


class SummarizeWindows(beam.PTransform):
    """New Silver batches -> tables of the (patient, window) keys whose Gold rows changed, per pane."""

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
            | "TouchedPatientsPerWindow" >> beam.ParDo(TouchedPatientsFn(self.window_seconds))
            | "EventTimeWindows" >> windows
            | "UnionPerWindow" >> beam.CombinePerKey(UnionPatientsFn())
            | "ChangedWindows" >> beam.ParDo(ChangedWindowsFn())
        )
