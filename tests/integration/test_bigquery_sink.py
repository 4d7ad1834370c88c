"""BigQuerySink through the real google-cloud-bigquery client against the BigQuery emulator (bqemulator),
started from its own venv (.venv-bq, built on first use). Faults are real HTTP: a small proxy in front
of the emulator (:class:`harness.faults.proxy.FaultProxy`) answers 503 / 429 / drops the connection
before forwarding, and records every insertAll request that it forwards (rows and insert ids)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from google.cloud import bigquery

from harness.faults.proxy import FaultProxy
from harness.stack import MissingPrerequisite
from harness.stack.bigquery import BigQueryEmulator, duckdb_home, emulator_venv, ensure_emulator_venv
from pipelines import warehouse_replay
from vitals_lake import catalogue
from vitals_lake import contract as c
from vitals_lake.config import ConfigError
from warehouse import views
from warehouse.bigquery import (
    BigQuerySink,
    BigQueryWriteError,
    DeadLetterError,
    bigquery_schema,
    json_rows,
    make_client,
)
from warehouse.settings import BigQuerySettings
from warehouse.tables import DEAD_LETTER_TABLE, WAREHOUSE_TABLES

GOLD = WAREHOUSE_TABLES[c.GOLD_TABLE]
ALERTS = WAREHOUSE_TABLES[c.ALERTS_TABLE]
DQ = WAREHOUSE_TABLES[c.DQ_METRICS_TABLE]
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
V1 = datetime(2026, 11, 22, 10, 5, 30, 123456, tzinfo=UTC)


# --- the emulator and a fault-injecting proxy ---------------------------------------------------------------
@pytest.fixture(scope="module")
def emulator(bigquery_emulator: BigQueryEmulator) -> BigQueryEmulator:
    """The session's emulator (tests/conftest.py); each test uses a dataset of its own."""
    return bigquery_emulator


@pytest.fixture
def proxy(emulator: BigQueryEmulator) -> Iterator[FaultProxy]:
    p = FaultProxy(emulator.endpoint)
    try:
        yield p
    finally:
        p.close()


def fresh_settings(endpoint: str, **kw: Any) -> BigQuerySettings:
    kw.setdefault("retry_deadline", 20.0)
    return BigQuerySettings(
        dataset=f"t_{uuid.uuid4().hex[:10]}", api_endpoint=endpoint, credentials="anonymous", **kw
    )


@pytest.fixture
def settings(emulator: BigQueryEmulator) -> BigQuerySettings:
    return fresh_settings(emulator.endpoint)


@pytest.fixture
def client(settings: BigQuerySettings) -> Iterator[bigquery.Client]:
    cl = make_client(settings)
    try:
        yield cl
    finally:
        cl.close()


# --- rows --------------------------------------------------------------------------------------------------
def gold_row(patient: str, minute: int, *, bed: str | None = "12", **values: Any) -> dict[str, Any]:
    start = T0 + timedelta(minutes=minute)
    row: dict[str, Any] = dict.fromkeys(c.GOLD_SCHEMA.names)
    row.update(
        {
            c.WINDOW_SECONDS: 60,
            c.WINDOW_START: start,
            c.WINDOW_END: start + timedelta(seconds=60),
            c.READING_COUNT: 12,
            c.gold_column("heart_rate", "mean"): 88.25,
            c.gold_column("heart_rate", "count"): 12,
            c.gold_column(c.NEWS2_SCORE, "max"): 5,
            c.RISK_LEVEL: "medium",
            c.SCORED_READINGS: 12,
            c.ANOMALOUS_READINGS: 1,
            c.ALERT_READINGS: 0,
            c.PATIENT_KEY: f"key-{patient}",
            c.WARD: "ICU",
            c.BED: bed,
            c.KNOWN_PATIENT: True,
            c.LAST_READING_TIME: start + timedelta(seconds=55, microseconds=250),
            c.UPDATED_AT: V1,
            c.EVENT_DATE: start.date(),
        }
    )
    row.update(values)
    return row


def gold_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=GOLD.schema)


