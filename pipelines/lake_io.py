"""Delta writers: one commit per table per batch. Each DoFn opens the lake once per worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from vitals_lake import contract as c
from vitals_lake.config import LakeSettings
from vitals_lake.gold_upsert import derive_diagnosis_hourly, upsert_gold_rows, upsert_rolling_rows
from vitals_lake.lake import BatchMarker, Lake
from vitals_lake.memory import retain_freed_memory


class _LakeWriterFn(beam.DoFn):
    def __init__(self, lake: LakeSettings) -> None:
        self.settings = lake
        self.lake: Lake | None = None

    def setup(self) -> None:
        retain_freed_memory()
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


class UpsertRowsFn(_LakeWriterFn):
    """The committer of one table: upsert the rows all shards computed in one commit interval (one
    MERGE per interval; the shards compute in parallel, the commit is serial so MERGEs never race)."""

    def __init__(self, lake: LakeSettings, layer: Literal["gold", "rolling"]) -> None:
        super().__init__(lake)
        self.layer: Literal["gold", "rolling"] = layer
        self.rows = Metrics.counter("lake", f"{layer}_rows_upserted")

    def process(self, batch: tuple[str, list[pa.Table]]) -> Iterator[tuple[str, pa.Table]]:
        assert self.lake is not None
        batch_id, tables = batch
        rows = pa.concat_tables(tables)
        if self.layer == "gold":
            written = upsert_gold_rows(self.lake, rows, batch_id=batch_id)
            self.rows.inc(written.num_rows)
            yield batch_id, written
        else:
            upsert_rolling_rows(self.lake, rows, batch_id=batch_id)
            self.rows.inc(rows.num_rows)


class DiagnosisHourlyFn(_LakeWriterFn):
    """After a Gold commit: recompute the per-diagnosis hours it touched."""

    def process(self, batch: tuple[str, pa.Table]) -> Iterator[None]:
        assert self.lake is not None
        batch_id, gold = batch
        derive_diagnosis_hourly(self.lake, gold, batch_id=batch_id)
        return iter(())
