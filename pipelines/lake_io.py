"""Delta writers: one commit per table per batch. Each DoFn opens the lake once per worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from vitals_lake import contract as c
from vitals_lake.config import LakeSettings
from vitals_lake.lake import BatchMarker, Lake, one_per_key
from vitals_lake.summaries import gold_table


class _LakeWriterFn(beam.DoFn):
    def __init__(self, lake: LakeSettings) -> None:
        self.settings = lake
        self.lake: Lake | None = None

    def setup(self) -> None:
        self.lake = Lake(self.settings)


class AppendFn(_LakeWriterFn):
    """Append a batch of rows to one table (Bronze, quarantine)."""

    def __init__(self, lake: LakeSettings, layer: c.Layer) -> None:
        super().__init__(lake)
        self.layer: c.Layer = layer
        self.rows = Metrics.counter("lake", f"{layer}_rows")
        self.commits = Metrics.counter("lake", f"{layer}_commits")

    def process(self, batch: tuple[str, pa.Table]) -> Iterator[None]:
        assert self.lake is not None
        batch_id, rows = batch
        # A retried bundle re-offers the same batch: its marker makes the second commit a no-op.
        if self.lake.append(self.layer, rows, marker=BatchMarker(self.layer, batch_id)):
            self.rows.inc(rows.num_rows)
            self.commits.inc()
        return iter(())


class InsertSilverFn(_LakeWriterFn):
    """Insert the batch's readings not seen before (by event_id) and log the commit; emit the new rows."""

    def __init__(self, lake: LakeSettings, horizon: timedelta) -> None:
        super().__init__(lake)
        self.horizon = horizon
        self.inserted = Metrics.counter("lake", "silver_rows")
        self.duplicates = Metrics.counter("lake", "duplicates_removed")

    def process(self, batch: tuple[str, pa.Table]) -> Iterator[pa.Table]:
        assert self.lake is not None
        batch_id, rows = batch
        result, fresh = self.lake.insert_new(
            "silver",
            rows,
            key=c.EVENT_ID,
            time_column=c.TIMESTAMP,
            horizon=self.horizon,
            marker=BatchMarker("silver", batch_id),
        )
        if result.offered and not result.replayed:
            log_row = {
                c.BATCH_ID: [batch_id],
                c.VALID_ROWS: [result.offered],
                c.INSERTED_ROWS: [result.inserted],
                c.DUPLICATE_ROWS: [result.duplicates],
                c.COMMITTED_AT: pa.array([time.time_ns() // 1000], pa.int64()).cast(
                    pa.timestamp("us", tz="UTC")
                ),
            }
            self.lake.append(
                "silver_commits",
                pa.table(log_row, schema=c.SILVER_COMMITS_SCHEMA),
                marker=BatchMarker("silver_commits", batch_id),
            )
        self.inserted.inc(result.inserted)
        self.duplicates.inc(result.duplicates)
        if fresh.num_rows:
            yield fresh


class UpsertGoldFn(_LakeWriterFn):
    """Insert or replace Gold rows; of several panes for one window in a batch the fullest wins."""

    def __init__(self, lake: LakeSettings) -> None:
        super().__init__(lake)
        self.rows = Metrics.counter("lake", "gold_rows_upserted")

    def process(self, batch: tuple[str, list[dict[str, Any]]]) -> Iterator[None]:
        assert self.lake is not None
        batch_id, rows = batch
        table = gold_table(rows).sort_by([(c.READING_COUNT, "descending"), (c.UPDATED_AT, "descending")])
        table = one_per_key(table, c.GOLD_KEY)
        self.lake.upsert(
            "gold", table, keys=c.GOLD_KEY, time_column=c.WINDOW_START, marker=BatchMarker("gold", batch_id)
        )
        self.rows.inc(table.num_rows)
        return iter(())
