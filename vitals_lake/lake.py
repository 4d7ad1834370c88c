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

import functools
import logging
import operator
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Field,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler
from pyarrow.fs import FileType

from vitals_lake import catalogue
from vitals_lake import contract as c
from vitals_lake.config import LakeSettings
from vitals_lake.masks import first_appearances

CHECKPOINT_INTERVAL: Final = 10
# A table object kept open is loaded afresh (from the newest checkpoint) once it has moved this many
# versions past the one it was loaded at. delta-rs's object replays every commit it has seen since it
# was loaded, on each write: appends through one object took 13 ms each after 100 commits and 76 ms
# after 600; reloaded every 10 versions, 10 to 17 ms (tests/unit/test_lake.py, ``growth``).
REOPEN_AFTER_VERSIONS: Final = CHECKPOINT_INTERVAL
MERGE_ATTEMPTS: Final = 6
# Log files past their retention are cleaned up by maintenance (``cleanup_metadata``, daily), not by
# the writer after every checkpoint: that clean-up lists the whole ``_delta_log`` (7 days of commits),
# so a stream's commit cost grew with the log. One-row commits, 1,500 in a row: 6.1 ms each at first
# and 15.8 ms by the end with it, 4.3 and 7.1 ms without it. Set on tables created before, too.
_COMMIT_COST_CONFIG: Final = {"delta.enableExpiredLogCleanup": "false"}
_TABLE_CONFIG: Final = {
    "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
    "delta.logRetentionDuration": "interval 7 days",
    # Batch markers (application transactions) only need to outlive a retried bundle of the same run
    # (a restart is a new run id): a day is ample. Every checkpoint carries the markers it keeps, and
    # every writer reads a checkpoint when it opens the table (100,000 markers: 32 ms an open).
    "delta.setTransactionRetentionDuration": "interval 1 days",
    **_COMMIT_COST_CONFIG,
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
class TimeSpan:
    """Rows whose ``column`` lies within ``[lo, hi]`` (``hi`` None: no upper bound).

    A span selects files before any is opened: date partitions (when ``column`` dates the table),
    hour partitions (when it also lays the table out by hour and the span lies within one date) and
    the files' min/max statistics. Building a scan costs per file listed, so a time-bounded read or
    MERGE costs what its span holds, however old the table is.
    """

    column: str
    lo: datetime
    hi: datetime | None = None

    @classmethod
    def of(cls, rows: pa.Table, column: str, *, margin: timedelta = timedelta(0)) -> TimeSpan:
        """The span of ``rows[column]``, widened by ``margin`` on both sides."""
        return cls(column, pc.min(rows[column]).as_py() - margin, pc.max(rows[column]).as_py() + margin)

    def files(self, spec: c.TableSpec, *, hourly: bool) -> list[tuple[str, str, Any]]:
        """Delta's file-pruning filters: partition values exactly, other columns by statistics
        (``hourly``: the table has the hour layout column)."""
        dated = spec.dated_by == self.column and c.EVENT_DATE in spec.partition_by
        bounds: list[tuple[str, str, Any]] = [(self.column, ">=", self.lo)]
        if dated:
            bounds.append((c.EVENT_DATE, ">=", self.lo.date()))
        if self.hi is None:
            return bounds
        bounds.append((self.column, "<=", self.hi))
        if dated:
            bounds.append((c.EVENT_DATE, "<=", self.hi.date()))
            if hourly and spec.hour_of == self.column and self.lo.date() == self.hi.date():
                bounds += [(c.EVENT_HOUR, ">=", self.lo.hour), (c.EVENT_HOUR, "<=", self.hi.hour)]
        return bounds

    def rows(self, spec: c.TableSpec) -> pc.Expression:
        """The row filter (the layout column is not in a scan's schema, so no hour bounds)."""
        terms = [
            (pc.field(column) >= bound) if op == ">=" else (pc.field(column) <= bound)
            for column, op, value in self.files(spec, hourly=False)
            for bound in [pa.scalar(value, spec.schema.field(column).type)]
        ]
        return functools.reduce(operator.and_, terms)

    def sql(self, spec: c.TableSpec, *, hourly: bool, alias: str) -> str:
        """The span as a MERGE predicate on the table aliased ``alias``."""

        def literal(value: object) -> str:
            if isinstance(value, datetime):
                return _ts(value)
            return f"'{value.isoformat()}'" if isinstance(value, date) else str(value)

        return " AND ".join(
            f"{alias}.{column} {op} {literal(value)}" for column, op, value in self.files(spec, hourly=hourly)
        )


@dataclass(frozen=True)
class InsertResult:
    offered: int  # rows handed in
    inserted: int  # rows that were new
    duplicates: int  # rows already in the table or repeated within the batch
    replayed: bool = False  # the whole batch had been committed before: nothing was written


# A commit file as last seen: (version, size, modification time). Another table under the same path
# (deleted and created again) has another file at that version, or none.
_Stamp = tuple[int, int | None, int | None]


@dataclass
class _Kept:
    table: DeltaTable
    log: DeltaStorageHandler
    stamp: _Stamp | None
    opened_at: int  # the version it was loaded at: what it has replayed since grows with every commit


class _OpenTables(threading.local):
    """The tables one thread of one process has open."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.tables: dict[c.Layer, _Kept] = {}

    def mine(self) -> dict[c.Layer, _Kept]:
        if self.pid != os.getpid():  # a forked child: the parent's clients belong to its runtime
            self.pid, self.tables = os.getpid(), {}
        return self.tables


log = logging.getLogger(__name__)


class SchemaEvolutionError(RuntimeError):
    """A table differs from the contract in a way adding nullable columns cannot fix."""


class Lake:
    """All Delta tables of one lake (a local directory or a ``gs://`` prefix).

    A table is opened once per thread and then kept up to date (``_open``): opening afresh reads the
    last checkpoint, every live file and batch marker, which grows with the table. It is loaded afresh
    every ``REOPEN_AFTER_VERSIONS`` versions, whose cost grows with the commits an open object has seen.
    """

    def __init__(self, settings: LakeSettings) -> None:
        self.settings = settings
        self._open_tables = _OpenTables()
        self._evolved: set[c.Layer] = set()  # tables checked against the contract by this process

    def __getstate__(self) -> dict[str, Any]:
        # Open tables belong to this process and thread: a pickled Lake (a DoFn, a worker) opens its own.
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings = state["settings"]
        self._open_tables = _OpenTables()
        self._evolved = set()

    def uri(self, layer: c.Layer) -> str:
        return self.settings.table_uri(c.TABLES[layer].name)

    def _open(self, layer: c.Layer) -> DeltaTable:
        """The table at its latest version; raises ``TableNotFoundError`` if there is none.

        A table this thread had open is brought up to date with the commits since
        (``update_incremental``: about 1 ms locally, against 1-6 ms for a fresh open of a 6-hour
        table, growing with its files), until it has moved ``REOPEN_AFTER_VERSIONS`` past the version
        it was loaded at: then it is loaded afresh, so a commit costs the same after a day of commits
        as after ten. First the commit file of the version it knows is looked up
        (one metadata request): a table deleted and created again under the same path has another
        file there, or none, and is opened afresh; so is one whose log was cleaned up past it.
        """
        tables = self._open_tables.mine()
        kept = tables.get(layer)
        if kept is not None:
            current = kept.stamp is not None and _stamp(kept.log, kept.stamp[0]) == kept.stamp
            if current and kept.table.version() - kept.opened_at < REOPEN_AFTER_VERSIONS:
                kept.table.update_incremental()
                return self._keep(layer, kept.table)
            del tables[layer]
        return self._keep(layer, DeltaTable(self.uri(layer), storage_options=self.settings.storage_options))

    def _keep(self, layer: c.Layer, dt: DeltaTable) -> DeltaTable:
        """Remember ``dt`` (after opening it or committing through it) with its latest commit file."""
        tables = self._open_tables.mine()
        kept = tables.get(layer)
        if kept is None or kept.table is not dt:
            log = DeltaStorageHandler(self.uri(layer), self.settings.storage_options or None)
            kept = tables[layer] = _Kept(dt, log, None, opened_at=dt.version())
        if kept.stamp is None or kept.stamp[0] != dt.version():
            kept.stamp = _stamp(kept.log, dt.version())
        return dt

    def ensure(self, layer: c.Layer) -> DeltaTable:
        """Open the table, creating it empty (schema, partitioning, checkpoint interval) if missing."""
        spec = c.TABLES[layer]
        opts = self.settings.storage_options
        try:
            dt = self._open(layer)
        except TableNotFoundError:
            # mode="ignore" makes two writers racing to create the table both succeed.
            created = DeltaTable.create(
                self.uri(layer),
                schema=spec.lake_schema,
                mode="ignore",
                partition_by=list(spec.lake_partition_by) or None,
                name=spec.name,
                description=catalogue.table_description(spec.name),
                configuration=_TABLE_CONFIG,
                storage_options=opts,
            )
            self._evolved.add(layer)
            return self._keep(layer, created)
        return dt if layer in self._evolved else self._evolve(layer, dt)

    def _evolve(self, layer: c.Layer, dt: DeltaTable) -> DeltaTable:
        """Bring a table an older version created up to the contract: add the columns the contract has
        gained since (additive evolution: new columns must be nullable; the rows already stored read
        them as null). Adding a column that another writer has just added is harmless (Delta keeps one).
        A column that is missing and required, whose type changed, or that the contract no longer has
        (patient_id of the alerts and the rolling means, dropped for minimum necessary) is not
        additive: it raises."""
        spec = c.TABLES[layer]
        have = pa.schema(dt.schema().to_arrow())
        # The contract's columns, not the layout's: a table created before the hour level has no
        # event_hour and keeps its layout (see _hourly).
        missing = [f for f in spec.schema if f.name not in have.names]
        changed = [
            f"{f.name}: {have.field(f.name).type} in the table, {f.type} in the contract"
            for f in spec.schema
            if f.name in have.names and have.field(f.name).type != f.type
        ]
        required = [f.name for f in missing if not f.nullable]
        dropped = [n for n in have.names if n not in spec.lake_schema.names]
        if changed or required or dropped:
            raise SchemaEvolutionError(
                f"{spec.name} cannot follow the contract by adding columns: "
                + "; ".join(
                    [
                        *changed,
                        *(f"{n}: new and required" for n in required),
                        *(f"{n}: no longer in the contract" for n in dropped),
                    ]
                )
                + " (rebuild it from Bronze into a new lake: docs/schema-evolution.md)"
            )
        dt = self._reconcile_config(layer, dt)
        if missing:
            dt.alter.add_columns([Field.from_arrow(f) for f in missing])
            log.info(
                "%s: added the contract's new columns %s",
                spec.name,
                ", ".join(f.name for f in missing),
                extra={"fields": {"table": spec.name, "added_columns": [f.name for f in missing]}},
            )
            dt = self._open(layer)
        self._evolved.add(layer)
        return dt

    def _reconcile_config(self, layer: c.Layer, dt: DeltaTable) -> DeltaTable:
        """Give a table an older version created the properties that keep a commit's cost flat. It is
        an optimisation: a table that cannot be altered now (another writer's commit won) is written
        as it is and tried again by the next process."""
        have = dt.metadata().configuration
        wanted = {k: v for k, v in _COMMIT_COST_CONFIG.items() if have.get(k) != v}
        if not wanted:
            return dt
        try:
            dt.alter.set_table_properties(wanted, raise_if_not_exists=False)
        except CommitFailedError as exc:
            log.warning("%s: table properties %s not set (%s)", c.TABLES[layer].name, wanted, exc)
        return self._open(layer)

    def ensure_all(self, layers: Iterable[c.Layer] | None = None) -> None:
        """Create the given tables (default: all of the contract's) where they do not exist yet."""
        for layer in c.TABLES if layers is None else layers:
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
            writer_properties=writer_properties(spec),
        )
        self._keep(layer, dt)
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
        reads one column of the files in that span (``TimeSpan``), not the whole table. It relies on one
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
        span = TimeSpan.of(rows, time_column, margin=horizon)
        ours = pc.field(key).isin(rows[key].combine_chunks())
        known = _scan(dt, spec, columns=[key], span=span, where=ours)[key]
        fresh = (
            rows.filter(pc.invert(pc.is_in(rows[key], value_set=known.combine_chunks())))
            if len(known)
            else rows
        )
        if fresh.num_rows:
            write_deltalake(
                dt,
                _laid_out(dt, spec, fresh),
                mode="append",
                commit_properties=_props(marker),
                writer_properties=writer_properties(spec),
            )
            self._keep(layer, dt)
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
        span = TimeSpan.of(rows, time_column)
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        for attempt in range(1, MERGE_ATTEMPTS + 1):
            # A MERGE can lose to a concurrent rewrite of the same files (maintenance's z-order):
            # it is safe to run again on the new snapshot, so conflicts are retried.
            dt = self.ensure(layer)
            if marker and marker.committed(dt):
                return {}
            in_span = span.sql(spec, hourly=_hourly(dt, spec), alias="t")
            merger = (
                dt.merge(
                    _laid_out(dt, spec, rows),
                    predicate=f"{predicate} AND {in_span}",
                    source_alias="s",
                    target_alias="t",
                    commit_properties=_props(marker),
                    writer_properties=writer_properties(spec),
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
            )
            if replace_range:
                merger = merger.when_not_matched_by_source_delete(predicate=in_span)
            try:
                metrics = merger.execute()
                self._keep(layer, dt)
            except CommitFailedError:
                if attempt == MERGE_ATTEMPTS:
                    raise
                time.sleep(0.1 * attempt)
                continue
            return {k: int(v) for k, v in metrics.items() if k.startswith("num_") and isinstance(v, int)}
        return {}

    def read(
        self,
        layer: c.Layer,
        *,
        columns: list[str] | None = None,
        where: pc.Expression | None = None,
        span: TimeSpan | None = None,
    ) -> pa.Table:
        """Rows matching ``where`` (and within ``span``: pass one for any time-bounded read, so that
        only the partitions and files of the span are listed and opened)."""
        spec = c.TABLES[layer]
        try:
            dt = self._open(layer)
        except TableNotFoundError:
            empty = spec.schema.empty_table()
            return empty if columns is None else empty.select(columns)
        if columns is None and spec.hour_of is not None:
            columns = spec.schema.names  # the layout column stays in the lake
        return _scan(dt, spec, columns=columns, where=where, span=span)

    def count(self, layer: c.Layer) -> int:
        try:
            return int(self._open(layer).count())
        except TableNotFoundError:
            return 0

    def version(self, layer: c.Layer) -> int:
        try:
            return int(self._open(layer).version())
        except TableNotFoundError:
            return -1


def first_per_key(rows: pa.Table, key: str) -> pa.Table:
    """Keep the first row of each key, in arrival order (vectorised: one group_by)."""
    return one_per_key(rows, (key,), keep="first")


def one_per_key(
    rows: pa.Table, keys: tuple[str, ...], *, keep: Literal["first", "last"] = "first"
) -> pa.Table:
    """Keep one row per combination of ``keys``: the first (or last) in table order."""
    n = rows.num_rows
    if n == 0:
        return rows
    if keep == "last":  # the first of each key in the reversed rows
        backwards = pa.array(np.arange(n - 1, -1, -1))
        kept = np.flatnonzero(_first_of_each(rows.select(list(keys)).take(backwards), keys))
        return rows if len(kept) == n else rows.take(pa.array(n - 1 - kept[::-1]))
    first = _first_of_each(rows, keys)
    return rows if first.all() else rows.filter(pa.array(first))


def _first_of_each(rows: pa.Table, keys: tuple[str, ...]) -> np.ndarray:
    """Mask of the rows that are their key's first (``masks.first_appearances``; several keys: each
    row's pair of key numbers numbered again)."""
    combined = rows[keys[0]]
    for key in keys[1:]:  # the pair of numbers numbered again, so they stay small
        codes, _ = _key_codes(combined)
        more, distinct = _key_codes(rows[key])
        combined = pa.array(codes * distinct + more)
    return first_appearances(combined)


def _key_codes(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """(a number per row, in order of first appearance; how many distinct), null a key of its own."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()  # one dictionary for all the rows
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    return np.asarray(encoded.indices, dtype=np.int64), len(encoded.dictionary)


_PAYLOAD_FILES: Final = WriterProperties(
    compression="ZSTD",
    compression_level=1,
    default_column_properties=ColumnProperties(dictionary_enabled=False),
)


_COLUMN_FILES: Final = WriterProperties(compression="SNAPPY")  # what delta-rs writes without properties


def writer_properties(spec: c.TableSpec) -> WriterProperties:
    """How the table's Parquet files are written."""
    return _PAYLOAD_FILES if spec.holds == "payloads" else _COLUMN_FILES


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


def _stamp(log: DeltaStorageHandler, version: int) -> _Stamp | None:
    info = log.get_file_info([f"_delta_log/{version:020d}.json"])[0]
    return None if info.type == FileType.NotFound else (version, info.size, info.mtime_ns)


def _scan(
    dt: DeltaTable,
    spec: c.TableSpec,
    *,
    columns: list[str] | None,
    where: pc.Expression | None,
    span: TimeSpan | None,
) -> pa.Table:
    files = span.files(spec, hourly=_hourly(dt, spec)) if span else None
    if span:
        where = span.rows(spec) if where is None else span.rows(spec) & where
    # Arrow's scanner threads can abort the interpreter at exit (apache/arrow#34314): scan inline.
    dataset = dt.to_pyarrow_dataset(file_pruning_predicate=files)
    try:
        return dataset.to_table(columns=columns, filter=where, use_threads=False)
    except pa.ArrowNotImplementedError:
        if where is None:
            raise
    # Files that delta-rs rewrote (DELETE, MERGE) store strings as string_view, and Arrow binds a
    # pushed-down string comparison to the file's type, which it has no kernel for. Filter after the
    # scan instead: the rows arrive in the table's types.
    rows = dataset.to_table(filter=span.rows(spec) if span else None, use_threads=False).filter(where)
    return rows.select(columns) if columns is not None else rows


def _ts(value: datetime) -> str:
    return f"'{value.isoformat()}'::timestamp"
