"""The BigQuery warehouse sink: streaming inserts (``tabledata.insertAll``) through google-cloud-bigquery.

Why insertAll and not the Storage Write API: the Python client writes it natively, Beam's Python
``WriteToBigQuery(method=STORAGE_WRITE_API)`` is a Java cross-language transform, and Gold/alerts/DQ are
small (hundreds of rows a batch). Each row carries its deterministic insert id
(:meth:`~warehouse.tables.WarehouseTable.insert_ids`, key + version) as ``insertId``.

What one :meth:`BigQuerySink.write` guarantees:

* **Idempotent as far as BigQuery allows.** BigQuery drops a re-sent ``insertId`` only best-effort
  (about a minute); this sink also remembers the ids it has had acknowledged (the last
  ``remember_ids``) and skips them (counted as ``duplicates``), as it skips repeats inside one batch.
  Whatever still slips through is removed by the base views (``gold_latest`` …: newest per key).
* **Transient failures are retried** (5xx, 429, ``rateLimitExceeded``/``backendError`` reasons,
  connection resets and timeouts) with exponential backoff until ``settings.retry_deadline``; then
  :class:`BigQueryWriteError` is raised. Re-running the same write is then safe (same insert ids):
  in Beam the bundle is retried, and nothing was acknowledged for the rows that did not land.
* **Outages are reported as such.** A :class:`BigQueryWriteError` says whether the failure was
  ``transient`` (the warehouse unreachable or failing: write again later) and how many rows of the
  write had landed before it (``inserted``: remembered, so a repeat does not send them again).
  :class:`~pipelines.warehouse_io.WriteWarehouseFn` repeats transient failures for
  ``settings.outage_budget`` seconds instead of failing the bundle.
* **Rejected rows are never lost.** Rows that come back in ``insertErrors`` with a permanent reason
  (``invalid``: wrong type, missing required field, unknown column …) are written to the
  ``dead_letter`` table with the error text and the row as JSON, while the rest of the batch lands
  (``skipInvalidRows``). Rows BigQuery only *stopped* (or timed out) are sent again. Only a failed
  dead-letter write raises (:class:`DeadLetterError`).

Requests hold at most ``max_rows_per_request`` rows (500, Google's recommendation) and
``max_bytes_per_request`` bytes of JSON (9 MB, under the 10 MB limit). A single row over the byte
limit cannot be sent at all: it goes to the dead letter (its JSON cut to fit) with that reason.

JSON: timestamps as ISO 8601 in UTC (naive ones are DATETIME), dates ISO, NaN as null, ±inf as
``"Infinity"``/``"-Infinity"`` (BigQuery's spelling), decimals as strings, bytes as base64, lists as
arrays, structs as objects.

``ensure()`` creates the dataset, every table of ``WAREHOUSE_TABLES`` (day partitioning on its
``partition`` column, its clustering) and ``dead_letter``. To an existing table it only adds the
contract's new nullable columns (additive evolution, which BigQuery does in place and Terraform's next
plan agrees with: its schemas are generated from the same contract). Any other difference is not
altered: it is logged and listed in ``sink.drift``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Self

import orjson
import pyarrow as pa
import requests
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery
from google.oauth2 import service_account

from vitals_lake import catalogue
from vitals_lake import contract as c
from warehouse.settings import BigQuerySettings
from warehouse.sink import WriteResult
from warehouse.tables import (
    DEAD_LETTER_SCHEMA,
    DEAD_LETTER_TABLE,
    WAREHOUSE_TABLES,
)

log = logging.getLogger(__name__)

BIGQUERY_SCOPE: Final = "https://www.googleapis.com/auth/bigquery"
# insertErrors reasons after which the row may be sent again (it was not stored, and not refused).
RETRYABLE_ROW_REASONS: Final = frozenset({"stopped", "timeout", "backendError", "internalError"})
# Error reasons (in a failed request's body) that mean "try again later".
RETRYABLE_REASONS: Final = frozenset(
    {"backendError", "internalError", "rateLimitExceeded", "badGateway", "timeout"}
)
_TRANSIENT_TYPES: Final = (
    gexc.ServerError,  # every 5xx
    gexc.TooManyRequests,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    auth_exceptions.TransportError,
    ConnectionError,
)
_ROW_OVERHEAD: Final = 64  # {"insertId": "...", "json": ...}, in bytes, besides the row and its id
_REQUEST_OVERHEAD: Final = 256
_BQ_TYPE_ALIASES: Final = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}


class BigQueryError(RuntimeError):
    """The BigQuery warehouse cannot do what was asked."""


class BigQueryWriteError(BigQueryError):
    """Rows could not be written (the retry deadline passed, or a permanent request error).
    Nothing is lost: the same write may be repeated (same insert ids).

    ``transient``: the warehouse was unreachable or failing transiently (worth writing again later;
    :class:`~pipelines.warehouse_io.WriteWarehouseFn` rides such outages out). ``inserted``: rows of
    this write that were acknowledged before it failed; the sink remembers their insert ids, so a
    repeat of the write skips them (and counts them as ``duplicates``).
    """

    def __init__(self, message: str, *, transient: bool = False, inserted: int = 0) -> None:
        super().__init__(message)
        self.transient = transient
        self.inserted = inserted


class DeadLetterError(BigQueryWriteError):
    """Rows BigQuery refused could not be written to the dead-letter table either."""


# --- Arrow schema -> BigQuery schema ------------------------------------------------------------------
def bigquery_type(t: pa.DataType) -> str:
    """The BigQuery standard-SQL type of an Arrow type (a list's element type for lists)."""
    if pa.types.is_dictionary(t):
        return bigquery_type(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "STRING"
    if pa.types.is_boolean(t):
        return "BOOL"
    if pa.types.is_signed_integer(t) or t in (pa.uint8(), pa.uint16(), pa.uint32()):
        return "INT64"
    if pa.types.is_floating(t):
        return "FLOAT64"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz else "DATETIME"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_time(t):
        return "TIME"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "BYTES"
    if pa.types.is_decimal(t):
        return "NUMERIC" if t.precision - t.scale <= 29 and t.scale <= 9 else "BIGNUMERIC"
    if pa.types.is_struct(t):
        return "STRUCT"
    raise BigQueryError(f"no BigQuery type for Arrow type {t}")


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def bigquery_field(f: pa.Field, *, described: bool = True) -> bigquery.SchemaField:
    """A column: lists become REPEATED (BigQuery has no nullable arrays), non-nullable ones REQUIRED;
    its description from the catalogue (``vitals_lake.catalogue``; not for a struct's fields)."""
    t, mode = f.type, "REQUIRED" if not f.nullable else "NULLABLE"
    description = catalogue.describe(f.name) if described else None
    if _is_list(t):
        t, mode = t.value_type, "REPEATED"
        if _is_list(t):
            raise BigQueryError(f"column {f.name}: BigQuery has no arrays of arrays ({f.type})")
    bq_type = bigquery_type(t)
    if bq_type == "STRUCT":
        sub = tuple(bigquery_field(t.field(i), described=False) for i in range(t.num_fields))
        return bigquery.SchemaField(f.name, bq_type, mode=mode, fields=sub, description=description)
    return bigquery.SchemaField(f.name, bq_type, mode=mode, description=description)


def bigquery_schema(schema: pa.Schema) -> list[bigquery.SchemaField]:
    return [bigquery_field(f) for f in schema]


def _signature(fields: Sequence[bigquery.SchemaField]) -> dict[str, str]:
    def one(f: bigquery.SchemaField) -> str:
        t = _BQ_TYPE_ALIASES.get(f.field_type.upper(), f.field_type.upper())
        inner = ",".join(f"{k}:{v}" for k, v in _signature(f.fields).items()) if f.fields else ""
        return f"{t}{'<' + inner + '>' if inner else ''} {(f.mode or 'NULLABLE').upper()}"

    return {f.name: one(f) for f in fields}


def schema_drift(
    existing: Sequence[bigquery.SchemaField], wanted: Sequence[bigquery.SchemaField]
) -> list[str]:
    """How an existing table's columns differ from the contract's (empty when they agree)."""
    have, want = _signature(existing), _signature(wanted)
    out = [f"{n}: missing (contract {want[n]})" for n in want if n not in have]
    out += [
        f"{n}: {have[n]} in the table, {want[n]} in the contract"
        for n in want
        if n in have and have[n] != want[n]
    ]
    out += [f"{n}: not in the contract ({have[n]})" for n in have if n not in want]
    return out


# --- Arrow rows -> insertAll JSON -------------------------------------------------------------------------
Converter = Callable[[Any], Any]


def _float(v: float) -> float | str | None:
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _json_converter(t: pa.DataType) -> Converter | None:
    """A function making one Python value (``to_pylist``) JSON-ready for BigQuery; None: as it is."""
    if pa.types.is_dictionary(t):
        return _json_converter(t.value_type)
    if pa.types.is_timestamp(t):
        if t.tz:
            return lambda v: v.astimezone(UTC).isoformat()
        return lambda v: v.isoformat()
    if pa.types.is_date(t) or pa.types.is_time(t):
        return lambda v: v.isoformat()
    if pa.types.is_floating(t):
        return _float
    if pa.types.is_decimal(t):
        return str
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return lambda v: base64.b64encode(v).decode("ascii")
    if _is_list(t):
        inner = _json_converter(t.value_type)
        if inner is None:
            return list
        return lambda v: [None if x is None else inner(x) for x in v]
    if pa.types.is_struct(t):
        subs = {t.field(i).name: _json_converter(t.field(i).type) for i in range(t.num_fields)}
        return lambda v: {k: (x if (conv := subs[k]) is None or x is None else conv(x)) for k, x in v.items()}
    return None


def json_rows(rows: pa.Table) -> list[dict[str, Any]]:
    """The table's rows as insertAll ``json`` objects (every column present; NULL as null)."""
    columns: list[tuple[str, list[Any]]] = []
    for f in rows.schema:
        values = rows[f.name].to_pylist()
        conv = _json_converter(f.type)
        if conv is not None:
            values = [None if v is None else conv(v) for v in values]
        columns.append((f.name, values))
    names = [n for n, _ in columns]
    return [dict(zip(names, vals, strict=True)) for vals in zip(*(v for _, v in columns), strict=True)]


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: 5xx, 429, rate limits and backend errors, connection trouble."""
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    errors = getattr(exc, "errors", None)
    if isinstance(exc, gexc.GoogleAPICallError) and errors:
        reasons = {e.get("reason") for e in errors if isinstance(e, dict)}
        if reasons & RETRYABLE_REASONS:
            return True
    return isinstance(exc, _TRANSIENT_TYPES)


# --- the client ------------------------------------------------------------------------------------------
def make_client(settings: BigQuerySettings) -> bigquery.Client:
    """A client for the settings: ADC, a service-account key, or anonymous against an emulator."""
    credentials: Credentials | None
    if settings.credentials == "anonymous":
        credentials = AnonymousCredentials()
    elif settings.credentials == "service-account":
        assert settings.key_file is not None
        credentials = service_account.Credentials.from_service_account_file(
            settings.key_file, scopes=[BIGQUERY_SCOPE]
        )
    else:
        credentials = None  # the client looks up Application Default Credentials
    options = ClientOptions(api_endpoint=settings.api_endpoint) if settings.api_endpoint else None
    return bigquery.Client(
        project=settings.project,
        credentials=credentials,
        location=settings.location,
        client_options=options,
    )


@dataclass(frozen=True)
class _Row:
    insert_id: str
    json: dict[str, Any]
    size: int  # bytes of its JSON

    @classmethod
    def of(cls, insert_id: str, doc: dict[str, Any]) -> _Row:
        return cls(insert_id, doc, len(orjson.dumps(doc)) + len(insert_id) + _ROW_OVERHEAD)


@dataclass(frozen=True)
class _Rejected:
    row: _Row
    error: str


_CUT: Final = "…(cut)"  # ends a dead letter's row_json that was cut to fit the request limit


@dataclass
class DeadLetterReplay:
    """What :meth:`BigQuerySink.replay_dead_letters` did."""

    read: int = 0  # dead letters selected
    unrecoverable: int = 0  # cut to fit, or for a table the warehouse no longer has
    tables: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> replayed, refused_again
    first_failed_at: datetime | None = None
    last_failed_at: datetime | None = None
    errors: list[str] = field(default_factory=list)  # the first 20 refusals

    @property
    def replayed(self) -> int:
        return sum(t["replayed"] for t in self.tables.values())

    @property
    def refused_again(self) -> int:
        return sum(t["refused_again"] for t in self.tables.values())


@dataclass
class Erasure:
    """What :meth:`BigQuerySink.forget_patient` did: rows deleted per table, and the tables whose
    delete must run again once BigQuery's streaming buffer has flushed."""

    deleted: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)


class BigQuerySink:
    """:class:`~warehouse.sink.WarehouseSink` over BigQuery streaming inserts.

    Not thread-safe (it remembers acknowledged insert ids): one sink per thread, as Beam gives one
    DoFn instance per thread. ``client=`` shares an existing client (tests, notebooks).
    """

    def __init__(
        self,
        settings: BigQuerySettings,
        *,
        client: bigquery.Client | None = None,
        remember_ids: int = 50_000,
    ) -> None:
        self.settings = settings
        self.client = client if client is not None else make_client(settings)
        self.remember_ids = remember_ids
        self.drift: dict[str, list[str]] = {}  # table -> how it differs from the contract (ensure)
        self.transient_errors = 0  # failed attempts that were retried, over the sink's life
        self._acked: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def from_env(cls) -> BigQuerySink:
        """The warehouse the environment names (:meth:`BigQuerySettings.from_env`), its tables created
        if missing: what the jobs outside the stream (admissions, recovery) write to."""
        sink = cls(BigQuerySettings.from_env())
        sink.ensure()
        return sink

    # --- lifecycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retry(self, deadline: float | None = None) -> Retry:
        return Retry(
            predicate=is_transient,
            initial=0.2,
            maximum=8.0,
            multiplier=2.0,
            timeout=self.settings.retry_deadline if deadline is None else deadline,
            on_error=self._on_transient,
        )

    def _on_transient(self, exc: Exception) -> None:
        self.transient_errors += 1
        log.warning("BigQuery: transient error, retrying: %s", exc)

    # --- reading ------------------------------------------------------------------------------------------
    def newest(self, table: str, column: str) -> Any:
        """The largest value of ``column`` in ``table`` (None when it is empty): what a loader that
        appends versions sends only past (one query job)."""
        sql = f"SELECT MAX(`{column}`) AS newest FROM `{self.settings.table_ref(table)}`"
        rows = list(self.client.query(sql, retry=self._retry()).result(timeout=self.settings.request_timeout))
        return rows[0]["newest"] if rows else None

    # --- tables ------------------------------------------------------------------------------------------
    def ensure(self) -> None:
        s = self.settings
        dataset = bigquery.Dataset(s.dataset_ref)
        dataset.location = s.location
        # Look first: in the cloud Terraform owns the dataset and the pipeline's account may not create
        # datasets (BigQuery then answers 403, not 409, to a create of an existing one).
        try:
            self.client.get_dataset(s.dataset_ref, retry=self._retry(), timeout=s.request_timeout)
        except gexc.NotFound:
            self.client.create_dataset(
                dataset, exists_ok=True, retry=self._retry(), timeout=s.request_timeout
            )
        for spec in WAREHOUSE_TABLES.values():
            self._ensure_table(spec.name, spec.schema, spec.partition or None, spec.clustering)
        self._ensure_table(DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA, "failed_at", ("table_name",))

    def _ensure_table(
        self, name: str, schema: pa.Schema, partition: str | None, clustering: tuple[str, ...]
    ) -> None:
        wanted = bigquery_schema(schema)
        ref = self.settings.table_ref(name)
        try:
            existing = self.client.get_table(ref, retry=self._retry(), timeout=self.settings.request_timeout)
        except gexc.NotFound:
            table = bigquery.Table(ref, schema=wanted)
            table.description = catalogue.table_description(name)
            if partition:
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field=partition
                )
            if clustering:
                table.clustering_fields = list(clustering)
            self.client.create_table(
                table, exists_ok=True, retry=self._retry(), timeout=self.settings.request_timeout
            )
            self.drift.pop(name, None)
            log.info("BigQuery: created table %s", ref)
            return
        have = {f.name for f in existing.schema}
        added = [f for f in wanted if f.name not in have and f.mode != "REQUIRED"]
        if added:
            # Additive evolution: BigQuery adds NULLABLE and REPEATED columns in place; the rows already
            # stored read them as NULL (or empty).
            existing.schema = [*existing.schema, *added]
            existing = self.client.update_table(
                existing, ["schema"], retry=self._retry(), timeout=self.settings.request_timeout
            )
            log.info(
                "BigQuery: added the contract's new columns %s to %s", ", ".join(f.name for f in added), ref
            )
        drift = schema_drift(existing.schema, wanted)
        if drift:
            self.drift[name] = drift
            log.warning(
                "BigQuery: table %s differs from the contract (not altered): %s", ref, "; ".join(drift)
            )
        else:
            self.drift.pop(name, None)

    # --- writing -----------------------------------------------------------------------------------------
    def write(self, table: str, rows: pa.Table) -> WriteResult:
        spec = WAREHOUSE_TABLES.get(table)
        if spec is None:
            raise BigQueryError(f"unknown warehouse table {table!r}: one of {', '.join(WAREHOUSE_TABLES)}")
        if rows.num_rows == 0:
            return WriteResult()
        missing = [n for n in spec.schema.names if n not in rows.column_names]
        if missing:
            raise BigQueryError(f"rows for {table} lack columns {missing}")
        rows = rows.select(spec.schema.names)
        ids = spec.insert_ids(rows)
        pending: list[_Row] = []
        seen: set[str] = set()
        duplicates = 0
        for insert_id, doc in zip(ids, json_rows(rows), strict=True):
            if insert_id in seen or insert_id in self._acked:
                duplicates += 1
                continue
            seen.add(insert_id)
            pending.append(_Row.of(insert_id, doc))

        rejected: list[_Rejected] = []
        limit = self.settings.max_bytes_per_request - _REQUEST_OVERHEAD
        oversized = [r for r in pending if r.size > limit]
        if oversized:
            rejected += [
                _Rejected(r, f"row is {r.size} bytes of JSON: over the insertAll request limit ({limit})")
                for r in oversized
            ]
            pending = [r for r in pending if r.size <= limit]

        deadline = time.monotonic() + self.settings.retry_deadline
        inserted = 0
        try:
            for chunk in self._chunks(pending):
                ok, refused = self._insert_chunk(self.settings.table_ref(table), chunk, deadline)
                inserted += len(ok)
                rejected += refused
                self._remember(r.insert_id for r in ok)
            if rejected:
                self._dead_letter(table, rejected, deadline)
        except BigQueryWriteError as exc:
            exc.inserted += inserted  # what landed before the failure (remembered, skipped on a repeat)
            raise
        return WriteResult(
            inserted=inserted,
            duplicates=duplicates,
            rejected=len(rejected),
            errors=[f"{r.row.insert_id}: {r.error}" for r in rejected],
        )

    def _chunks(self, rows: Sequence[_Row]) -> Iterator[list[_Row]]:
        limit = self.settings.max_bytes_per_request - _REQUEST_OVERHEAD
        chunk: list[_Row] = []
        size = 0
        for r in rows:
            if chunk and (len(chunk) >= self.settings.max_rows_per_request or size + r.size > limit):
                yield chunk
                chunk, size = [], 0
            chunk.append(r)
            size += r.size
        if chunk:
            yield chunk

    def _insert_all(
        self, ref: str, rows: Sequence[_Row], deadline: float, *, skip_invalid: bool
    ) -> Sequence[dict[str, Any]]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BigQueryWriteError(
                f"insertAll into {ref}: {len(rows)} rows still unwritten after "
                f"{self.settings.retry_deadline:.0f} s",
                transient=True,
            )
        try:
            return self.client.insert_rows_json(
                ref,
                [r.json for r in rows],
                row_ids=[r.insert_id for r in rows],
                skip_invalid_rows=skip_invalid,
                retry=self._retry(remaining),
                timeout=self.settings.request_timeout,
            )
        except (
            gexc.GoogleAPIError,
            requests.exceptions.RequestException,
            auth_exceptions.GoogleAuthError,
            OSError,
        ) as exc:
            # RetryError: the deadline passed while every attempt failed transiently.
            transient = isinstance(exc, gexc.RetryError) or is_transient(exc)
            raise BigQueryWriteError(
                f"insertAll into {ref} failed ({len(rows)} rows): {exc}", transient=transient
            ) from exc

    def _insert_chunk(
        self, ref: str, chunk: list[_Row], deadline: float
    ) -> tuple[list[_Row], list[_Rejected]]:
        """Send one request's rows until each is stored or refused; (stored, refused)."""
        stored: list[_Row] = []
        refused: list[_Rejected] = []
        todo = chunk
        pause = 0.2
        while todo:
            try:
                errors = self._insert_all(ref, todo, deadline, skip_invalid=True)
            except BigQueryWriteError as exc:
                # Rows stored by an earlier round of this chunk are remembered: a repeated write skips them.
                self._remember(r.insert_id for r in stored)
                exc.inserted += len(stored)
                raise
            again: dict[int, str] = {}
            bad: dict[int, str] = {}
            for entry in errors:
                index = int(entry.get("index", -1))
                if not 0 <= index < len(todo):
                    raise BigQueryWriteError(
                        f"insertAll into {ref} answered an error for row {index}: {entry}"
                    )
                details = entry.get("errors") or [{"reason": "unknown", "message": str(entry)}]
                reasons = {d.get("reason") for d in details}
                (again if reasons <= RETRYABLE_ROW_REASONS else bad)[index] = _error_text(details)
            stored += [r for i, r in enumerate(todo) if i not in again and i not in bad]
            refused += [_Rejected(todo[i], text) for i, text in bad.items()]
            todo = [todo[i] for i in sorted(again)]
            if todo:
                self.transient_errors += 1
                log.warning(
                    "BigQuery: %d rows of %s not stored (%s); sending them again",
                    len(todo),
                    ref,
                    next(iter(again.values())),
                )
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 8.0)
        return stored, refused

    def _dead_letter(self, table: str, rejected: list[_Rejected], deadline: float) -> None:
        now = datetime.now(UTC).isoformat()
        cap = self.settings.max_bytes_per_request // 2
        letters: list[_Row] = []
        for r in rejected:
            row_json = orjson.dumps(r.row.json).decode()
            if len(row_json) > cap:
                row_json = row_json[:cap] + _CUT
            doc = {
                "table_name": table,
                "insert_id": r.row.insert_id,
                "row_json": row_json,
                "error": r.error,
                "failed_at": now,
            }
            letter_id = hashlib.sha256(
                repr((DEAD_LETTER_TABLE, table, r.row.insert_id)).encode()
            ).hexdigest()[:32]
            letters.append(_Row.of(letter_id, doc))
        ref = self.settings.table_ref(DEAD_LETTER_TABLE)
        # The dead letter gets its own full deadline: giving up here would be the one way to lose rows.
        letter_deadline = max(deadline, time.monotonic() + self.settings.retry_deadline)
        for chunk in self._chunks(letters):
            try:
                _, refused = self._insert_chunk(ref, chunk, letter_deadline)
            except BigQueryWriteError as exc:
                raise DeadLetterError(
                    f"{len(chunk)} rows of {table} refused by BigQuery could not be dead-lettered: {exc}",
                    transient=exc.transient,
                ) from exc
            if refused:
                raise DeadLetterError(
                    f"{len(refused)} rows of {table} refused by BigQuery were refused by {ref} too: "
                    f"{refused[0].error}"
                )
        log.warning(
            "BigQuery: %d rows of %s refused, written to %s: %s",
            len(rejected),
            table,
            DEAD_LETTER_TABLE,
            rejected[0].error,
        )

    # --- dead letters ------------------------------------------------------------------------------------
    def replay_dead_letters(
        self, *, table: str | None = None, since: datetime | None = None
    ) -> DeadLetterReplay:
        """Insert the rows of ``dead_letter`` (one table's, those that failed at or after ``since``)
        into their tables again, under their original insert ids.

        Run it once the cause is fixed (a table altered to the contract, a quota raised). A row
        refused again stays where it is and is counted; a row cut to fit the dead-letter table cannot
        be rebuilt and is counted. The dead letters are not deleted (rows still in BigQuery's
        streaming buffer cannot be): pass ``since`` to skip what an earlier replay sent. BigQuery drops
        a repeated insert id only for a short while, so a second replay of the same letters adds the
        rows again; ``gold_latest`` reads the newest row per key and is not affected.
        """
        if table is not None and table not in WAREHOUSE_TABLES:
            raise BigQueryError(f"unknown warehouse table {table!r}: one of {', '.join(WAREHOUSE_TABLES)}")
        where, params = ["TRUE"], []
        if table is not None:
            where.append("table_name = @table")
            params.append(bigquery.ScalarQueryParameter("table", "STRING", table))
        if since is not None:
            where.append("failed_at >= @since")
            params.append(bigquery.ScalarQueryParameter("since", "TIMESTAMP", since))
        sql = (
            "SELECT table_name, insert_id, row_json, failed_at"
            f" FROM `{self.settings.table_ref(DEAD_LETTER_TABLE)}` WHERE {' AND '.join(where)}"
            " ORDER BY failed_at, insert_id"
        )
        job = self.client.query(
            sql, job_config=bigquery.QueryJobConfig(query_parameters=params), retry=self._retry()
        )
        report = DeadLetterReplay()
        by_table: dict[str, dict[str, _Row]] = {}
        for letter in job.result(timeout=self.settings.request_timeout):
            report.read += 1
            report.first_failed_at = report.first_failed_at or letter["failed_at"]
            report.last_failed_at = letter["failed_at"]
            if letter["table_name"] not in WAREHOUSE_TABLES or str(letter["row_json"]).endswith(_CUT):
                report.unrecoverable += 1
                continue
            row = _Row.of(letter["insert_id"], orjson.loads(letter["row_json"]))
            by_table.setdefault(letter["table_name"], {})[row.insert_id] = row
        deadline = time.monotonic() + self.settings.retry_deadline
        for name, rows in by_table.items():
            counts = report.tables.setdefault(name, {"replayed": 0, "refused_again": 0})
            for chunk in self._chunks(list(rows.values())):
                ok, refused = self._insert_chunk(self.settings.table_ref(name), chunk, deadline)
                counts["replayed"] += len(ok)
                counts["refused_again"] += len(refused)
                report.errors += [f"{r.row.insert_id}: {r.error}" for r in refused][: 20 - len(report.errors)]
        return report

    # --- erasure ---------------------------------------------------------------------------------------
    def forget_patient(self, patient_id: str, patient_key: str) -> Erasure:
        """Delete this patient's rows: the identity map by the id, the tables with the pseudonymous key
        only (Gold, the alerts) by the key (``contract.patient_match``), and the dead letters whose row
        names either (as a JSON string). One DML statement per table, the value a query parameter.

        BigQuery refuses a DELETE that would touch rows still in the streaming buffer (up to about 90
        minutes after they were streamed). Such a table is returned in ``pending`` and its other
        deletes still run; running it again later finishes the erasure (a repeat deletes nothing
        twice)."""
        if not patient_id.strip() or not patient_key.strip():
            raise BigQueryError("the patient id or key is empty")
        out = Erasure()
        statements: list[tuple[str, str, list[str]]] = []
        for spec in WAREHOUSE_TABLES.values():
            match = c.patient_match(spec.schema, patient_id=patient_id, patient_key=patient_key)
            if match is not None:
                column, value = match
                statements.append((spec.name, f"{column} = @v0", [value]))
        tokens = [orjson.dumps(v).decode() for v in (patient_id, patient_key)]
        statements.append(
            (DEAD_LETTER_TABLE, "STRPOS(row_json, @v0) > 0 OR STRPOS(row_json, @v1) > 0", tokens)
        )
        for name, where, values in statements:
            config = bigquery.QueryJobConfig(
                query_parameters=[
                    bigquery.ScalarQueryParameter(f"v{i}", "STRING", v) for i, v in enumerate(values)
                ]
            )
            sql = f"DELETE FROM `{self.settings.table_ref(name)}` WHERE {where}"
            try:
                job = self.client.query(sql, job_config=config, retry=self._retry())
                job.result(timeout=self.settings.request_timeout)
            except gexc.NotFound:
                out.deleted[name] = 0  # never created: nothing to delete
                continue
            except gexc.BadRequest as exc:
                if "streaming buffer" not in str(exc):
                    raise
                out.pending.append(name)
                continue
            out.deleted[name] = int(job.num_dml_affected_rows or 0)
        return out

    def _remember(self, ids: Iterator[str]) -> None:
        for insert_id in ids:
            self._acked[insert_id] = None
            self._acked.move_to_end(insert_id)
        while len(self._acked) > self.remember_ids:
            self._acked.popitem(last=False)


def _error_text(details: Sequence[dict[str, Any]]) -> str:
    parts = []
    for d in details:
        where = f" at {d['location']}" if d.get("location") else ""
        parts.append(f"{d.get('reason', 'unknown')}{where}: {d.get('message', '')}".rstrip(": "))
    return "; ".join(parts)


__all__ = [
    "BigQueryError",
    "BigQuerySink",
    "BigQueryWriteError",
    "DeadLetterError",
    "DeadLetterReplay",
    "bigquery_field",
    "bigquery_schema",
    "bigquery_type",
    "is_transient",
    "json_rows",
    "make_client",
    "schema_drift",
]
