"""Copy what changed in the lake's Delta tables into a warehouse, incrementally.

For each warehouse table (``WAREHOUSE_TABLES``) the lake table of the same name is read from the Delta
version synced last time up to its current version, by **file diff** of the two snapshots:

- rows to send = rows of the data files in the current snapshot that were not in the old one;
- minus rows whose insert id (key + version) is also in the files the new snapshot removed.

Why a file diff and not a watermark on ``updated_at``: Gold is upserted by MERGE, which rewrites
whole files, and several pipeline workers stamp ``updated_at`` *before* they commit, so commits can
land out of ``updated_at`` order; a watermark would then skip a row whose stamp is older than one
already synced. The Delta log, not a column, says what changed: every row written since the old
version is in an added file, whatever its timestamp. MERGE also rewrites the unchanged rows of a
touched file; those are found in the removed files with the same (key, version) and not sent again.
Compaction and z-order only move rows (net diff empty), and commits that are only OPTIMIZE/VACUUM are
skipped without reading. Delta's change data feed would do the same but is not enabled on the lake.

Anything that makes the diff impossible (first sync, another lake or a re-created table, an old
version whose log or files were cleaned up) falls back to sending the whole current table: correct,
because the sink skips rows whose insert id it has (DuckDB) and every view keeps one row per key
(BigQuery's insert-id de-duplication is best effort). Deletes are not propagated: the warehouses
append only (the lake deletes Gold rows only when a window loses all its readings).

The state (per table: lake URI, Delta table id, version) is saved after each table's rows are
written; a crash in between re-sends those rows next time, which the insert ids absorb. A
``DuckWarehouse`` keeps the state in its own ``_meta`` table, so it goes wherever the file goes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
from deltalake import DeltaTable

from vitals_lake import contract as c
from vitals_lake.lake import Lake
from warehouse.sink import WarehouseSink, WriteResult
from warehouse.tables import WAREHOUSE_TABLES, WarehouseTable

log = logging.getLogger(__name__)

CHUNK_ROWS: Final = 50_000  # rows per sink write
STATE_KEY: Final = "sync_state"
# Commits that never change the rows a reader sees.
_DATA_NEUTRAL: Final = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"})


@dataclass
class TableCursor:
    """How far one warehouse table has been synced from one Delta table."""

    uri: str
    table_id: str
    version: int


class StateStore(Protocol):
    def load(self) -> str | None: ...

    def save(self, text: str) -> None: ...


class JsonFileStore:
    """The state in a JSON file (replaced atomically)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> str | None:
        return self.path.read_text(encoding="utf-8") if self.path.is_file() else None

    def save(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.path)


class MetaStore:
    """The state in a warehouse's key/value meta table (``DuckWarehouse.get_meta/set_meta``)."""

    def __init__(self, get: Callable[[str], str | None], put: Callable[[str, str], None]) -> None:
        self._get, self._put = get, put

    def load(self) -> str | None:
        return self._get(STATE_KEY)

    def save(self, text: str) -> None:
        self._put(STATE_KEY, text)


@dataclass
class SyncState:
    """Per warehouse table, the Delta version synced; saved to ``store`` (None: kept in memory)."""

    tables: dict[str, TableCursor] = field(default_factory=dict)
    store: StateStore | None = None

    @classmethod
    def load(cls, store: StateStore) -> SyncState:
        text = store.load()
        doc = json.loads(text) if text else {}
        tables = {name: TableCursor(**cur) for name, cur in doc.get("tables", {}).items()}
        return cls(tables=tables, store=store)

    @classmethod
    def file(cls, path: str | Path) -> SyncState:
        return cls.load(JsonFileStore(path))

    def save(self) -> None:
        if self.store is not None:
            doc = {"tables": {name: asdict(cur) for name, cur in sorted(self.tables.items())}}
            self.store.save(json.dumps(doc, indent=2, sort_keys=True))


def state_for(sink: WarehouseSink) -> SyncState:
    """The state a sink keeps itself (DuckWarehouse: its meta table), else an in-memory one."""
    get, put = getattr(sink, "get_meta", None), getattr(sink, "set_meta", None)
    if callable(get) and callable(put):
        return SyncState.load(MetaStore(get, put))
    log.warning("%s keeps no sync state: every table is read whole", type(sink).__name__)
    return SyncState()


def lake_layer(table: str) -> c.Layer | None:
    """The lake layer whose Delta table feeds warehouse table ``table`` (None: the lake has none)."""
    for layer, spec in c.TABLES.items():
        if spec.name == table:
            return layer
    return None


def sync_lake(lake: Lake, sink: WarehouseSink, *, state: SyncState | None = None) -> dict[str, int]:
    """Copy the rows that changed in the lake since the last sync into ``sink``.

    Returns, per warehouse table, the rows the sink inserted (0 when nothing changed, the table is
    missing from the lake, or every row sent was a duplicate). Rows the sink rejects are in its
    dead-letter table and are not retried.
    """
    state = state if state is not None else state_for(sink)
    copied: dict[str, int] = {}
    for name, spec in WAREHOUSE_TABLES.items():
        copied[name] = 0
        layer = lake_layer(name)
        if layer is None:
            log.info("%s: the lake has no such table yet; skipped", name)
            continue
        if not lake.exists(layer):
            log.info("%s: %s does not exist yet; skipped", name, lake.uri(layer))
            continue
        uri, opts = lake.uri(layer), lake.settings.storage_options
        dt = DeltaTable(uri, storage_options=opts)
        cursor = TableCursor(uri=uri, table_id=str(dt.metadata().id), version=dt.version())
        last = state.tables.get(name)
        same_table = last is not None and (last.uri, last.table_id) == (cursor.uri, cursor.table_id)
        if last is not None and same_table and last.version == cursor.version:
            continue
        if last is not None and same_table and 0 <= last.version < cursor.version:
            rows = changed_rows(dt, spec, uri, opts, last.version)
        else:
            rows = _read(dt, None)
        result = write_chunks(sink, spec, conformed(rows, spec))
        copied[name] = result.inserted
        log.info(
            "%s: v%s -> v%d: %d inserted, %d duplicates, %d rejected",
            name,
            last.version if last is not None and same_table else "-",
            cursor.version,
            result.inserted,
            result.duplicates,
            result.rejected,
        )
        state.tables[name] = cursor
        state.save()
    return copied


