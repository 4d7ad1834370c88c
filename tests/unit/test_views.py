"""The warehouse views on hand-computed data, in the local DuckDB warehouse (transpiled from the
BigQuery files in sql/views). Every expected value below is worked out by hand in the test."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from vitals_lake import contract as c
from warehouse import views
from warehouse.duck import DuckWarehouse
from warehouse.tables import WAREHOUSE_TABLES

T = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
V1 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)  # first version of a Gold row
V2 = V1 + timedelta(minutes=5)  # a re-sent, newer version


def at(hh: int, mm: int = 0, ss: int = 0, *, day: int = 22) -> datetime:
    return datetime(2026, 11, day, hh, mm, ss, tzinfo=UTC)


def gold(
    patient: str, start: datetime, *, seconds: int = 60, updated: datetime = V1, **values: Any
) -> dict[str, Any]:
    """A Gold row: every nullable column NULL unless given (vital stats by their Gold names)."""
    row: dict[str, Any] = dict.fromkeys(c.GOLD_SCHEMA.names)
    row.update(
        {
            c.WINDOW_SECONDS: seconds,
            c.WINDOW_START: start,
            c.WINDOW_END: start + timedelta(seconds=seconds),
            c.READING_COUNT: 1,
            c.PATIENT_KEY: key_of(patient),
            c.KNOWN_PATIENT: True,
            c.LAST_READING_TIME: start + timedelta(seconds=seconds - 1),
            c.UPDATED_AT: updated,
            c.EVENT_DATE: start.date(),
            c.SCORED_READINGS: 0,
            c.ANOMALOUS_READINGS: 0,
            c.ALERT_READINGS: 0,
        }
    )
    for name, value in values.items():
        assert name in row, name
        row[name] = value
    return row


def alert(
    alert_id: str, state: str, when: datetime, severity: str, *, ward: str | None = "W1", patient: str = "P1"
) -> dict[str, Any]:
    return {
        c.ALERT_ID: alert_id,
        c.ALERT_STATE: state,
        c.PATIENT_KEY: key_of(patient),
        c.WARD: ward,
        c.BED: None,
        c.SEVERITY: severity,
        c.ALERT_REASONS: ["news2_emergency"],
        c.NEWS2_SCORE: 7,
        c.ALERT_FLAGS_RAISED: [],
        c.ANOMALY_SCORE: None,
        c.MODEL_VERSION: None,
        # The readings the change is about end before it: their window is not the event's hour.
        c.WINDOW_START: (when - timedelta(minutes=2)).replace(second=0),
        c.WINDOW_END: (when - timedelta(minutes=1)).replace(second=0),
        c.EVENT_TIME: when,
        c.EVENT_DATE: when.date(),
    }


def identity(patient: str, first_seen: datetime) -> dict[str, Any]:
    """A row of the identity map (patient_keys)."""
    return {c.PATIENT_KEY: key_of(patient), c.PATIENT_ID: patient, c.FIRST_SEEN: first_seen}


def dq(batch: str, rule: str, window: datetime, checked: int, failed: int, **kw: Any) -> dict[str, Any]:
    return {
        c.BATCH_ID: batch,
        c.WINDOW_START: window,
        c.LAYER: kw.get("layer", "silver"),
        c.RULE: rule,
        c.ACTION: kw.get("action", "drop"),
        c.CHECKED_ROWS: checked,
        c.PASSED_ROWS: checked - failed,
        c.FAILED_ROWS: failed,
        c.EVENT_DATE: window.date(),
    }


def diagnosis(code: str, description: str, loaded: datetime) -> dict[str, Any]:
    return {c.DIAGNOSIS_CODE: code, c.DIAGNOSIS_DESCRIPTION: description, c.LOADED_AT: loaded}


def table_of(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=WAREHOUSE_TABLES[name].schema)


def put(wh: DuckWarehouse, name: str, rows: list[dict[str, Any]]) -> None:
    result = wh.write(name, table_of(name, rows))
    assert result.rejected == 0, result.errors
    assert result.inserted == len(rows)


# Public views name a patient by key only: ``by(rows, PATIENT)`` indexes them by the id the row helpers'
# key was made from (``gold("P1", ...)`` has key ``key_of("P1")``, which does not contain "P1").
PATIENT: Final = "patient"
_IDS_OF_KEYS: dict[str, str] = {}


def key_of(patient: str) -> str:
    key = hashlib.sha256(patient.encode()).hexdigest()[:16]
    _IDS_OF_KEYS[key] = patient
    return key


def by(rows: pa.Table, *keys: str) -> dict[Any, dict[str, Any]]:
    out = {}
    for r in rows.to_pylist():
        k = tuple(_IDS_OF_KEYS.get(r[c.PATIENT_KEY]) if key == PATIENT else r[key] for key in keys)
        out[k[0] if len(k) == 1 else k] = r
    return out


@pytest.fixture
def wh(tmp_path):
    w = DuckWarehouse(tmp_path / "warehouse.duckdb")
    w.ensure()
    yield w
    w.close()


# --- the SQL files and their transpilation ------------------------------------------------------


def test_every_documented_view_has_a_file():
    names = views.view_names()
    assert set(views.PUBLIC_VIEWS) <= set(names)
    assert set(views.BASE_VIEWS) <= set(names)
    assert set(names) == set(views.PUBLIC_VIEWS) | set(views.BASE_VIEWS) | set(views.IDENTITY_VIEWS)


@pytest.mark.parametrize("name", views.view_names())
def test_transpiles_to_duckdb_without_bigquery_leftovers(name):
    sql = views.duckdb_sql(name)
    # Strip comments, then look for BigQuery-only syntax the transpiler should have rewritten.
    code = re.sub(r"/\*.*?\*/|--[^\n]*", "", sql, flags=re.S)
    leftovers = {m.group(0).strip() for m in re.finditer(r"`|\$\{", code)}
    words = set(re.findall(r"\b[A-Z_0-9]+\b", code))
    leftovers |= words & {"SAFE_DIVIDE", "COUNTIF", "TIMESTAMP_TRUNC", "TIMESTAMP_SUB", "INT64", "FLOAT64"}
    assert not leftovers, f"{name}: {leftovers}\n{sql}"
    assert not re.search(r"\bIF\s*\(", code)
    assert not re.search(r"\bAS\s+STRING\b", code)


@pytest.mark.parametrize("name", views.view_names())
def test_bigquery_sql_is_fully_qualified(name):
    sql = views.bigquery_sql(name, "my-project", "vitals_dw")
    assert "${" not in sql
    tree = sqlglot.parse_one(sql, read="bigquery")
    tables = {t for t in tree.find_all(exp.Table) if t.args.get("db")}
    known = set(WAREHOUSE_TABLES) | set(views.view_names())
    for t in tables:
        assert (t.catalog, t.db) == ("my-project", "vitals_dw")
        assert t.name in known
    unqualified = {t.name for t in tree.find_all(exp.Table) if not t.args.get("db")}
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    assert unqualified <= ctes, f"{name} reads {unqualified - ctes} without project.dataset"
    ddl = views.bigquery_ddl(name, "my-project", "vitals_dw")
    home = {"warehouse": "vitals_dw", "reporting": "vitals_dw_reporting", "identity": "vitals_dw_identity"}
    assert ddl.startswith(f"CREATE OR REPLACE VIEW `my-project.{home[views.dataset_role(name)]}.{name}` AS\n")


def test_bigquery_placeholders_are_validated():
    with pytest.raises(views.ViewError):
        views.bigquery_sql("gold_latest", "My Project", "d")
    with pytest.raises(views.ViewError):
        views.bigquery_sql("gold_latest", "my-project", "bad-dataset; DROP")
    with pytest.raises(views.ViewError):
        views.source("no_such_view")


def test_views_come_after_what_they_read():
    order = views.view_names()
    for name in order:
        for dep in views.dependencies(name) & set(order):
            assert order.index(dep) < order.index(name), (dep, name)


@pytest.mark.parametrize("view", sorted(views.BASE_VIEWS))
def test_base_views_dedupe_by_the_tables_key_and_version(view):
    """The key and version in the SQL are those of tables.py (the sinks' insert ids use them)."""
    spec = WAREHOUSE_TABLES[views.BASE_VIEWS[view]]
    tree = sqlglot.parse_one(views.duckdb_sql(view), read="duckdb")
    assert {t.name for t in tree.find_all(exp.Table)} == {spec.name}
    window = tree.args["qualify"].find(exp.Window)
    assert [col.name for col in window.args["partition_by"]] == list(spec.key)
    order = window.args.get("order")
    if spec.version is None:
        assert order is None
    else:
        (ordered,) = order.expressions
        assert ordered.this.name == spec.version and ordered.args.get("desc")


def test_view_outputs_have_bigquery_compatible_types(wh):
    """No HUGEINT/DECIMAL (DuckDB's SUM/COUNT_IF of integers) where BigQuery returns INT64."""
    for name in set(views.PUBLIC_VIEWS) - {"gold_windows"}:  # gold_windows passes the table's types on
        schema = wh.query(f"SELECT * FROM {name} LIMIT 0").schema
        for f in schema:
            assert not pa.types.is_decimal(f.type), (name, f)
            if pa.types.is_integer(f.type):
                assert f.type == pa.int64(), (name, f)


def test_sessions_run_in_utc_whatever_the_machine_zone(tmp_path, monkeypatch):
    """DuckDB takes its zone from TZ; the warehouse pins UTC, so hours are UTC hours."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30: an unpinned hour bucket would be off by 30 min
    time.tzset()
    try:
        with DuckWarehouse(tmp_path / "w.duckdb") as w:
            w.ensure()
            put(w, c.ALERTS_TABLE, [alert("a1", "opened", at(10, 10), "high")])
            got = w.query("SELECT hour_start FROM ward_alert_counts")["hour_start"].to_pylist()
            assert got == [at(10)]
            assert w.query("SELECT current_setting('TimeZone') AS tz")["tz"][0].as_py() == "UTC"
    finally:
        monkeypatch.undo()  # the machine's own TZ (or none) back, then re-read by the C library
        time.tzset()


# --- gold_latest ------------------------------------------------------------------------------------


def test_gold_latest_keeps_the_newest_version_of_each_window(wh):
    # The newer version arrives first, the older one later: the view must order by version, not arrival.
    put(wh, c.GOLD_TABLE, [gold("P1", at(10), updated=V2, heart_rate_mean=90.0)])
    put(
        wh,
        c.GOLD_TABLE,
        [
            gold("P1", at(10), updated=V1, heart_rate_mean=70.0),
            gold("P1", at(10), seconds=3600, heart_rate_mean=50.0),  # same start, other window size
            gold("P2", at(10), heart_rate_mean=60.0),
        ],
    )
    # A duplicate that slipped past insert-id de-duplication (BigQuery's is best effort).
    wh.query(
        f"INSERT INTO gold_patient_summary SELECT * FROM gold_patient_summary"
        f" WHERE patient_key = '{key_of('P2')}'"
    )
    rows = by(wh.query("SELECT * FROM gold_latest"), PATIENT, c.WINDOW_SECONDS)
    assert {k: r["heart_rate_mean"] for k, r in rows.items()} == {
        ("P1", 60): 90.0,
        ("P1", 3600): 50.0,
        ("P2", 60): 60.0,
    }


# --- minimum necessary: the reporting views carry the pseudonymous key only -------------------------


def _raw_ids_in(table: pa.Table, ids: set[str]) -> list[tuple[str, str]]:
    """Every (column, value) of ``table`` that holds one of ``ids``, whatever the column's type."""
    found = []
    for name in table.column_names:
        for value in table[name].to_pylist():
            if any(i in str(value) for i in ids):
                found.append((name, str(value)))
    return found


def test_reporting_views_never_hold_a_raw_patient_id(wh):
    ids = {"P1", "P2"}
    put(wh, c.GOLD_TABLE, [gold("P1", at(10), **{c.WARD: "A"}), gold("P2", at(10), seconds=3600)])
    put(wh, c.GOLD_TABLE, [gold("P2", at(10, 1), **{c.RISK_LEVEL: "high"})])
    put(wh, c.ALERTS_TABLE, [alert("a1", "opened", at(10, 1), "high", patient="P2")])
    put(wh, c.PATIENT_KEYS_TABLE, [identity("P1", at(10)), identity("P2", at(10))])
    for name in [*views.PUBLIC_VIEWS, *views.BASE_VIEWS]:
        rows = wh.query(f"SELECT * FROM {name}")
        assert c.PATIENT_ID not in rows.column_names, name
        assert _raw_ids_in(rows, ids) == [], name
    # The same scan finds them where they are: the identity map and the identity view.
    assert _raw_ids_in(wh.query(f"SELECT * FROM {c.PATIENT_KEYS_TABLE}"), ids)
    assert _raw_ids_in(wh.query("SELECT * FROM patient_identity"), ids)


def test_patient_identity_maps_each_key_to_its_id_and_latest_bed(wh):
    put(
        wh,
        c.GOLD_TABLE,
        [
            gold("P1", at(10), **{c.WARD: "A", c.BED: "A-1"}),
            gold("P1", at(10, 5), **{c.WARD: "B", c.BED: "B-2"}),
            gold("P1", at(11), seconds=3600, **{c.WARD: "C"}),  # hours do not move the bed
            gold("P2", at(9), **{c.WARD: "A", c.BED: "A-3"}),
        ],
    )
    # P3 has no Gold minute yet. A shard that lost its state appends its keys again: the sink drops
    # the row as a duplicate (insert id = the key), and where one slips through the view keeps the first.
    put(wh, c.PATIENT_KEYS_TABLE, [identity("P1", at(10)), identity("P2", at(9)), identity("P3", at(12))])
    again = table_of(c.PATIENT_KEYS_TABLE, [identity("P1", at(10, 30))])
    assert wh.write(c.PATIENT_KEYS_TABLE, again).duplicates == 1
    later = "TIMESTAMPTZ '2026-11-22 10:30:00Z'"
    wh.query(f"INSERT INTO {c.PATIENT_KEYS_TABLE} VALUES ('{key_of('P1')}', 'P1', {later})")
    got = {r[c.PATIENT_KEY]: r for r in wh.query("SELECT * FROM patient_identity").to_pylist()}
    assert {k: (r[c.PATIENT_ID], r[c.WARD], r[c.BED]) for k, r in got.items()} == {
        key_of("P1"): ("P1", "B", "B-2"),
        key_of("P2"): ("P2", "A", "A-3"),
        key_of("P3"): ("P3", None, None),
    }
    assert got[key_of("P1")]["last_window_start"] == at(10, 5)
    assert got[key_of("P1")][c.FIRST_SEEN] == at(10)


def test_a_reporting_view_may_read_only_the_warehouse_dataset(monkeypatch):
    # Its references name the warehouse dataset: a view of another dataset would not be there.
    monkeypatch.setattr(
        views, "dependencies", lambda name: {"gold_windows"} if name == "latest_vitals" else set()
    )
    with pytest.raises(views.ViewError, match="latest_vitals reads"):
        views.view_names()


# --- patient_risk_scores -------------------------------------------------------------------------


def test_patient_risk_scores_latest_minute_and_trend(wh):
    news2 = c.gold_column(c.NEWS2_SCORE, "max")
    a_mean = c.gold_column(c.ANOMALY_SCORE, "mean")
    a_max = c.gold_column(c.ANOMALY_SCORE, "max")
    rows = [
        # P1: latest minute 10:05. Last hour = minutes after 09:05; previous hour = (08:05, 09:05].
        gold("P1", at(10, 5), updated=V1, **{news2: 3, c.RISK_LEVEL: "medium", c.WARD: "A"}),
        gold(
            "P1",
            at(10, 5),
            updated=V2,
            **{
                news2: 6,
                c.RISK_LEVEL: "high",
                c.WARD: "B",
                c.BED: "B-7",
                a_mean: 0.8,
                a_max: 0.95,
                c.SCORED_READINGS: 3,
                c.READING_COUNT: 4,
                c.ALERT_READINGS: 2,
            },
        ),
        gold("P1", at(9, 30), **{news2: 2, a_mean: 0.2, c.SCORED_READINGS: 1, c.RISK_LEVEL: "low"}),
        gold("P1", at(9, 5), **{news2: 1, c.RISK_LEVEL: "low"}),  # exactly 60 min before: previous hour
        gold("P1", at(8, 30), **{news2: 1, a_mean: 0.1, c.SCORED_READINGS: 2, c.RISK_LEVEL: "low"}),
        gold("P1", at(8, 5), **{news2: 20, a_mean: 0.9, c.SCORED_READINGS: 9}),  # 120 min before: out
        # One-hour rows must not count as minutes.
        gold("P1", at(10), seconds=3600, **{news2: 0, c.RISK_LEVEL: "low"}),
        gold("P1", at(9), seconds=3600, **{news2: 0, c.RISK_LEVEL: "low"}),
        # P2: one minute only: no previous hour.
        gold("P2", at(7, 0), **{news2: 1, c.RISK_LEVEL: "low"}),
        # P3: falling (5, 5 -> 2), with no anomaly scores at all.
        gold("P3", at(11, 0), **{news2: 2, c.RISK_LEVEL: "low-medium"}),
        gold("P3", at(9, 40), **{news2: 5}),
        gold("P3", at(9, 30), **{news2: 5}),
        # P4: stable (3 -> 3.5).
        gold("P4", at(10, 0), **{news2: 4, c.RISK_LEVEL: "medium"}),
        gold("P4", at(9, 30), **{news2: 3}),
        gold("P4", at(8, 30), **{news2: 3}),
    ]
    for row in rows:  # one write per row: versions arrive as separate appends, like a stream
        put(wh, c.GOLD_TABLE, [row])
    got = by(wh.query("SELECT * FROM patient_risk_scores"), PATIENT)
    assert set(got) == {"P1", "P2", "P3", "P4"}
    p1 = got["P1"]
    assert (p1["window_start"], p1["ward"], p1["bed"]) == (at(10, 5), "B", "B-7")
    assert (p1["risk_level"], p1["risk_rank"], p1["news2_score_max"]) == ("high", 3, 6)
    assert (p1["anomaly_score_max"], p1["reading_count"], p1["alert_readings"]) == (0.95, 4, 2)
    assert p1["news2_last_hour"] == pytest.approx((6 + 2) / 2)
    assert p1["news2_previous_hour"] == pytest.approx((1 + 1) / 2)
    assert p1["news2_change"] == pytest.approx(3.0)
    assert p1["news2_trend"] == "rising"
    assert p1["anomaly_last_hour"] == pytest.approx((0.8 * 3 + 0.2 * 1) / 4)  # weighted: 0.65
    assert p1["anomaly_previous_hour"] == pytest.approx(0.1)
    assert p1["anomaly_change"] == pytest.approx(0.55)

    p2 = got["P2"]
    assert (p2["risk_level"], p2["risk_rank"], p2["news2_last_hour"]) == ("low", 0, 1.0)
    assert p2["news2_previous_hour"] is None and p2["news2_trend"] == "unknown"

    p3 = got["P3"]
    assert (p3["news2_last_hour"], p3["news2_previous_hour"], p3["news2_trend"]) == (2.0, 5.0, "falling")
    assert p3["anomaly_last_hour"] is None and p3["risk_rank"] == 1

    p4 = got["P4"]
    assert (p4["news2_last_hour"], p4["news2_previous_hour"], p4["news2_trend"]) == (3.5, 3.0, "stable")


# --- ward_alert_counts --------------------------------------------------------------------------


def test_ward_alert_counts_per_ward_hour_and_severity(wh):
    events = [
        alert("a1", "opened", at(10, 10), "medium", patient="P1"),
        alert("a1", "escalated", at(10, 50), "high", patient="P1"),
        alert("a1", "resolved", at(11, 5), "high", patient="P1"),
        alert("a2", "opened", at(10, 59, 59), "medium", patient="P2"),
        alert("a3", "opened", at(11, 0, 0), "medium", patient="P1"),  # on the hour: counts in 11:00
        alert("a4", "opened", at(10, 20), "low-medium", ward=None, patient="P9"),
        alert("a5", "opened", at(23, 30, day=21), "high", ward="W2", patient="P5"),  # the day before
    ]
    put(wh, c.ALERTS_TABLE, events)
    # The same events again (a retried write) and a copy that slipped into the table directly.
    assert wh.write(c.ALERTS_TABLE, table_of(c.ALERTS_TABLE, events[:2])).duplicates == 2
    wh.query("INSERT INTO alerts SELECT * FROM alerts WHERE alert_id = 'a2'")
    got = by(wh.query("SELECT * FROM ward_alert_counts"), "ward", "hour_start", "severity")
    counts = {
        k: (
            r["opened_alerts"],
            r["escalated_alerts"],
            r["resolved_alerts"],
            r["raised_alerts"],
            r["patients"],
        )
        for k, r in got.items()
    }
    assert counts == {
        ("W1", at(10), "medium"): (2, 0, 0, 2, 2),
        ("W1", at(10), "high"): (0, 1, 0, 1, 1),
        ("W1", at(11), "high"): (0, 0, 1, 0, 0),
        ("W1", at(11), "medium"): (1, 0, 0, 1, 1),
        ("UNKNOWN", at(10), "low-medium"): (1, 0, 0, 1, 1),
        ("W2", at(23, day=21), "high"): (1, 0, 0, 1, 1),
    }


# --- vital_signs_hourly_trend ----------------------------------------------------------------------


def test_vital_signs_hourly_trend_patient_and_hospital_grains(wh):
    h = {"seconds": 3600}
    a_mean = c.gold_column(c.ANOMALY_SCORE, "mean")
    rows = [
        gold("P1", at(10), **h, updated=V1, heart_rate_mean=80.0, heart_rate_count=10, reading_count=10),
        gold(
            "P1",
            at(10),
            **h,
            updated=V2,
            heart_rate_mean=70.0,
            heart_rate_count=10,
            temperature_mean=37.0,
            temperature_count=10,
            reading_count=12,
            ward="A",
            **{a_mean: 0.5, c.SCORED_READINGS: 4, c.ALERT_READINGS: 3, c.RISK_LEVEL: "medium"},
        ),
        gold(
            "P2",
            at(10),
            **h,
            heart_rate_mean=100.0,
            heart_rate_count=30,
            temperature_count=0,
            reading_count=30,
            **{a_mean: 0.1, c.SCORED_READINGS: 1, c.RISK_LEVEL: "high", c.ALERT_READINGS: 1},
        ),
        gold("P1", at(11), **h, heart_rate_mean=75.0, heart_rate_count=5, reading_count=5),
        # A minute row with wild values: not an hourly trend.
        gold("P2", at(10, 30), heart_rate_mean=500.0, heart_rate_count=1000, reading_count=1000),
    ]
    for row in rows:
        put(wh, c.GOLD_TABLE, [row])
    got = by(wh.query("SELECT * FROM vital_signs_hourly_trend"), "scope", "hour_start", PATIENT)
    assert set(got) == {
        ("patient", at(10), "P1"),
        ("patient", at(10), "P2"),
        ("patient", at(11), "P1"),
        ("hospital", at(10), None),
        ("hospital", at(11), None),
    }
    p1 = got[("patient", at(10), "P1")]
    assert (p1["heart_rate_mean"], p1["readings"], p1["ward"], p1["patients"]) == (70.0, 12, "A", 1)
    assert (p1["high_risk_patients"], got[("patient", at(10), "P2")]["high_risk_patients"]) == (0, 1)
    h10 = got[("hospital", at(10), None)]
    assert h10["patients"] == 2
    assert h10["readings"] == 12 + 30
    assert h10["heart_rate_mean"] == pytest.approx((70 * 10 + 100 * 30) / 40)  # 92.5, not (70+100)/2
    assert h10["temperature_mean"] == pytest.approx(37.0)  # P2 has no temperature
    assert h10["spo2_mean"] is None
    assert h10["anomaly_score_mean"] == pytest.approx((0.5 * 4 + 0.1 * 1) / 5)
    assert (h10["alert_readings"], h10["high_risk_patients"], h10["ward"]) == (4, 1, None)
    h11 = got[("hospital", at(11), None)]
    assert (h11["patients"], h11["readings"], h11["heart_rate_mean"]) == (1, 5, 75.0)


# --- diagnosis_summary ---------------------------------------------------------------------------


def test_diagnosis_summary_per_code_with_description(wh):
    put(
        wh,
        c.DIAGNOSIS_TABLE,
        [
            diagnosis("I10", "Hypertension", V1),
            diagnosis("J44.0", "COPD with acute lower respiratory infection", V1),
        ],
    )
    put(wh, c.DIAGNOSIS_TABLE, [diagnosis("I10", "Essential (primary) hypertension", V2)])  # reloaded
    h = {"seconds": 3600}
    rows = [
        gold(
            "P1",
            at(10),
            **h,
            diagnosis_code="I10",
            risk_level="high",
            heart_rate_mean=80.0,
            heart_rate_count=10,
            reading_count=10,
            news2_score_max=8,
        ),
        gold(
            "P1",
            at(11),
            **h,
            diagnosis_code="I10",
            risk_level="low",
            heart_rate_mean=90.0,
            heart_rate_count=10,
            reading_count=10,
            news2_score_max=1,
        ),
        gold(
            "P2",
            at(10),
            **h,
            updated=V1,
            diagnosis_code="I10",
            risk_level="medium",
            heart_rate_mean=60.0,
            heart_rate_count=20,
            reading_count=20,
        ),
        gold(
            "P2",
            at(10),
            **h,
            updated=V2,
            diagnosis_code="I10",
            risk_level="high",
            heart_rate_mean=60.0,
            heart_rate_count=20,
            reading_count=21,
        ),
        gold("P4", at(12), **h, diagnosis_code="I10", risk_level="low", reading_count=2),
        gold(
            "P3",
            at(10),
            **h,
            diagnosis_code=None,
            risk_level="low",
            heart_rate_mean=50.0,
            heart_rate_count=1,
            reading_count=1,
        ),
        gold("P5", at(10, 1), diagnosis_code="J44.0", risk_level="high"),  # a minute row: not counted
    ]
    for row in rows:
        put(wh, c.GOLD_TABLE, [row])
    got = by(wh.query("SELECT * FROM diagnosis_summary"), c.DIAGNOSIS_CODE)
    assert set(got) == {"I10", "UNKNOWN"}  # J44.0 has no one-hour rows
    i10 = got["I10"]
    assert i10["diagnosis_description"] == "Essential (primary) hypertension"
    assert (i10["patients"], i10["readings"]) == (3, 10 + 10 + 21 + 2)
    assert i10["heart_rate_mean"] == pytest.approx((80 * 10 + 90 * 10 + 60 * 20) / 40)  # 72.5
    assert (i10["high_risk_patients"], i10["news2_score_max"]) == (2, 8)  # P1 (10:00) and P2 (v2)
    assert i10["high_risk_share"] == pytest.approx(2 / 3)
    assert (i10["first_hour"], i10["last_hour"]) == (at(10), at(12))
    unknown = got["UNKNOWN"]
    assert (unknown["diagnosis_description"], unknown["patients"], unknown["high_risk_share"]) == (
        None,
        1,
        0.0,
    )


# --- latest_vitals --------------------------------------------------------------------------------


def test_latest_vitals_carries_the_last_measured_value(wh):
    rows = [
        gold("P1", at(10, 0), heart_rate_last=70.0, systolic_last=120.0, temperature_last=37.0, ward="A"),
        gold("P1", at(10, 1), heart_rate_last=75.0),
        gold("P1", at(10, 2), updated=V1, heart_rate_last=80.0, temperature_last=37.5, ward="A"),
        gold(
            "P1",
            at(10, 2),
            updated=V2,
            heart_rate_last=82.0,
            temperature_last=37.5,
            ward="B",
            risk_level="medium",
            news2_score_max=5,
        ),
        gold("P1", at(10), seconds=3600, heart_rate_last=999.0, spo2_last=50.0),  # hour row: ignored
        gold("P2", at(9, 0), spo2_last=96.0, diastolic_last=80.0),
    ]
    for row in rows:
        put(wh, c.GOLD_TABLE, [row])
    got = by(wh.query("SELECT * FROM latest_vitals"), PATIENT)
    p1 = got["P1"]
    assert (p1["window_start"], p1["ward"], p1["risk_level"], p1["news2_score_max"]) == (
        at(10, 2),
        "B",
        "medium",
        5,
    )
    assert (p1["heart_rate"], p1["heart_rate_minute"]) == (82.0, at(10, 2))
    assert (p1["systolic"], p1["systolic_minute"]) == (120.0, at(10, 0))
    assert (p1["temperature"], p1["temperature_minute"]) == (37.5, at(10, 2))
    assert (p1["spo2"], p1["spo2_minute"]) == (None, None)
    p2 = got["P2"]
    assert (p2["spo2"], p2["diastolic"], p2["heart_rate"]) == (96.0, 80.0, None)


# --- data_quality_daily ---------------------------------------------------------------------------


def test_data_quality_daily_per_day_and_rule(wh):
    put(
        wh,
        c.DQ_METRICS_TABLE,
        [
            dq("b1", "possible_range", at(10, day=21), 100, 5),
            dq("b2", "possible_range", at(23, 59, 55, day=21), 50, 0),
            dq("b2", "not_null", at(23, 59, 55, day=21), 50, 2),
            dq("b3", "possible_range", at(0, 0, 5), 0, 0),  # the next day, nothing checked
            dq("b3", "possible_range", at(0, 0, 5), 40, 4, layer="bronze", action="warn"),
        ],
    )
    wh.query("INSERT INTO dq_metrics SELECT * FROM dq_metrics WHERE batch_id = 'b1'")  # slipped copy
    got = by(wh.query("SELECT * FROM data_quality_daily"), "day", c.LAYER, c.RULE)
    summary = {
        k: (r["batches"], r["checked_rows"], r["passed_rows"], r["failed_rows"], r["failure_rate"])
        for k, r in got.items()
    }
    assert summary == {
        (date(2026, 11, 21), "silver", "possible_range"): (2, 150, 145, 5, pytest.approx(5 / 150)),
        (date(2026, 11, 21), "silver", "not_null"): (1, 50, 48, 2, pytest.approx(0.04)),
        (date(2026, 11, 22), "silver", "possible_range"): (1, 0, 0, 0, None),
        (date(2026, 11, 22), "bronze", "possible_range"): (1, 40, 36, 4, pytest.approx(0.1)),
    }
    assert got[(date(2026, 11, 22), "bronze", "possible_range")][c.ACTION] == "warn"
