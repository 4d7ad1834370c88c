"""Warehouse writers: ``(batch_id, pa.Table)`` batches of one warehouse table through a WarehouseSink.

    gold_batches | "Gold to BigQuery" >> WriteWarehouse(BigQuerySettings.from_env(), c.GOLD_TABLE)

Each worker thread builds one sink per settings on first use (a client per worker thread, not per
element or per bundle: the DirectRunner sets a DoFn up and tears it down around every bundle), creates
the tables once (``ensure()``, idempotent) and keeps it for the life of the process; a sink from
``sink_factory=`` is built in ``setup()`` and closed in ``teardown()``. Which sink
is decided by :func:`open_sink` from the settings, so the same transform writes BigQuery
(:class:`~warehouse.settings.BigQuerySettings`) or anything else given a factory
(``sink_factory=``: a picklable callable from the settings to a WarehouseSink, e.g. the DuckDB
warehouse). Every row of a batch ends in exactly one counter (namespace ``warehouse``):
``<table>_inserted``, ``<table>_duplicates`` (recognised by insert id) or ``<table>_rejected``
(refused by the warehouse, now in its dead-letter table).

**Outages are ridden out, not turned into failed bundles.** A sink that raises an exception marked
``transient`` (the warehouse unreachable past the sink's own retry deadline:
:class:`~warehouse.bigquery.BigQueryWriteError`) gets the same write again, after a
pause that doubles from 1 s up to ``outage_backoff`` seconds, until it succeeds or ``outage_budget``
seconds have passed since the first failure (both from the settings, e.g.
``BigQuerySettings.outage_budget``, 3600 s; or the ``outage_budget=`` argument; 0 turns the ride-out
off). Why: the local DirectRunner tries a failed bundle four times back to back and then stops the
whole streaming pipeline; Dataflow would retry forever. Only past the budget does the error fail the
bundle. Each repeat is logged (how long the warehouse has been failing, rows waiting, next pause) and
counted: ``<table>_write_retries`` (repeats of a whole write) and ``<table>_transient_errors``
(failed attempts the sink retried inside one write); ``<table>_outage_seconds`` adds up the time
writes spent waiting. Nothing is sent twice that is known to have landed: the sink remembers the insert
ids acknowledged before a failure, and rows it counts as duplicates on the repeat for that reason are
counted here as ``inserted`` (the exception says how many landed), so every row still ends in exactly
one of inserted / duplicates / rejected. A write whose acknowledgement was lost in the outage is sent
again with the same insert ids (BigQuery de-duplicates them best effort; the views keep one row per key
and version). Permanent errors are not repeated.

While a write waits, the DirectRunner waits with it (one executor thread): the stream pauses and
resumes from the Pub/Sub backlog when the warehouse is back. The transform emits
``(batch_id, WriteResult)`` per batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipelines import counters
from warehouse.bigquery import BigQuerySink
from warehouse.settings import BigQuerySettings
from warehouse.sink import WarehouseSink, WriteResult
from warehouse.tables import WAREHOUSE_TABLES

SinkFactory = Callable[[Any], WarehouseSink]
METRICS_NAMESPACE = counters.WAREHOUSE
FIRST_PAUSE: Final = 1.0  # seconds before the first repeat of a write that failed transiently
DEFAULT_OUTAGE_BACKOFF: Final = 30.0

log = logging.getLogger(__name__)


def is_transient_failure(exc: BaseException) -> bool:
    """True when a sink marked its exception as worth writing again later (the warehouse down)."""
    return bool(getattr(exc, "transient", False))


def open_sink(settings: Any) -> WarehouseSink:
    """The sink for a settings object: BigQuerySettings -> BigQuerySink."""
    if isinstance(settings, BigQuerySettings):
        return BigQuerySink(settings)
    raise TypeError(
        f"no warehouse sink for settings of type {type(settings).__name__}: "
        "pass sink_factory= to WriteWarehouse"
    )


_local = threading.local()


def _shared_sink(settings: Any, *, ensure: bool) -> WarehouseSink:
    """The calling thread's sink for ``settings``, created (and ensured) on first use.

    Why: the bundle-based DirectRunner calls ``setup()`` and ``teardown()`` around *every* bundle, so a
    sink per DoFn instance meant a new client, six metadata requests (``ensure``) and a forgotten list
    of acknowledged insert ids per batch. One sink per thread (the sink is not thread-safe) per settings
    keeps the client and the ids for the life of the worker, on every runner.
    """
    sinks: dict[Any, WarehouseSink] | None = getattr(_local, "sinks", None)
    if sinks is None:
        sinks = _local.sinks = {}
    key = (settings, ensure)
    sink = sinks.get(key)
    if sink is None:
        sink = open_sink(settings)
        if ensure:
            sink.ensure()
        sinks[key] = sink
    return sink


class WriteWarehouseFn(beam.DoFn):
    def __init__(
        self,
        settings: Any,
        table: str,
        *,
        sink_factory: SinkFactory | None = None,
        ensure: bool = True,
        outage_budget: float | None = None,
        outage_backoff: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if table not in WAREHOUSE_TABLES:
            raise ValueError(f"unknown warehouse table {table!r}: one of {', '.join(WAREHOUSE_TABLES)}")
        self.settings = settings
        self.table = table
        self.sink_factory = sink_factory
        self.ensure = ensure
        # From the settings unless given; settings without them (another sink's): no ride-out.
        budget = getattr(settings, "outage_budget", 0.0) if outage_budget is None else outage_budget
        backoff = (
            getattr(settings, "outage_backoff", DEFAULT_OUTAGE_BACKOFF)
            if outage_backoff is None
            else outage_backoff
        )
        if budget < 0 or backoff <= 0:
            raise ValueError(f"outage_budget must be >= 0 and outage_backoff > 0: {budget}, {backoff}")
        self.outage_budget = float(budget)
        self.outage_backoff = float(backoff)
        self.sleep = sleep
        self.sink: WarehouseSink | None = None
        self.shared = False  # the sink is the thread's shared one (not closed at teardown)

        def counter(what: str) -> Any:
            return Metrics.counter(METRICS_NAMESPACE, counters.warehouse_counter(table, what))

        self.inserted = counter("inserted")
        self.duplicates = counter("duplicates")
        self.rejected = counter(counters.REJECTED)
        self.batches = counter("batches")
        self.write_retries = counter("write_retries")
        self.transient_errors = counter("transient_errors")
        self.outage_seconds = counter("outage_seconds")

    def setup(self) -> None:
        if self.sink_factory is None:
            self.sink, self.shared = _shared_sink(self.settings, ensure=self.ensure), True
            return
        self.sink, self.shared = self.sink_factory(self.settings), False
        if self.ensure:
            self.sink.ensure()

    def process(self, batch: tuple[str, pa.Table]) -> Iterator[tuple[str, WriteResult]]:
        assert self.sink is not None
        batch_id, rows = batch
        if rows.num_rows == 0:
            return
        result = self._write(self.sink, rows)
        self.inserted.inc(result.inserted)
        self.duplicates.inc(result.duplicates)
        self.rejected.inc(result.rejected)
        self.batches.inc()
        yield batch_id, result

    def _write(self, sink: WarehouseSink, rows: pa.Table) -> WriteResult:
        """``sink.write``, repeated while it fails transiently, within the outage budget."""
        first_failure: float | None = None
        landed_before = 0  # rows acknowledged by failed attempts (the sink skips them on a repeat)
        repeats = 0
        pause = FIRST_PAUSE
        while True:
            errors_before = getattr(sink, "transient_errors", 0)
            try:
                result = sink.write(self.table, rows)
            except Exception as exc:
                self._count_sink_errors(sink, errors_before)
                if not is_transient_failure(exc):
                    raise
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                landed_before += int(getattr(exc, "inserted", 0) or 0)
                failing_for = now - first_failure
                if failing_for + pause > self.outage_budget:
                    log.error(
                        "warehouse: writing %d rows to %s has failed for %.0f s: past the outage budget "
                        "(%.0f s), failing the bundle: %s",
                        rows.num_rows,
                        self.table,
                        failing_for,
                        self.outage_budget,
                        exc,
                    )
                    raise
                repeats += 1
                self.write_retries.inc()
                log.warning(
                    "warehouse: %s unreachable for %.0f s (write repeat %d, %d of %d rows landed so "
                    "far); trying again in %.0f s, for up to %.0f s: %s",
                    self.table,
                    failing_for,
                    repeats,
                    landed_before,
                    rows.num_rows,
                    pause,
                    self.outage_budget,
                    exc,
                )
                self.sleep(pause)
                pause = min(pause * 2, self.outage_backoff)
                continue
            self._count_sink_errors(sink, errors_before)
            return self._recovered(result, rows.num_rows, first_failure, repeats, landed_before)

    def _recovered(
        self, result: WriteResult, rows: int, first_failure: float | None, repeats: int, landed_before: int
    ) -> WriteResult:
        """Log and count the end of an outage; rows landed by failed attempts count as inserted."""
        if first_failure is not None:
            waited = time.monotonic() - first_failure
            self.outage_seconds.inc(round(waited))
            log.warning(
                "warehouse: %s writable again after %.0f s and %d repeats; %d rows of the batch written",
                self.table,
                waited,
                repeats,
                rows - result.rejected,
            )
        if landed_before:
            # Skipped on the repeat because an earlier attempt had landed them: inserted, not duplicates.
            moved = min(landed_before, result.duplicates)
            result = WriteResult(
                inserted=result.inserted + moved,
                duplicates=result.duplicates - moved,
                rejected=result.rejected,
                errors=result.errors,
            )
        return result

    def _count_sink_errors(self, sink: WarehouseSink, before: int) -> None:
        after = getattr(sink, "transient_errors", 0)
        if isinstance(after, int) and isinstance(before, int) and after > before:
            self.transient_errors.inc(after - before)

    def teardown(self) -> None:
        close = getattr(self.sink, "close", None)
        if callable(close) and not self.shared:
            close()
        self.sink = None


class WriteWarehouse(beam.PTransform):
    """Write ``(batch_id, pa.Table)`` batches of one warehouse table; emits ``(batch_id, WriteResult)``."""

    def __init__(
        self,
        settings: Any,
        table: str,
        *,
        sink_factory: SinkFactory | None = None,
        ensure: bool = True,
        outage_budget: float | None = None,
        outage_backoff: float | None = None,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self.fn = WriteWarehouseFn(
            settings,
            table,
            sink_factory=sink_factory,
            ensure=ensure,
            outage_budget=outage_budget,
            outage_backoff=outage_backoff,
        )

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "WriteBatches" >> beam.ParDo(self.fn)
