"""Delta writers: one commit per table per batch. Each DoFn opens the lake once per worker."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from vitals_lake import contract as c
from vitals_lake.config import LakeSettings
from vitals_lake.gold_upsert import derive_trends, upsert_gold_windows
from vitals_lake.lake import BatchMarker, Lake


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


class UpsertGoldFn(_LakeWriterFn):
    """Upsert the Gold windows that a batch of panes says have changed, recomputed from the lake
    (:func:`upsert_gold_windows`)."""

    def __init__(self, lake: LakeSettings) -> None:
        super().__init__(lake)
        self.rows = Metrics.counter("lake", "gold_rows_upserted")

    def process(self, batch: tuple[str, list[pa.Table]]) -> Iterator[tuple[str, pa.Table]]:
        assert self.lake is not None
        batch_id, changed = batch
        table = upsert_gold_windows(self.lake, pa.concat_tables(changed), batch_id=batch_id)
        self.rows.inc(table.num_rows)
        yield batch_id, table


class DeriveTrendsFn(_LakeWriterFn):
    """After a Gold commit: recompute the per-diagnosis hours and the rolling averages it touched."""

    def process(self, batch: tuple[str, pa.Table]) -> Iterator[None]:
        assert self.lake is not None
        batch_id, gold = batch
        derive_trends(self.lake, gold, batch_id=batch_id)
        return iter(())
