"""The local warehouse: one DuckDB file with the warehouse tables, a dead-letter table and the views.

It implements :class:`~warehouse.sink.WarehouseSink` like the BigQuery sink does:
tables are append-only, a row's insert id (``WarehouseTable.insert_ids``: key + version) makes a
retried write a no-op, and a row the warehouse refuses goes to ``dead_letter`` with the error while
the rest of its batch lands.

The insert ids live in a side table (``_insert_ids``), not in a hidden column, so the tables have
exactly the columns of their BigQuery twins and ``SELECT *`` means the same in both.

Threads: one DuckDB connection per ``DuckWarehouse``; every call works on its own ``cursor()`` (a
connection of its own to the same database), so the dashboard may ``query`` from HTTP threads while a
sync thread writes. Writes are serialised by a lock (the duplicate check and the insert must not
interleave). All sessions run with ``TimeZone='UTC'``: ``DATE(ts)`` and ``TIMESTAMP_TRUNC`` then
agree with BigQuery, which works in UTC.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from warehouse import views
from warehouse.sink import WriteResult
from warehouse.tables import (
    DEAD_LETTER_SCHEMA,
    DEAD_LETTER_TABLE,
    WAREHOUSE_TABLES,
    WarehouseTable,
)

log = logging.getLogger(__name__)

INSERT_IDS_TABLE: Final = "_insert_ids"
META_TABLE: Final = "_meta"
_ID: Final = "__insert_id"
_ROW: Final = "__row"
_UTC: Final = "UTC"


class WarehouseError(RuntimeError):
    """The warehouse cannot do what was asked (unknown table, read-only, ...)."""


def duckdb_type(t: pa.DataType) -> str:
    """The DuckDB column type of an Arrow type of the warehouse schemas."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "VARCHAR"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"{duckdb_type(t.value_type)}[]"
    simple = {
        pa.bool_(): "BOOLEAN",
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.date32(): "DATE",
        pa.binary(): "BLOB",
    }
    if t in simple:
        return simple[t]
    raise WarehouseError(f"no DuckDB type for Arrow type {t}")


def create_table_sql(name: str, schema: pa.Schema) -> str:
    cols = ",\n  ".join(
        f'"{f.name}" {duckdb_type(f.type)}{"" if f.nullable else " NOT NULL"}' for f in schema
    )
    return f'CREATE TABLE IF NOT EXISTS "{name}" (\n  {cols}\n)'


