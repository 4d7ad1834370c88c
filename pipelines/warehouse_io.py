"""Warehouse writers: ``(batch_id, pa.Table)`` batches of one warehouse table through a WarehouseSink.

    gold_batches | "Gold to BigQuery" >> WriteWarehouse(BigQuerySettings.from_env(), c.GOLD_TABLE)

Each DoFn instance builds one sink in ``setup()`` (a client per worker thread, not per element),
creates the tables once (``ensure()``, idempotent) and closes the sink in ``teardown()``. Which sink
is decided by :func:`open_sink` from the settings, so the same transform writes BigQuery
(:class:`~vitals_lake.warehouse.settings.BigQuerySettings`) or anything else given a factory
(``sink_factory=``: a picklable callable from the settings to a WarehouseSink, e.g. the DuckDB
warehouse). Every row of a batch ends in exactly one counter (namespace ``warehouse``):
``<table>_inserted``, ``<table>_duplicates`` (recognised by insert id) or ``<table>_rejected``
(refused by the warehouse, now in its dead-letter table).

A sink that raises (the warehouse unreachable past its retry deadline) fails the bundle, and the
runner retries it: the insert ids are deterministic, so rows that did land are recognised again.
The transform emits ``(batch_id, WriteResult)`` per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from vitals_lake.warehouse.bigquery import BigQuerySink
from vitals_lake.warehouse.settings import BigQuerySettings
from vitals_lake.warehouse.sink import WarehouseSink, WriteResult
from vitals_lake.warehouse.tables import WAREHOUSE_TABLES

SinkFactory = Callable[[Any], WarehouseSink]
METRICS_NAMESPACE = "warehouse"


def open_sink(settings: Any) -> WarehouseSink:
    """The sink for a settings object: BigQuerySettings -> BigQuerySink."""
    if isinstance(settings, BigQuerySettings):
        return BigQuerySink(settings)
    raise TypeError(
        f"no warehouse sink for settings of type {type(settings).__name__}: "
        "pass sink_factory= to WriteWarehouse"
    )


class WriteWarehouseFn(beam.DoFn):
    def __init__(
        self, settings: Any, table: str, *, sink_factory: SinkFactory | None = None, ensure: bool = True
    ) -> None:
        if table not in WAREHOUSE_TABLES:
            raise ValueError(f"unknown warehouse table {table!r}: one of {', '.join(WAREHOUSE_TABLES)}")
        self.settings = settings
        self.table = table
        self.sink_factory = sink_factory
        self.ensure = ensure
        self.sink: WarehouseSink | None = None
        self.inserted = Metrics.counter(METRICS_NAMESPACE, f"{table}_inserted")
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, f"{table}_duplicates")
        self.rejected = Metrics.counter(METRICS_NAMESPACE, f"{table}_rejected")
        self.batches = Metrics.counter(METRICS_NAMESPACE, f"{table}_batches")

    def setup(self) -> None:
        factory = self.sink_factory or open_sink
        self.sink = factory(self.settings)
        if self.ensure:
            self.sink.ensure()

    def process(self, batch: tuple[str, pa.Table]) -> Iterator[tuple[str, WriteResult]]:
        assert self.sink is not None
        batch_id, rows = batch
        if rows.num_rows == 0:
            return
        result = self.sink.write(self.table, rows)
        self.inserted.inc(result.inserted)
        self.duplicates.inc(result.duplicates)
        self.rejected.inc(result.rejected)
        self.batches.inc()
        yield batch_id, result

    def teardown(self) -> None:
        close = getattr(self.sink, "close", None)
        if callable(close):
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
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self.fn = WriteWarehouseFn(settings, table, sink_factory=sink_factory, ensure=ensure)

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "WriteBatches" >> beam.ParDo(self.fn)
