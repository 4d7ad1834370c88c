"""Gold's event-time windows under a controlled watermark (TestStream): on-time, late, too late.

A pane names the patients whose window changed (accumulating: everyone since the window opened).
"""

from __future__ import annotations

from datetime import timedelta

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream, util
from apache_beam.transforms import trigger
from apache_beam.transforms.window import TimestampedValue

from pipelines.gold import SummarizeWindows
from tests.factories import T0, raw, reading, silver_rows
from vitals_lake import contract as c

LATENESS = 120


def silver_at(seconds: list[float], patient: str = "P000001"):
    docs = [reading(i, patient=patient, at=T0 + timedelta(seconds=s)) for i, s in enumerate(seconds)]
    for d, s in zip(docs, seconds, strict=True):
        d[c.EVENT_ID] = f"{patient}-{s}"
    return silver_rows([raw(d) for d in docs])


def epoch(seconds_after_t0: float) -> float:
    return T0.timestamp() + seconds_after_t0


def streaming_options() -> PipelineOptions:
    options = PipelineOptions(flags=[], runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return options


def pane_key(pane: pa.Table) -> tuple[tuple[str, ...], str]:
    starts = {str(int(s.timestamp() * 1e6)) for s in pane[c.WINDOW_START].to_pylist()}
    assert len(starts) == 1, "a pane covers one window"
    assert set(pane[c.WINDOW_SECONDS].to_pylist()) == {60}
    return tuple(sorted(pane[c.PATIENT_ID].to_pylist())), starts.pop()


def run_panes(stream: test_stream.TestStream, expected: list[tuple[tuple[str, ...], str]]) -> None:
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        panes = (
            p
            | stream
            # Late panes per element: TestStream stalls on processing-time timers left pending at the
            # end, so the production trigger's processing-time delays are replaced here.
            | SummarizeWindows(
                window_seconds=60,
                allowed_lateness=LATENESS,
                fire=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            )
            | beam.Map(pane_key)
        )
        # A window may repeat its last accumulated pane when it expires; Gold upserts, so compare
        # the distinct pane contents.
        util.assert_that(panes | beam.Distinct(), util.equal_to(expected))


W0 = str(int(epoch(0) * 1e6))
W1 = str(int(epoch(60) * 1e6))


def test_on_time_late_and_too_late_readings():
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(epoch(0))
        .add_elements([TimestampedValue(silver_at([0, 10, 20, 30, 40, 50]), epoch(50))])
        .advance_watermark_to(epoch(61))  # window [0, 60) closes on time: 6 readings
        # Late, within the lateness: a late pane adds P000002 to the window.
        .add_elements([TimestampedValue(silver_at([55, 59], patient="P000002"), epoch(61))])
        .advance_watermark_to(epoch(60 + LATENESS + 1))  # the window expires
        # Too late: no pane ever names P000003 (its reading stays in Silver, Gold is not recomputed).
        .add_elements([TimestampedValue(silver_at([5], patient="P000003"), epoch(200))])
        .advance_watermark_to_infinity()
    )
    run_panes(stream, [(("P000001",), W0), (("P000001", "P000002"), W0)])


def test_readings_split_across_windows_and_patients():
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(epoch(0))
        .add_elements([TimestampedValue(silver_at([5, 65, 70]), epoch(70))])
        .add_elements([TimestampedValue(silver_at([15], patient="P000002"), epoch(70))])
        .advance_watermark_to_infinity()
    )
    run_panes(stream, [(("P000001", "P000002"), W0), (("P000001",), W1)])