class DuckWarehouse:
    """The DuckDB warehouse in ``path`` (``":memory:"`` for a throw-away one)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        if self.path != ":memory:" and not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if read_only and self.path != ":memory:" and not Path(self.path).is_file():
            raise WarehouseError(f"no warehouse at {self.path}")
        self._con = duckdb.connect(self.path, read_only=read_only)
        # GLOBAL: cursors created later inherit it (``cursor()`` sets it again for good measure).
        # Not in connect()'s config: DuckDB refuses TimeZone there before ICU is loaded.
        self._con.execute(f"SET GLOBAL TimeZone = '{_UTC}'")
        self._write_lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> DuckWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection of its own for the calling thread, in UTC; closed afterwards."""
        cur = self._con.cursor()
        try:
            cur.execute(f"SET TimeZone = '{_UTC}'")
            yield cur
        finally:
            cur.close()

    def ensure(self) -> None:
        """Create the warehouse tables, the dead-letter table, the bookkeeping tables and every view;
        idempotent. A table created by an older contract gets the columns it lacks (nullable) and loses
        those the contract no longer has."""
        self._writable()
        with self._write_lock, self.cursor() as cur:
            cur.execute("BEGIN")
            try:
                for table in WAREHOUSE_TABLES.values():
                    self._ensure_table(cur, table.name, table.schema)
                self._ensure_table(cur, DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA)
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {INSERT_IDS_TABLE} ("
                    "table_name VARCHAR NOT NULL, insert_id VARCHAR NOT NULL, "
                    "inserted_at TIMESTAMPTZ NOT NULL)"
                )
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)"
                )
                for name in views.view_names():
                    cur.execute(views.duckdb_ddl(name))
                cur.execute("COMMIT")
            except BaseException:
                with suppress(duckdb.Error):  # keep the first error, not "no transaction is active"
                    cur.execute("ROLLBACK")
                raise

    def _ensure_table(self, cur: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema) -> None:
        cur.execute(create_table_sql(name, schema))
        have = {
            r[0]
            for r in cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [name]
            ).fetchall()
        }
        for f in schema:
            if f.name not in have:
                cur.execute(f'ALTER TABLE "{name}" ADD COLUMN "{f.name}" {duckdb_type(f.type)}')
        # A column the contract dropped (Gold's and the alerts' patient_id, for minimum necessary) goes:
        # the local warehouse is a copy of the lake, and a leftover NOT NULL column would refuse rows.
        for column in sorted(have - set(schema.names)):
            cur.execute(f'ALTER TABLE "{name}" DROP COLUMN "{column}"')

    # --- reading -------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        """Run DuckDB SQL (the views, the tables) and return the result as an Arrow table."""
        with self.cursor() as cur:
            relation = cur.sql(sql, params=params)
            return relation.to_arrow_table() if relation is not None else pa.table({})

    def count(self, table: str) -> int:
        return int(self.query(f'SELECT COUNT(*) AS n FROM "{table}"')["n"][0].as_py())

    # --- bookkeeping (sync state) ----------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self.query(f"SELECT value FROM {META_TABLE} WHERE key = ?", [key])
        return rows["value"][0].as_py() if rows.num_rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._writable()
        with self._write_lock, self.cursor() as cur:
            cur.execute(
                f"INSERT INTO {META_TABLE} VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )

    # --- erasure -------------------------------------------------------------------------------

    def forget_patient(self, patient_id: str, patient_key: str) -> dict[str, int]:
        """Delete every row of this patient: the identity map by the id, the tables with the pseudonymous
        key only (Gold, the alerts) by the key (``contract.patient_match``), the insert ids of those
        rows, and the dead letters whose row names the id or the key (as a JSON string). Rows deleted
        per table."""
        self._writable()
        deleted: dict[str, int] = {}
        with self._write_lock, self.cursor() as cur:
            cur.execute("BEGIN")
            try:
                for spec in WAREHOUSE_TABLES.values():
                    match = c.patient_match(spec.schema, patient_id=patient_id, patient_key=patient_key)
                    if match is None:
                        continue
                    column, value = match
                    rows = cur.sql(f'SELECT * FROM "{spec.name}" WHERE {column} = ?', params=[value])
                    found = rows.to_arrow_table() if rows is not None else pa.table({})
                    if found.num_rows:
                        ids = spec.insert_ids(found)
                        cur.execute(
                            f"DELETE FROM {INSERT_IDS_TABLE} WHERE table_name = ? AND insert_id IN "
                            f"(SELECT unnest(?::VARCHAR[]))",
                            [spec.name, ids],
                        )
                    cur.execute(f'DELETE FROM "{spec.name}" WHERE {column} = ?', [value])
                    deleted[spec.name] = found.num_rows
                tokens = [f"%{json.dumps(v)}%" for v in (patient_id, patient_key)]
                dead = cur.execute(
                    f"DELETE FROM {DEAD_LETTER_TABLE} WHERE row_json LIKE ? OR row_json LIKE ? RETURNING 1",
                    tokens,
                ).fetchall()
                deleted[DEAD_LETTER_TABLE] = len(dead)
                cur.execute("COMMIT")
            except BaseException:
                with suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise
        return deleted

    # --- writing -------------------------------------------------------------------------------

    def write(self, table: str, rows: pa.Table) -> WriteResult:
        """Append ``rows`` to ``table``: rows whose insert id is stored already are skipped
        (``duplicates``), rows that do not fit the table go to ``dead_letter`` (``rejected``)."""
        self._writable()
        spec = WAREHOUSE_TABLES.get(table)
        if spec is None:
            raise WarehouseError(f"unknown warehouse table {table!r}; known: {sorted(WAREHOUSE_TABLES)}")
        if rows.num_rows == 0:
            return WriteResult()
        good, rejects = conform(spec, rows)
        ids = spec.insert_ids(good) if good.num_rows else []
        with self._write_lock, self.cursor() as cur:
            cur.execute("BEGIN")
            try:
                inserted, duplicates, late_rejects = self._insert_new(cur, spec, good, ids)
                rejects += late_rejects
                self._dead_letter(cur, spec, rows, rejects)
                cur.execute("COMMIT")
            except BaseException:
                with suppress(duckdb.Error):  # keep the first error, not "no transaction is active"
                    cur.execute("ROLLBACK")
                raise
        if rejects:
            log.warning("%s: %d row(s) rejected to %s", table, len(rejects), DEAD_LETTER_TABLE)
        errors = sorted({err for _, err in rejects})
        return WriteResult(inserted=inserted, duplicates=duplicates, rejected=len(rejects), errors=errors)

    def _insert_new(
        self, cur: duckdb.DuckDBPyConnection, spec: WarehouseTable, good: pa.Table, ids: list[str]
    ) -> tuple[int, int, list[tuple[int, str]]]:
        """Insert the rows of ``good`` whose id is new; (inserted, duplicates, rejected (row, error))."""
        if good.num_rows == 0:
            return 0, 0, []
        batch = good.append_column(_ID, pa.array(ids, pa.string()))
        cur.register("__batch", batch.select([_ID, _ROW]))
        try:
            # First row of each insert id in the batch, when the id is not stored yet.
            fresh = cur.sql(
                f"""SELECT MIN({_ROW}) AS r FROM __batch b
                    WHERE NOT EXISTS (SELECT 1 FROM {INSERT_IDS_TABLE} i
                                      WHERE i.table_name = $name AND i.insert_id = b.{_ID})
                    GROUP BY {_ID}""",
                params={"name": spec.name},
            ).to_arrow_table()["r"]
        finally:
            cur.unregister("__batch")
        keep = pc.is_in(batch[_ROW], value_set=fresh.combine_chunks())
        new = batch.filter(keep)
        duplicates = good.num_rows - new.num_rows
        rejected: list[tuple[int, str]] = []
        if new.num_rows:
            try:
                self._append(cur, spec, new)
            except duckdb.Error:
                # Something validation did not foresee (e.g. a CHECK constraint): DuckDB aborts the
                # whole transaction on an error and has no savepoints, so retry row by row,
                # re-applying the good rows after each failure.
                cur.execute("ROLLBACK")
                cur.execute("BEGIN")
                ok: list[int] = []
                for i in range(new.num_rows):
                    try:
                        self._append(cur, spec, new.slice(i, 1))
                        ok.append(i)
                    except duckdb.Error as exc:
                        rejected.append((new[_ROW][i].as_py(), f"{type(exc).__name__}: {exc}"))
                        cur.execute("ROLLBACK")
                        cur.execute("BEGIN")
                        if ok:
                            self._append(cur, spec, new.take(ok))
                return len(ok), duplicates, rejected
        return new.num_rows, duplicates, rejected

    def _append(self, cur: duckdb.DuckDBPyConnection, spec: WarehouseTable, rows: pa.Table) -> None:
        cols = ", ".join(f'"{n}"' for n in spec.schema.names)
        cur.register("__new", rows)
        try:
            cur.execute(f'INSERT INTO "{spec.name}" ({cols}) SELECT {cols} FROM __new')
            cur.execute(
                f"INSERT INTO {INSERT_IDS_TABLE} SELECT ?, {_ID}, now() FROM __new",
                [spec.name],
            )
        finally:
            # In a transaction the failed INSERT aborted, unregistering fails too: keep the first error.
            with suppress(duckdb.Error):
                cur.unregister("__new")

    def _dead_letter(
        self,
        cur: duckdb.DuckDBPyConnection,
        spec: WarehouseTable,
        rows: pa.Table,
        rejects: list[tuple[int, str]],
    ) -> None:
        if not rejects:
            return
        now = datetime.now(UTC)
        out = []
        for row_index, error in rejects:
            row = rows.slice(row_index, 1).to_pylist()[0]
            out.append(
                {
                    "table_name": spec.name,
                    "insert_id": _insert_id_of(spec, rows.slice(row_index, 1), row),
                    "row_json": json.dumps(row, default=str, sort_keys=True),
                    "error": error,
                    "failed_at": now,
                }
            )
        cur.register("__dead", pa.Table.from_pylist(out, schema=DEAD_LETTER_SCHEMA))
        try:
            names = ", ".join(f'"{n}"' for n in DEAD_LETTER_SCHEMA.names)
            cur.execute(f'INSERT INTO "{DEAD_LETTER_TABLE}" ({names}) SELECT {names} FROM __dead')
        finally:
            cur.unregister("__dead")

    def _writable(self) -> None:
        if self.read_only:
            raise WarehouseError(f"the warehouse {self.path} is open read-only")


def _insert_id_of(spec: WarehouseTable, one: pa.Table, row: dict[str, Any]) -> str:
    """The row's insert id when its key columns allow one, else a hash of the row itself."""
    try:
        return spec.insert_ids(one)[0]
    except Exception:  # noqa: BLE001 - a malformed row: any failure means "no key"
        return hashlib.sha256(json.dumps(row, default=str, sort_keys=True).encode()).hexdigest()[:32]


def conform(spec: WarehouseTable, rows: pa.Table) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Cast ``rows`` to the table's schema, row by row where a column does not cast as a whole.

    Returns the rows that fit (``spec.schema`` plus a ``__row`` column: their index in ``rows``) and
    the ones that do not, as (index, error). Like a BigQuery insert: an unknown column or a value of
    the wrong type or a NULL in a REQUIRED column refuses the row; a missing NULLABLE column is NULL.
    """
    n = rows.num_rows
    errors: dict[int, list[str]] = {}

    def fail(indexes: Sequence[int], message: str) -> None:
        for i in indexes:
            errors.setdefault(i, []).append(message)

    unknown = [name for name in rows.column_names if name not in spec.schema.names]
    if unknown:
        fail(range(n), f"no such field(s) in {spec.name}: {', '.join(unknown)}")
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for f in spec.schema:
        if f.name not in rows.column_names:
            columns[f.name] = pa.nulls(n, f.type)
            if not f.nullable:
                fail(range(n), f"missing required field {f.name}")
            continue
        col = rows[f.name]
        try:
            columns[f.name] = col.cast(f.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            values = []
            for i, value in enumerate(col.to_pylist()):
                try:
                    values.append(pa.array([value], col.type).cast(f.type, safe=True)[0].as_py())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                    fail([i], f"field {f.name}: cannot convert {value!r} to {f.type}: {exc}")
                    values.append(None)
            try:
                columns[f.name] = pa.array(values, f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                fail(range(n), f"field {f.name}: {col.type} does not convert to {f.type}: {exc}")
                columns[f.name] = pa.nulls(n, f.type)
        if not f.nullable:
            nulls = pc.is_null(columns[f.name])
            if pc.any(nulls).as_py():
                fail(pc.indices_nonzero(nulls).to_pylist(), f"field {f.name} is REQUIRED but NULL")
    table = pa.table(columns, schema=spec.schema).append_column(_ROW, pa.array(range(n), pa.int64()))
    if errors:
        bad = pa.array(sorted(errors), pa.int64())
        table = table.filter(pc.invert(pc.is_in(table[_ROW], value_set=bad)))
    return table, [(i, "; ".join(msgs)) for i, msgs in sorted(errors.items())]
