"""WriteWarehouse rides out a warehouse outage instead of failing the bundle (no services needed: a sink
that fails transiently for a while). In a streaming DirectRunner pipeline the same outage kills the
stream when the ride-out is off: the runner tries a failed bundle four times back to back, then stops."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to

from pipelines.warehouse_io import WriteWarehouse, WriteWarehouseFn
from vitals_lake import contract as c
from warehouse.bigquery import BigQueryWriteError
from warehouse.settings import BigQuerySettings
from warehouse.sink import WriteResult

DQ_ROWS = pa.Table.from_pylist(
    [
        {
            c.BATCH_ID: "b1",
            c.WINDOW_START: None,
            c.LAYER: "silver",
            c.RULE: f"r{i}",
            c.ACTION: "drop",
            c.CHECKED_ROWS: 10,
            c.PASSED_ROWS: 10,
            c.FAILED_ROWS: 0,
            c.EVENT_DATE: None,
        }
        for i in range(5)
    ]
)


class ScriptedSink:
    """Plays a script: each entry an exception to raise, or None to succeed (remembering acked rows)."""

    def __init__(self, script: list[BaseException | None], *, landed_first: int = 0) -> None:
        self.script = script
        self.calls = 0
        self.transient_errors = 0
        self.acked = landed_first  # rows an earlier failed attempt had landed (skipped as duplicates)

    def ensure(self) -> None:
        pass

    def write(self, table: str, rows: pa.Table) -> WriteResult:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        self.transient_errors += 1  # as if the sink had retried once inside the write
        if step is not None:
            raise step
        return WriteResult(inserted=rows.num_rows - self.acked, duplicates=self.acked)


def fn_for(sink: ScriptedSink, **kw: Any) -> tuple[WriteWarehouseFn, list[float]]:
    pauses: list[float] = []
    fn = WriteWarehouseFn(None, c.DQ_METRICS_TABLE, sink_factory=lambda _: sink, sleep=pauses.append, **kw)
    fn.setup()
    return fn, pauses


def outage(inserted: int = 0) -> BigQueryWriteError:
    return BigQueryWriteError("insertAll: 503 backendError", transient=True, inserted=inserted)


def test_a_write_is_repeated_through_an_outage_and_rows_landed_before_count_as_inserted() -> None:
    # The second failed attempt had landed 2 rows (acknowledged, remembered): the repeat skips them.
    sink = ScriptedSink([outage(), outage(inserted=2), None], landed_first=2)
    fn, pauses = fn_for(sink, outage_budget=60, outage_backoff=1.5)
    [(batch_id, result)] = list(fn.process(("b1", DQ_ROWS)))
    assert sink.calls == 3 and pauses == [1.0, 1.5]  # doubling, capped at outage_backoff
    assert (batch_id, result.inserted, result.duplicates, result.rejected) == ("b1", 5, 0, 0)


def test_a_permanent_error_is_not_repeated() -> None:
    sink = ScriptedSink([BigQueryWriteError("400 invalid request", transient=False)])
    fn, pauses = fn_for(sink, outage_budget=60)
    with pytest.raises(BigQueryWriteError, match="400"):
        list(fn.process(("b1", DQ_ROWS)))
    assert sink.calls == 1 and pauses == []


def test_an_unmarked_exception_is_not_repeated() -> None:
    sink = ScriptedSink([RuntimeError("a bug")])
    fn, _ = fn_for(sink, outage_budget=60)
    with pytest.raises(RuntimeError, match="a bug"):
        list(fn.process(("b1", DQ_ROWS)))
    assert sink.calls == 1


def test_past_the_budget_the_outage_fails_the_bundle() -> None:
    sink = ScriptedSink([outage()])  # never recovers
    fn, pauses = fn_for(sink, outage_budget=3, outage_backoff=30)
    with pytest.raises(BigQueryWriteError, match="503"):
        list(fn.process(("b1", DQ_ROWS)))
    assert pauses == [1.0, 2.0] and sink.calls == 3  # a pause of 4 s would overrun the 3 s budget


def test_budget_zero_turns_the_ride_out_off_and_settings_carry_the_budget() -> None:
    sink = ScriptedSink([outage(), None])
    fn, pauses = fn_for(sink, outage_budget=0)
    with pytest.raises(BigQueryWriteError):
        list(fn.process(("b1", DQ_ROWS)))
    assert pauses == []
    settings = BigQuerySettings.from_env({"VITALS_BQ_OUTAGE_BUDGET": "90", "VITALS_BQ_RETRY_DEADLINE": "7"})
    assert (settings.outage_budget, settings.retry_deadline, settings.outage_backoff) == (90.0, 7.0, 30.0)
    fn = WriteWarehouseFn(settings, c.DQ_METRICS_TABLE)
    assert (fn.outage_budget, fn.outage_backoff) == (90.0, 30.0)


# --- in a streaming DirectRunner pipeline ------------------------------------------------------------------
@dataclass(frozen=True)
class FlakySinkFactory:
    """A picklable factory: the sink fails transiently until ``outage_s`` after its first write (state in
    files, as the runner may copy the DoFn), and records the rows it stored in ``out``."""

    out: Path
    outage_s: float

    def __call__(self, settings: Any) -> FlakySink:
        return FlakySink(self.out, self.outage_s)


class FlakySink:
    def __init__(self, out: Path, outage_s: float) -> None:
        self.out, self.outage_s = out, outage_s
        self.transient_errors = 0

    def ensure(self) -> None:
        pass

    def write(self, table: str, rows: pa.Table) -> WriteResult:
        began = self.out.with_suffix(".began")
        if not began.exists():
            began.write_text(str(time.time()))
        if time.time() - float(began.read_text()) < self.outage_s:
            self.transient_errors += 1
            raise BigQueryWriteError("injected outage", transient=True)
        with self.out.open("a") as f:
            for rule in rows[c.RULE].to_pylist():
                f.write(json.dumps(rule) + "\n")
        return WriteResult(inserted=rows.num_rows)


def run_stream(tmp_path: Path, *, outage_budget: float) -> list[str]:
    out = tmp_path / "stored.jsonl"
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    stream = (
        test_stream.TestStream()
        .add_elements([("b1", DQ_ROWS.slice(0, 3))])
        .advance_processing_time(1)
        .add_elements([("b2", DQ_ROWS.slice(3, 2))])
        .advance_watermark_to_infinity()
    )
    with beam.Pipeline(options=options) as p:
        written = (
            p
            | stream
            | WriteWarehouse(
                None,
                c.DQ_METRICS_TABLE,
                sink_factory=FlakySinkFactory(out, outage_s=2.0),
                outage_budget=outage_budget,
                outage_backoff=0.5,
            )
            | beam.MapTuple(lambda batch_id, result: (batch_id, result.inserted))
        )
        assert_that(written, equal_to([("b1", 3), ("b2", 2)]))
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_the_stream_survives_an_outage_and_writes_every_row_once(tmp_path: Path) -> None:
    stored = run_stream(tmp_path, outage_budget=30)
    assert sorted(stored) == [f"r{i}" for i in range(5)]


def test_without_the_ride_out_the_same_outage_kills_the_stream(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="injected outage"):
        run_stream(tmp_path, outage_budget=0)
    assert not (tmp_path / "stored.jsonl").exists()
