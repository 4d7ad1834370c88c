"""The Delta Lake tables, written with delta-rs: create, append, de-duplicating insert, upsert, read.

Commit cost dominates delta-rs writes, not rows (about 10-50 ms per commit), so callers hand over
whole batches: one commit per table per interval, never per reading. Tables are partitioned by date,
never by patient (partitioning by patient_id wrote ~445 files for one 500-row append; see
docs/design.md), and checkpointed every ``CHECKPOINT_INTERVAL`` commits so the log stays cheap to
replay. Upserted tables (Gold, rolling means) are partitioned by hour under the date as well (Gold by
window length too): a MERGE rewrites every file that holds a matched row, so with date partitions
alone each upsert rewrote the whole day.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from vitals_lake import contract as c
from vitals_lake.config import LakeSettings

CHECKPOINT_INTERVAL: Final = 10
MERGE_ATTEMPTS: Final = 6
_TABLE_CONFIG: Final = {
    "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
    "delta.logRetentionDuration": "interval 7 days",
    # Batch markers (application transactions) only need to outlive a retried bundle of the same run
    # (a restart is a new run id): a day is ample. Every checkpoint carries the markers it keeps, and
    # every writer reads a checkpoint when it opens the table (100,000 markers: 32 ms an open).
    "delta.setTransactionRetentionDuration": "interval 1 days",
}


@dataclass(frozen=True)
class BatchMarker:
    """Marks one batch's commit to one table, so that writing the same batch again is a no-op.

    Each batch gets its own application id (``writer:batch``) rather than a rising version per
    writer: Beam may commit windows out of order, and "version <= last seen" would then skip a
    retried older batch that never landed.
    """

    writer: str
    batch_id: str
    # When the marker was written (ms since the epoch; default: now). Delta expires a marker after the
    # table's retention only if it carries this time: without it, markers were kept forever and every
    # open of a table read all the batches it had ever committed.
    written_at_ms: int | None = None

    @property
    def app_id(self) -> str:
        return f"{self.writer}:{self.batch_id}"

    def committed(self, dt: DeltaTable) -> bool:
        return dt.transaction_version(self.app_id) is not None

    def properties(self) -> CommitProperties:
        at = self.written_at_ms if self.written_at_ms is not None else time.time_ns() // 1_000_000
        marker = Transaction(app_id=self.app_id, version=1, last_updated=at)
        return CommitProperties(app_transactions=[marker])


def _props(marker: BatchMarker | None) -> CommitProperties | None:
    return marker.properties() if marker else None


@dataclass(frozen=True)
class InsertResult:
    offered: int  # rows handed in
    inserted: int  # rows that were new
    duplicates: int  # rows already in the table or repeated within the batch
    replayed: bool = False  # the whole batch had been committed before: nothing was written


class Lake:
    """All Delta tables of one lake (a local directory or a ``gs://`` prefix)."""

    def __init__(self, settings: LakeSettings) -> None:
        self.settings = settings

    def uri(self, layer: c.Layer) -> str:
        return self.settings.table_uri(c.TABLES[layer].name)

    def ensure(self, layer: c.Layer) -> DeltaTable:
        """Open the table, creating it empty (schema, partitioning, checkpoint interval) if missing."""
        spec = c.TABLES[layer]
        opts = self.settings.storage_options
        try:
            return DeltaTable(self.uri(layer), storage_options=opts)
        except TableNotFoundError:
            # mode="ignore" makes two writers racing to create the table both succeed.
            return DeltaTable.create(
                self.uri(layer),
                schema=spec.lake_schema,
                mode="ignore",
                partition_by=list(spec.lake_partition_by) or None,
                name=spec.name,
                configuration=_TABLE_CONFIG,
                storage_options=opts,
            )

    def ensure_all(self) -> None:
        for layer in c.TABLES:
            self.ensure(layer)

    def exists(self, layer: c.Layer) -> bool:
        return DeltaTable.is_deltatable(self.uri(layer), storage_options=self.settings.storage_options)

    def append(self, layer: c.Layer, rows: pa.Table, *, marker: BatchMarker | None = None) -> bool:
        """Append rows in one commit; False when ``marker`` says this batch is already in the table."""
        if rows.num_rows == 0:
            return False
        spec = c.TABLES[layer]
        dt = self.ensure(layer)
        if marker and marker.committed(dt):
            return False
        write_deltalake(
            dt,
            _laid_out(dt, spec, rows.select(spec.schema.names).cast(spec.schema)),
            mode="append",
            commit_properties=_props(marker),
        )
        return True

    def insert_new(
        self,
        layer: c.Layer,
        rows: pa.Table,
        *,
        key: str,
        time_column: str,
        horizon: timedelta,
        marker: BatchMarker | None = None,
    ) -> tuple[InsertResult, pa.Table]:
        """Append the rows whose ``key`` is not yet in the table; return the counts and the new rows.

        Duplicates are looked for within ``horizon`` of the batch's own time range, so the check
        reads one column of the files in those date partitions, not the whole table. It relies on one
        writer per key shard (the pipeline shards commits by key), so no MERGE is needed.
        """
        offered = rows.num_rows
        if offered == 0:
            return InsertResult(0, 0, 0), rows
        spec = c.TABLES[layer]
        rows = first_per_key(rows, key).select(spec.schema.names).cast(spec.schema)
        dt = self.ensure(layer)
        if marker and marker.committed(dt):
            return InsertResult(offered, 0, 0, replayed=True), rows.slice(0, 0)
        time_type = spec.schema.field(time_column).type
        lo = pc.min(rows[time_column]).as_py() - horizon
        hi = pc.max(rows[time_column]).as_py() + horizon
        condition = (
            (pc.field(time_column) >= pa.scalar(lo, time_type))
            & (pc.field(time_column) <= pa.scalar(hi, time_type))
            & pc.field(key).isin(rows[key].combine_chunks())
        )
        if c.EVENT_DATE in spec.partition_by:
            condition &= (pc.field(c.EVENT_DATE) >= pa.scalar(lo.date(), pa.date32())) & (
                pc.field(c.EVENT_DATE) <= pa.scalar(hi.date(), pa.date32())
            )
        known = (
            dt.to_pyarrow_dataset().to_table(columns=[key], filter=condition, use_threads=False).column(key)
        )
        fresh = (
            rows.filter(pc.invert(pc.is_in(rows[key], value_set=known.combine_chunks())))
            if len(known)
            else rows
        )
        if fresh.num_rows:
            write_deltalake(dt, _laid_out(dt, spec, fresh), mode="append", commit_properties=_props(marker))
        return InsertResult(offered, fresh.num_rows, offered - fresh.num_rows), fresh

    def upsert(
        self,
        layer: c.Layer,
        rows: pa.Table,
        *,
        keys: tuple[str, ...],
        time_column: str,
        marker: BatchMarker | None = None,
        replace_range: bool = False,
    ) -> dict[str, int]:
        """Insert or replace rows by ``keys`` (bounded by the batch's ``time_column`` range).

        ``replace_range``: target rows inside that range that the batch does not have are deleted,
        so the batch becomes the whole truth for its range (one atomic MERGE).
        """
        if rows.num_rows == 0:
            return {}
        spec = c.TABLES[layer]
        rows = rows.select(spec.schema.names).cast(spec.schema)
        lo = pc.min(rows[time_column]).as_py()
        hi = pc.max(rows[time_column]).as_py()
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        predicate += f" AND t.{time_column} >= {_ts(lo)} AND t.{time_column} <= {_ts(hi)}" + _date_bounds(
            spec, lo, hi
        )
        for attempt in range(1, MERGE_ATTEMPTS + 1):
            # A MERGE can lose to a concurrent rewrite of the same files (maintenance's z-order):
            # it is safe to run again on the new snapshot, so conflicts are retried.
            dt = self.ensure(layer)
            if marker and marker.committed(dt):
                return {}
            source = _laid_out(dt, spec, rows)
            hourly = c.EVENT_HOUR in source.column_names
            merger = (
                dt.merge(
                    source,
                    predicate=predicate + (_hour_bounds(spec, rows) if hourly else ""),
                    source_alias="s",
                    target_alias="t",
                    commit_properties=_props(marker),
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
            )
            if replace_range:
                in_range = f"t.{time_column} >= {_ts(lo)} AND t.{time_column} <= {_ts(hi)}"
                merger = merger.when_not_matched_by_source_delete(
                    predicate=in_range + _date_bounds(spec, lo, hi)
                )
            try:
                metrics = merger.execute()
            except CommitFailedError:
                if attempt == MERGE_ATTEMPTS:
                    raise
                time.sleep(0.1 * attempt)
                continue
            return {k: int(v) for k, v in metrics.items() if k.startswith("num_") and isinstance(v, int)}
        return {}

    def read(
        self, layer: c.Layer, *, columns: list[str] | None = None, where: pc.Expression | None = None
    ) -> pa.Table:
        if not self.exists(layer):
            return (
                c.TABLES[layer].schema.empty_table()
                if columns is None
                else c.TABLES[layer].schema.empty_table().select(columns)
            )
        dt = DeltaTable(self.uri(layer), storage_options=self.settings.storage_options)
        if columns is None and c.TABLES[layer].hour_of is not None:
            columns = c.TABLES[layer].schema.names  # the layout column stays in the lake
        # Arrow's scanner threads can abort the interpreter at exit (apache/arrow#34314): scan inline.
        return dt.to_pyarrow_dataset().to_table(columns=columns, filter=where, use_threads=False)

    def count(self, layer: c.Layer) -> int:
        if not self.exists(layer):
            return 0
        dt = DeltaTable(self.uri(layer), storage_options=self.settings.storage_options)
        return int(dt.count())

    def version(self, layer: c.Layer) -> int:
        if not self.exists(layer):
            return -1
        return int(DeltaTable(self.uri(layer), storage_options=self.settings.storage_options).version())


def first_per_key(rows: pa.Table, key: str) -> pa.Table:
    """Keep the first row of each key, in arrival order (vectorised: one group_by)."""
    return one_per_key(rows, (key,), keep="first")


def one_per_key(
    rows: pa.Table, keys: tuple[str, ...], *, keep: Literal["first", "last"] = "first"
) -> pa.Table:
    """Keep one row per combination of ``keys``: the first (or last) in table order."""
    if rows.num_rows == 0:
        return rows
    numbered = rows.append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
    agg = "min" if keep == "first" else "max"
    firsts = numbered.group_by(list(keys), use_threads=False).aggregate([("__row", agg)])[f"__row_{agg}"]
    if len(firsts) == rows.num_rows:
        return rows
    return rows.take(pc.take(firsts, pc.sort_indices(firsts)))


def _hourly(dt: DeltaTable, spec: c.TableSpec) -> bool:
    """Whether this table is laid out by hour (tables created before the hour level was added are not)."""
    return spec.hour_of is not None and c.EVENT_HOUR in dt.metadata().partition_columns


def _laid_out(dt: DeltaTable, spec: c.TableSpec, rows: pa.Table) -> pa.Table:
    """``rows`` (contract schema) with the table's layout column, if it has one."""
    if not _hourly(dt, spec):
        return rows
    assert spec.hour_of is not None
    return rows.append_column(
        pa.field(c.EVENT_HOUR, pa.int8(), nullable=False), pc.hour(rows[spec.hour_of]).cast(pa.int8())
    )


def _hour_bounds(spec: c.TableSpec, rows: pa.Table) -> str:
    """Literal bounds on the hour partition column (only when the rows lie within one date: the date
    bounds prune the rest)."""
    assert spec.hour_of is not None
    lo, hi = pc.min(rows[spec.hour_of]).as_py(), pc.max(rows[spec.hour_of]).as_py()
    if lo.date() != hi.date():
        return ""
    return f" AND t.{c.EVENT_HOUR} >= {lo.hour} AND t.{c.EVENT_HOUR} <= {hi.hour}"


def _ts(value: datetime) -> str:
    return f"'{value.isoformat()}'::timestamp"


def _date_bounds(spec: c.TableSpec, lo: datetime, hi: datetime) -> str:
    """Literal bounds on the date partition column so the MERGE prunes whole partitions."""
    if c.EVENT_DATE not in spec.partition_by:
        return ""
    col = f"t.{c.EVENT_DATE}"
    return f" AND {col} >= '{lo.date().isoformat()}' AND {col} <= '{hi.date().isoformat()}'"