def changed_rows(
    dt: DeltaTable, spec: WarehouseTable, uri: str, opts: dict[str, str], since: int
) -> pa.Table:
    """Rows of ``dt`` (current version) that were not in version ``since``, by file diff."""
    current = dt.version()
    try:
        operations = {h.get("operation") for h in dt.history(limit=current - since)}
        old = DeltaTable(uri, version=since, storage_options=opts)
    except Exception as exc:  # noqa: BLE001 - an expired log, a vacuumed checkpoint: read everything
        log.warning("%s: version %d is no longer readable (%s); reading the whole table", uri, since, exc)
        return _read(dt, None)
    if operations and operations <= _DATA_NEUTRAL:
        return _read(dt, set())
    now_files, old_files = _files(dt), _files(old)
    added, removed = now_files - old_files, old_files - now_files
    try:
        rows = _read(dt, added)
    except _MissingFiles as exc:  # never drop rows because a path did not match: read everything
        log.warning("%s: %s; reading the whole table", uri, exc)
        return _read(dt, None)
    if rows.num_rows == 0 or not removed:
        return rows
    columns = [*spec.key, *([spec.version] if spec.version else [])]
    try:
        before = conformed(_read(old, removed, columns=columns), spec, columns=columns)
    except Exception as exc:  # noqa: BLE001 - removed files already vacuumed: send them all again
        log.warning("%s: files removed since version %d are gone (%s); re-sending", uri, since, exc)
        return rows
    if before.num_rows == 0:
        return rows
    known = pa.array(spec.insert_ids(before), pa.string())
    ids = pa.array(spec.insert_ids(conformed(rows, spec, columns=columns)), pa.string())
    return rows.filter(pc.invert(pc.is_in(ids, value_set=known)))


def send(sink: WarehouseSink, table: str, rows: pa.Table) -> WriteResult:
    """Lake rows of ``table`` into the warehouse, conformed to its schema, in chunks: what the jobs
    outside the stream (recovery, the admissions loader) send."""
    spec = WAREHOUSE_TABLES[table]
    return write_chunks(sink, spec, conformed(rows, spec))


def write_chunks(sink: WarehouseSink, spec: WarehouseTable, rows: pa.Table) -> WriteResult:
    inserted = duplicates = rejected = 0
    errors: list[str] = []
    for start in range(0, rows.num_rows, CHUNK_ROWS):
        r = sink.write(spec.name, rows.slice(start, CHUNK_ROWS))
        inserted += r.inserted
        duplicates += r.duplicates
        rejected += r.rejected
        errors += [e for e in r.errors if e not in errors]
    return WriteResult(inserted=inserted, duplicates=duplicates, rejected=rejected, errors=errors)


def _files(dt: DeltaTable) -> set[str]:
    paths = pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist()
    return {unquote(p) for p in paths}


class _MissingFiles(RuntimeError):
    """Some data files named by the Delta log are not among the dataset's fragments."""


def _read(dt: DeltaTable, files: set[str] | None, *, columns: list[str] | None = None) -> pa.Table:
    """The rows of ``files`` (relative paths as in the log; None: the whole snapshot)."""
    dataset = dt.to_pyarrow_dataset()
    if files is not None:
        fragments = [f for f in dataset.get_fragments() if _relative(f.path, files) is not None]
        if len(fragments) != len(files):
            raise _MissingFiles(f"{len(files) - len(fragments)} of {len(files)} file(s) not in the snapshot")
        dataset = pds.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
    # Arrow's scanner threads can abort the interpreter at exit (apache/arrow#34314): scan inline.
    return dataset.to_table(columns=columns, use_threads=False)


def _relative(fragment_path: str, files: set[str]) -> str | None:
    """The log path a fragment reads (fragments may carry a bucket/table prefix, the log does not)."""
    path = unquote(fragment_path)
    if path in files:
        return path
    parts = path.split("/")
    for i in range(1, len(parts)):
        tail = "/".join(parts[i:])
        if tail in files:
            return tail
    return None


def conformed(rows: pa.Table, spec: WarehouseTable, *, columns: list[str] | None = None) -> pa.Table:
    """``rows`` with the warehouse schema's columns and types (files written by MERGE hold
    string_view; a lake table with extra columns keeps them out of the warehouse)."""
    names = columns if columns is not None else spec.schema.names
    out: dict[str, pa.ChunkedArray | pa.Array] = {}
    for name in names:
        typ = spec.schema.field(name).type
        out[name] = rows[name].cast(typ) if name in rows.column_names else pa.nulls(rows.num_rows, typ)
    # Nullability is the sink's to check (a NULL in a REQUIRED column is a dead letter, not a crash).
    return pa.table(out, schema=pa.schema([spec.schema.field(n).with_nullable(True) for n in names]))