def identity_table(keys: dict[str, str]) -> pa.Table:
    """Identity-map rows: raw id -> key."""
    rows = [{c.PATIENT_KEY: k, c.PATIENT_ID: i, c.FIRST_SEEN: T0} for i, k in keys.items()]
    return pa.Table.from_pylist(rows, schema=c.PATIENT_KEYS_SCHEMA)


def alert_table(n: int) -> pa.Table:
    rows = [
        {
            c.ALERT_ID: f"A{i}",
            c.ALERT_STATE: "opened",
            c.PATIENT_KEY: f"key-P{i}",
            c.WARD: "ICU",
            c.BED: None,
            c.SEVERITY: "high",
            c.ALERT_REASONS: ["news2_emergency", "model"][: i % 2 + 1] if i else [],
            c.NEWS2_SCORE: 7,
            c.ALERT_FLAGS_RAISED: ["tachycardia"] if i else [],
            c.ANOMALY_SCORE: 0.93 if i else float("nan"),
            c.MODEL_VERSION: "v3",
            c.WINDOW_START: T0,
            c.WINDOW_END: T0 + timedelta(minutes=1),
            c.EVENT_TIME: T0 + timedelta(seconds=61 + i),
            c.EVENT_DATE: T0.date(),
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=ALERTS.schema)


def dq_table(n: int, batch: str = "b1") -> pa.Table:
    rows = [
        {
            c.BATCH_ID: batch,
            c.WINDOW_START: T0,
            c.LAYER: "silver",
            c.RULE: f"rule_{i:04d}",
            c.ACTION: "drop",
            c.CHECKED_ROWS: 100 + i,
            c.PASSED_ROWS: 100,
            c.FAILED_ROWS: i,
            c.EVENT_DATE: T0.date(),
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=DQ.schema)


def query(cl: bigquery.Client, sql: str) -> list[dict[str, Any]]:
    return [dict(r) for r in cl.query(sql).result()]


def count(cl: bigquery.Client, s: BigQuerySettings, table: str) -> int:
    return int(query(cl, f"SELECT COUNT(*) AS n FROM `{s.table_ref(table)}`")[0]["n"])


def expected_json_value(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


# --- tests -------------------------------------------------------------------------------------------------
def test_emulator_venv_is_built_once_and_reused(emulator: BigQueryEmulator) -> None:
    venv = emulator_venv()
    stamped = venv.stamp_path.stat().st_mtime_ns
    again = ensure_emulator_venv()
    assert again == venv and venv.is_built()
    assert venv.stamp_path.stat().st_mtime_ns == stamped, "a built venv must be reused, not rebuilt"
    extensions = duckdb_home(venv) / ".duckdb" / "extensions"
    assert {p.name for p in extensions.glob("*/*/*.duckdb_extension")} >= {
        "spatial.duckdb_extension",
        "avro.duckdb_extension",
    }
    assert emulator.ready_seconds is not None  # measured, reported by the fixture; not a timing bar


def test_ensure_creates_dataset_tables_and_dead_letter_idempotently(
    settings: BigQuerySettings, client: bigquery.Client
) -> None:
    sink = BigQuerySink(settings, client=client)
    sink.ensure()
    sink.ensure()  # a second time: no error, nothing changes
    names = {t.table_id for t in client.list_tables(settings.dataset_ref)}
    assert names == {*WAREHOUSE_TABLES, DEAD_LETTER_TABLE}
    assert sink.drift == {}

    gold = client.get_table(settings.table_ref(c.GOLD_TABLE))
    fields = {f.name: (f.field_type, f.mode) for f in gold.schema}
    assert fields[c.PATIENT_KEY] == ("STRING", "REQUIRED") and c.PATIENT_ID not in fields  # key only
    assert fields[c.WINDOW_SECONDS][0] in ("INT64", "INTEGER")  # int32 in Arrow
    assert fields[c.gold_column(c.NEWS2_SCORE, "max")] in (("INT64", "NULLABLE"), ("INTEGER", "NULLABLE"))
    assert fields[c.WINDOW_START] == ("TIMESTAMP", "REQUIRED")
    assert fields[c.EVENT_DATE] == ("DATE", "REQUIRED")
    assert fields[c.KNOWN_PATIENT][0] in ("BOOL", "BOOLEAN")
    assert fields[c.gold_column("heart_rate", "mean")][0] in ("FLOAT64", "FLOAT")
    # The emulator stores partitioning and clustering (DuckDB has neither: they have no effect there).
    assert gold.time_partitioning is not None and gold.time_partitioning.field == c.EVENT_DATE
    assert gold.clustering_fields == list(GOLD.clustering)
    # The catalogue's descriptions, table and columns (the emulator stores them as BigQuery does).
    assert gold.description == catalogue.table_description(c.GOLD_TABLE)
    described = {f.name: f.description for f in gold.schema}
    assert described[c.gold_column("heart_rate", "mean")] == catalogue.describe(
        c.gold_column("heart_rate", "mean")
    )
    assert all(described.values())

    alerts = client.get_table(settings.table_ref(c.ALERTS_TABLE))
    reasons = next(f for f in alerts.schema if f.name == c.ALERT_REASONS)
    assert (reasons.field_type, reasons.mode) == ("STRING", "REPEATED")
    diagnoses = client.get_table(settings.table_ref(c.DIAGNOSIS_TABLE))
    assert diagnoses.time_partitioning is None and not diagnoses.clustering_fields
    dead = client.get_table(settings.table_ref(DEAD_LETTER_TABLE))
    assert dead.time_partitioning is not None and dead.time_partitioning.field == "failed_at"


def test_gold_and_alert_rows_read_back_with_their_types(
    settings: BigQuerySettings, client: bigquery.Client
) -> None:
    sink = BigQuerySink(settings, client=client)
    sink.ensure()
    rows = [
        gold_row("P000001", 0),
        gold_row("P000002", 0, bed=None, **{c.gold_column("heart_rate", "mean"): float("nan")}),
        gold_row("P000003", 1, **{c.RISK_LEVEL: None, c.gold_column(c.NEWS2_SCORE, "max"): None}),
    ]
    result = sink.write(c.GOLD_TABLE, gold_table(rows))
    assert (result.inserted, result.duplicates, result.rejected) == (3, 0, 0)

    job = client.query(f"SELECT * FROM `{settings.table_ref(c.GOLD_TABLE)}` ORDER BY {c.PATIENT_KEY}")
    back = job.result()
    types = {f.name: f.field_type for f in back.schema}
    assert types[c.WINDOW_START] == "TIMESTAMP" and types[c.EVENT_DATE] == "DATE"
    assert types[c.WINDOW_SECONDS] in ("INT64", "INTEGER") and types[c.KNOWN_PATIENT] in ("BOOL", "BOOLEAN")
    got = [dict(r) for r in back]
    assert got == [{k: expected_json_value(v) for k, v in r.items()} for r in rows]
    assert got[0][c.LAST_READING_TIME] == T0 + timedelta(seconds=55, microseconds=250)  # microseconds kept
    assert isinstance(got[0][c.EVENT_DATE], date) and got[0][c.WINDOW_START].tzinfo is not None

    alerts = alert_table(3)
    result = sink.write(c.ALERTS_TABLE, alerts)
    assert result.inserted == 3
    back_alerts = query(
        client,
        f"SELECT {c.ALERT_ID}, {c.ALERT_REASONS}, {c.ANOMALY_SCORE} FROM "
        f"`{settings.table_ref(c.ALERTS_TABLE)}` ORDER BY {c.ALERT_ID}",
    )
    assert [r[c.ALERT_REASONS] for r in back_alerts] == [
        [],
        ["news2_emergency", "model"],
        ["news2_emergency"],
    ]
    assert [r[c.ANOMALY_SCORE] for r in back_alerts] == [None, 0.93, 0.93]  # NaN -> NULL


def test_same_rows_again_are_not_duplicated(emulator: BigQueryEmulator, proxy: FaultProxy) -> None:
    settings = fresh_settings(proxy.endpoint)
    rows = gold_table([gold_row(f"P{i:06d}", i % 3) for i in range(6)])
    with BigQuerySink(settings) as sink:
        sink.ensure()
        first = sink.write(c.GOLD_TABLE, rows)
        second = sink.write(c.GOLD_TABLE, rows)  # a retried batch
        doubled = sink.write(c.GOLD_TABLE, pa.concat_tables([rows.slice(0, 2), rows.slice(0, 2)]))
        assert (first.inserted, first.duplicates) == (6, 0)
        assert (second.inserted, second.duplicates) == (0, 6)
        assert (doubled.inserted, doubled.duplicates) == (0, 4)
        assert count(sink.client, settings, c.GOLD_TABLE) == 6

        # Every row went over the wire once, with its deterministic insert id.
        sent = [i for table, ids in proxy.inserts if table == c.GOLD_TABLE for i in ids]
        assert sent == GOLD.insert_ids(rows)

    # A new sink (another worker, a restart) cannot know what was sent: it sends the same insert ids,
    # which real BigQuery drops (best effort, about a minute). The emulator ignores insertId and
    # stores them again (measured, bqemulator 1.4.0): the base views (newest per key) absorb that.
    with BigQuerySink(settings) as other:
        assert other.write(c.GOLD_TABLE, rows).inserted == 6
        resent = [i for table, ids in proxy.inserts if table == c.GOLD_TABLE for i in ids][6:]
        assert resent == GOLD.insert_ids(rows)
        assert count(other.client, settings, c.GOLD_TABLE) == 12


def drifted_gold_table(cl: bigquery.Client, s: BigQuerySettings) -> None:
    """Gold as an older deployment created it: ``bed`` was a bed number (INT64), now it is text."""
    cl.create_dataset(s.dataset_ref, exists_ok=True)
    fields = [
        bigquery.SchemaField(c.BED, "INT64") if f.name == c.BED else f for f in bigquery_schema(GOLD.schema)
    ]
    cl.create_table(bigquery.Table(s.table_ref(c.GOLD_TABLE), schema=fields))


def test_refused_row_goes_to_dead_letter_and_the_rest_lands(
    settings: BigQuerySettings, client: bigquery.Client
) -> None:
    drifted_gold_table(client, settings)
    sink = BigQuerySink(settings, client=client)
    sink.ensure()  # creates the other tables, leaves Gold alone and reports how it differs
    assert list(sink.drift) == [c.GOLD_TABLE]
    assert any(c.BED in d and "INT64" in d for d in sink.drift[c.GOLD_TABLE])

    rows = gold_table(
        [
            gold_row("P000001", 0, bed="12"),
            gold_row("P000002", 0, bed="ICU-03"),
            gold_row("P000003", 0, bed=None),
        ]
    )
    result = sink.write(c.GOLD_TABLE, rows)
    assert (result.inserted, result.duplicates, result.rejected) == (2, 0, 1)
    bad_id = GOLD.insert_ids(rows)[1]
    assert len(result.errors) == 1 and result.errors[0].startswith(bad_id)

    landed = query(
        client, f"SELECT {c.PATIENT_KEY}, {c.BED} FROM `{settings.table_ref(c.GOLD_TABLE)}` ORDER BY 1"
    )
    assert landed == [{c.PATIENT_KEY: "key-P000001", c.BED: 12}, {c.PATIENT_KEY: "key-P000003", c.BED: None}]
    dead = query(client, f"SELECT * FROM `{settings.table_ref(DEAD_LETTER_TABLE)}`")
    assert len(dead) == 1
    letter = dead[0]
    assert letter["table_name"] == c.GOLD_TABLE and letter["insert_id"] == bad_id
    assert "invalid" in letter["error"] and "Cannot convert" in letter["error"]
    print(f"\ndead letter error: {letter['error']}")
    assert json.loads(letter["row_json"])[c.BED] == "ICU-03"
    assert json.loads(letter["row_json"])[c.WINDOW_START] == T0.isoformat()
    assert abs(letter["failed_at"] - datetime.now(UTC)) < timedelta(minutes=1)


def test_dead_letters_are_replayed_once_the_table_is_fixed(
    settings: BigQuerySettings,
    client: bigquery.Client,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``vitals-lake replay-dead-letters`` (the runbook's command) against the emulator."""
    drifted_gold_table(client, settings)
    sink = BigQuerySink(settings, client=client)
    sink.ensure()
    rows = gold_table([gold_row("P000001", 0), gold_row("P000002", 0, bed="ICU-03")])
    assert sink.write(c.GOLD_TABLE, rows).rejected == 1
    for name, value in (
        ("VITALS_BQ_ENDPOINT", str(settings.api_endpoint)),
        ("VITALS_BQ_DATASET", settings.dataset),
        ("VITALS_GCP_PROJECT", settings.project),
        ("VITALS_BQ_RETRY_DEADLINE", "20"),
    ):
        monkeypatch.setenv(name, value)

    def replay(*args: str) -> tuple[int, dict[str, Any]]:
        status = warehouse_replay.main([*args, "--json"])
        return status, json.loads(capsys.readouterr().out)

    status, report = replay()  # the table is still wrong: refused again, kept, exit 1
    assert status == 1 and (report["read"], report["replayed"], report["refused_again"]) == (1, 0, 1)
    assert count(client, settings, DEAD_LETTER_TABLE) == 1

    client.delete_table(settings.table_ref(c.GOLD_TABLE))  # the fix: Gold as the contract has it
    sink.ensure()
    assert sink.drift == {}
    status, report = replay("--table", c.GOLD_TABLE)
    assert status == 0 and (report["read"], report["replayed"], report["refused_again"]) == (1, 1, 0)
    landed = query(client, f"SELECT {c.PATIENT_KEY}, {c.BED} FROM `{settings.table_ref(c.GOLD_TABLE)}`")
    assert landed == [{c.PATIENT_KEY: "key-P000002", c.BED: "ICU-03"}]

    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert replay("--since", later)[1]["read"] == 0  # past the letters an earlier replay covered
    assert replay("--table", c.ALERTS_TABLE)[1]["read"] == 0


def test_a_table_of_an_older_contract_gains_the_new_columns_and_keeps_its_rows(
    settings: BigQuerySettings, client: bigquery.Client
) -> None:
    """Additive schema evolution (docs/schema-evolution.md): Gold as a version without the diastolic
    pressure created it, holding a row; ensure() adds the new columns, described, in place.

    The emulator records the new columns but does not alter its storage (an insertAll naming them
    answers 500, and so does its ALTER TABLE DDL), so rows written after the change are checked on the
    local DuckDB warehouse (tests/unit/test_duck_warehouse.py), not here."""
    new = [f for f in bigquery_schema(GOLD.schema) if f.name.startswith(c.DIASTOLIC)]
    old_schema = [f for f in bigquery_schema(GOLD.schema) if f not in new]
    assert len(new) == len(c.GOLD_STATS)
    client.create_dataset(settings.dataset_ref, exists_ok=True)
    client.create_table(bigquery.Table(settings.table_ref(c.GOLD_TABLE), schema=old_schema))
    row = json_rows(gold_table([gold_row("P000001", 0)]))[0]
    old_row = {k: v for k, v in row.items() if k in {f.name for f in old_schema}}
    assert not client.insert_rows_json(settings.table_ref(c.GOLD_TABLE), [old_row])

    sink = BigQuerySink(settings, client=client)
    sink.ensure()
    assert sink.drift == {}
    table = client.get_table(settings.table_ref(c.GOLD_TABLE))
    assert [f.name for f in table.schema] == [f.name for f in old_schema] + [f.name for f in new]
    added = {f.name: f for f in table.schema[len(old_schema) :]}
    assert all(f.mode == "NULLABLE" and f.description == catalogue.describe(n) for n, f in added.items())
    kept = query(client, f"SELECT {c.PATIENT_KEY} FROM `{settings.table_ref(c.GOLD_TABLE)}`")
    assert kept == [{c.PATIENT_KEY: "key-P000001"}]
    sink.ensure()  # a second time: nothing to add
    assert len(client.get_table(settings.table_ref(c.GOLD_TABLE)).schema) == len(GOLD.schema)


def test_dead_letter_failure_raises(settings: BigQuerySettings, client: bigquery.Client) -> None:
    drifted_gold_table(client, settings)  # and no dead_letter table: ensure() was never run
    sink = BigQuerySink(settings, client=client)
    rows = gold_table([gold_row("P000001", 0, bed="ICU-03")])
    with pytest.raises(DeadLetterError, match="could not be dead-lettered"):
        sink.write(c.GOLD_TABLE, rows)


def test_transient_failures_are_retried(emulator: BigQueryEmulator, proxy: FaultProxy) -> None:
    settings = fresh_settings(proxy.endpoint)
    with BigQuerySink(settings) as sink:
        sink.ensure()
        proxy.faults = ["503", "429", "reset"]
        result = sink.write(c.DQ_METRICS_TABLE, dq_table(20))
        assert proxy.served == ["503", "429", "reset"] and proxy.faults == []
        assert (result.inserted, result.rejected) == (20, 0)
        assert sink.transient_errors == 3
        assert count(sink.client, settings, c.DQ_METRICS_TABLE) == 20  # once: faults came before forwarding


def test_outage_past_the_deadline_raises_and_a_retry_succeeds(
    emulator: BigQueryEmulator, proxy: FaultProxy
) -> None:
    settings = fresh_settings(proxy.endpoint, retry_deadline=1.5)
    with BigQuerySink(settings) as sink:
        sink.ensure()
        proxy.always = "503"
        with pytest.raises(BigQueryWriteError, match="insertAll") as failed:
            sink.write(c.DQ_METRICS_TABLE, dq_table(5))
        assert len(proxy.served) >= 2  # retried until the deadline, then gave up
        # Marked as an outage (the pipeline's writer repeats it) with nothing landed before it.
        assert (failed.value.transient, failed.value.inserted) == (True, 0)
        proxy.always = None
        result = sink.write(c.DQ_METRICS_TABLE, dq_table(5))  # what the runner does: the same batch again
        assert (result.inserted, result.duplicates) == (5, 0)  # nothing was acknowledged before
        assert count(sink.client, settings, c.DQ_METRICS_TABLE) == 5


def test_requests_are_split_by_rows_and_bytes(emulator: BigQueryEmulator, proxy: FaultProxy) -> None:
    settings = fresh_settings(proxy.endpoint, max_rows_per_request=500)
    with BigQuerySink(settings) as sink:
        sink.ensure()
        assert sink.write(c.DQ_METRICS_TABLE, dq_table(1_100)).inserted == 1_100
        assert [len(ids) for t, ids in proxy.inserts if t == c.DQ_METRICS_TABLE] == [500, 500, 100]

    small = fresh_settings(proxy.endpoint, max_bytes_per_request=8_000)
    proxy.inserts.clear()
    with BigQuerySink(small) as sink:
        sink.ensure()
        assert sink.write(c.DQ_METRICS_TABLE, dq_table(100)).inserted == 100
        sizes = [len(ids) for t, ids in proxy.inserts if t == c.DQ_METRICS_TABLE]
        assert sum(sizes) == 100 and len(sizes) > 1 and max(sizes) < 100
        assert count(sink.client, small, c.DQ_METRICS_TABLE) == 100


def test_views_are_created_or_replaced(settings: BigQuerySettings, client: bigquery.Client) -> None:
    """What the view deployment relies on: CREATE OR REPLACE VIEW, twice, over a streamed table."""
    sink = BigQuerySink(settings, client=client)
    sink.ensure()
    sink.write(c.GOLD_TABLE, gold_table([gold_row("P000001", 0), gold_row("P000002", 0)]))
    view = settings.table_ref("gold_probe")
    gold = settings.table_ref(c.GOLD_TABLE)
    client.query(f"CREATE OR REPLACE VIEW `{view}` AS SELECT {c.PATIENT_KEY} FROM `{gold}`").result()
    assert len(query(client, f"SELECT * FROM `{view}`")) == 2
    client.query(
        f"CREATE OR REPLACE VIEW `{view}` AS "
        f"SELECT {c.PATIENT_KEY} FROM `{gold}` WHERE {c.PATIENT_KEY} = 'key-P000002'"
    ).result()
    assert query(client, f"SELECT * FROM `{view}`") == [{c.PATIENT_KEY: "key-P000002"}]
    assert client.get_table(view).table_type == "VIEW"


def test_a_venv_that_cannot_be_built_fails_with_what_to_do(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{tmp_path / 'no-such-distribution'}\n")  # fails locally, asks no registry
    with pytest.raises(MissingPrerequisite, match=r"(?s)installing requirements.txt failed.*bootstrap"):
        ensure_emulator_venv(tmp_path / "venv", requirements=requirements)
    assert not emulator_venv(tmp_path / "venv", requirements=requirements).is_built()


def test_settings_are_validated_where_they_enter() -> None:
    env = {"VITALS_BQ_ENDPOINT": "http://127.0.0.1:9050", "VITALS_BQ_DATASET": "vitals"}
    s = BigQuerySettings.from_env(env)
    assert (s.credentials, s.api_endpoint, s.dataset_ref) == (
        "anonymous",
        env["VITALS_BQ_ENDPOINT"],
        "vitals-lake-local.vitals",
    )
    assert BigQuerySettings.from_env({}).credentials == "default"
    for bad in (
        {"credentials": "anonymous"},  # anonymous only against an emulator
        {"dataset": "my-dataset"},
        {"api_endpoint": "127.0.0.1:9050"},
        {"credentials": "service-account"},  # without a key file
        {"max_rows_per_request": 0},
    ):
        with pytest.raises(ConfigError):
            BigQuerySettings(**bad)


def test_forget_patient_deletes_their_rows_everywhere_and_only_theirs(
    emulator: BigQueryEmulator, proxy: FaultProxy
) -> None:
    settings = fresh_settings(proxy.endpoint)
    with BigQuerySink(settings) as sink:
        sink.ensure()
        sink.write(c.GOLD_TABLE, gold_table([gold_row(p, m) for p in ("P1", "P2") for m in range(3)]))
        sink.write(c.ALERTS_TABLE, alert_table(3))  # P0, P1, P2
        sink.write(c.PATIENT_KEYS_TABLE, identity_table({"P1": "key-P1", "P2": "key-P2"}))
        letter = {"table_name": c.GOLD_TABLE, "error": "refused", "failed_at": T0.isoformat()}
        sink.client.insert_rows_json(
            settings.table_ref(DEAD_LETTER_TABLE),
            [
                {**letter, "insert_id": "x1", "row_json": json.dumps({c.PATIENT_ID: "P1", "bed": 3})},
                {**letter, "insert_id": "x2", "row_json": json.dumps({c.PATIENT_ID: "P11"})},
            ],
        )

        # BigQuery refuses a DELETE over rows still in its streaming buffer: that table is pending,
        # the other tables are erased, and a later run finishes it.
        gold_ref = settings.table_ref(c.GOLD_TABLE)
        proxy.bad_request_when[f"DELETE FROM `{gold_ref}`"] = (
            f"UPDATE or DELETE statement over table {gold_ref} would affect rows in the streaming"
            " buffer, which is not supported"
        )
        first = sink.forget_patient("P1", "key-P1")
        assert first.pending == [c.GOLD_TABLE]
        assert first.deleted[c.ALERTS_TABLE] == 1 and first.deleted[DEAD_LETTER_TABLE] == 1
        assert count(sink.client, settings, c.GOLD_TABLE) == 6

        proxy.bad_request_when.clear()
        again = sink.forget_patient("P1", "key-P1")
        assert again.pending == []
        assert again.deleted[c.GOLD_TABLE] == 3 and again.deleted[c.ALERTS_TABLE] == 0

        def patients(table: str, column: str = c.PATIENT_KEY) -> list[str]:
            rows = query(sink.client, f"SELECT {column} FROM `{settings.table_ref(table)}`")
            return sorted(r[column] for r in rows)

        # Gold and the alerts name patients by key; the identity map by key and id.
        assert patients(c.GOLD_TABLE) == ["key-P2"] * 3
        assert patients(c.ALERTS_TABLE) == ["key-P0", "key-P2"]
        assert patients(c.PATIENT_KEYS_TABLE, c.PATIENT_ID) == ["P2"]
        letters = query(sink.client, f"SELECT row_json FROM `{settings.table_ref(DEAD_LETTER_TABLE)}`")
        assert [json.loads(r["row_json"])[c.PATIENT_ID] for r in letters] == ["P11"]  # not a prefix match


def test_the_forget_patient_command_reaches_bigquery_and_exits_3_while_rows_are_pending(
    emulator: BigQueryEmulator, proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from pipelines import forget_patient  # noqa: PLC0415
    from vitals_lake.config import LocalLake  # noqa: PLC0415
    from vitals_lake.lake import Lake  # noqa: PLC0415
    from vitals_lake.pseudonym import PseudonymKey, pseudonymise  # noqa: PLC0415

    settings = fresh_settings(proxy.endpoint)
    secret = PseudonymKey.from_env().secret
    key = dict(zip(["P7", "P8"], pseudonymise(pa.array(["P7", "P8"]), key=secret).to_pylist(), strict=True))
    with BigQuerySink(settings) as sink:
        sink.ensure()
        sink.write(c.GOLD_TABLE, gold_table([gold_row(p, 0, **{c.PATIENT_KEY: key[p]}) for p in key]))
    Lake(LocalLake(root=tmp_path / "lake")).ensure_all()
    for name, value in {
        "VITALS_GCP_PROJECT": settings.project,
        "VITALS_BQ_DATASET": settings.dataset,
        "VITALS_BQ_ENDPOINT": proxy.endpoint,
        "VITALS_BQ_CREDENTIALS": "anonymous",
    }.items():
        monkeypatch.setenv(name, value)
    argv = ["--lake", str(tmp_path / "lake"), "--patient-id", "P7", "--requested-by", "dpo", "--reason", "r1"]
    argv += ["--bigquery", "--json"]
    proxy.bad_request_when["DELETE FROM"] = (
        "would affect rows in the streaming buffer, which is not supported"
    )
    assert forget_patient.main(argv) == forget_patient.PENDING
    first = json.loads(capsys.readouterr().out)
    assert c.GOLD_TABLE in first["bigquery_pending_tables"] and "P7" not in json.dumps(first)

    proxy.bad_request_when.clear()
    assert forget_patient.main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["bigquery_pending_tables"] == [] and second["bigquery_rows_by_table"][c.GOLD_TABLE] == 1
    rows = query(make_client(settings), f"SELECT {c.PATIENT_KEY} FROM `{settings.table_ref(c.GOLD_TABLE)}`")
    assert [r[c.PATIENT_KEY] for r in rows] == [key["P8"]]


def test_every_view_deploys_to_its_dataset_and_the_reporting_views_hold_keys_only(
    settings: BigQuerySettings, client: bigquery.Client
) -> None:
    """The views' BigQuery SQL as Terraform deploys it: base views beside the tables, the reporting and
    identity views in their own datasets reading the warehouse's; then their rows over streamed Gold."""
    sink = BigQuerySink(settings, client=client)
    sink.ensure()
    keys = {"P000001": "a1b2c3d4e5f60718", "P000002": "0f1e2d3c4b5a6978"}  # keys do not contain the ids
    rows = [gold_row("P000001", m, **{c.PATIENT_KEY: keys["P000001"]}) for m in range(3)]
    rows.append(gold_row("P000002", 0, bed="ICU-03", **{c.PATIENT_KEY: keys["P000002"]}))
    sink.write(c.GOLD_TABLE, gold_table(rows))
    sink.write(c.PATIENT_KEYS_TABLE, identity_table(keys))
    for role in ("reporting", "identity"):
        client.create_dataset(f"{settings.dataset_ref}{views.DATASET_SUFFIX[role]}", exists_ok=True)
    for name in views.view_names():
        client.query(views.bigquery_ddl(name, settings.project, settings.dataset)).result()
        home = views.view_dataset(name, settings.dataset)
        assert client.get_table(f"{settings.project}.{home}.{name}").table_type == "VIEW", name
    reporting = f"{settings.project}.{views.view_dataset('latest_vitals', settings.dataset)}"
    for name in views.PUBLIC_VIEWS:
        got = query(client, f"SELECT * FROM `{reporting}.{name}`")
        assert not any("P00000" in str(v) for r in got for v in r.values()), name
        assert all(c.PATIENT_ID not in r for r in got), name
    latest = query(client, f"SELECT patient_key, bed FROM `{reporting}.latest_vitals` ORDER BY bed")
    identity = f"{settings.project}.{views.view_dataset('patient_identity', settings.dataset)}"
    ids = query(client, f"SELECT patient_key, patient_id FROM `{identity}.patient_identity`")
    assert {r["patient_id"]: r["patient_key"] for r in ids} == keys
    assert [(r["patient_key"], r["bed"]) for r in latest] == [
        (keys["P000001"], "12"),
        (keys["P000002"], "ICU-03"),
    ]
