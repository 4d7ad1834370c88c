"""Delta maintenance on a local lake: compaction, z-order, vacuum and safety next to a live writer."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Final

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from tests.factories import raw, reading
from vitals_lake import contract as c
from vitals_lake import envelope, maintenance
from vitals_lake.config import ConfigError, LocalLake
from vitals_lake.lake import Lake
from vitals_lake.maintenance import (
    MaintenanceOptions,
    MaintenanceReport,
    PartitionReport,
    TableReport,
    main,
    maintain,
    with_conflict_retries,
)

TODAY: Final = datetime.now(UTC).date()
YESTERDAY: Final = TODAY - timedelta(days=1)
EARLIER: Final = TODAY - timedelta(days=2)
SHORT: Final = MaintenanceOptions(retention_hours=0, allow_short_retention=True)


def pin_maintenance_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are dated at import and maintenance reads the clock when it runs: a suite that crosses
    midnight UTC would find "today" finished and the 30th day expired. Maintenance runs at TODAY noon."""
    monkeypatch.setattr(maintenance, "utc_now", lambda: datetime.combine(TODAY, dtime(12), UTC))


@pytest.fixture(autouse=True)
def _maintenance_day(monkeypatch: pytest.MonkeyPatch) -> None:
    pin_maintenance_clock(monkeypatch)


# --- row builders (shared with test_gcs_lake) ------------------------------------------------------
def bronze_rows(n: int, *, day: date, start: int = 0, writer: str = "w") -> pa.Table:
    """Bronze rows the way the pipeline builds them (raw device JSON → envelope → to_bronze)."""
    lines = [raw(reading(i, patient=f"P{i % 7:06d}")) for i in range(start, start + n)]
    # Milliseconds keep even large ``start`` values inside ``day`` (the ingest_date partition).
    ingest = datetime.combine(day, dtime(12), tzinfo=UTC) + timedelta(milliseconds=start)
    return envelope.to_bronze(
        envelope.records_from_lines(lines),
        ingest_time_us=int(ingest.timestamp() * 1_000_000),
        ref_prefix=f"file:{writer}:{start}",
    )


def synthetic_rows(
    layer: c.Layer, n: int, *, day: date, start: int = 0, patients: int = 7, tag: str = "r"
) -> pa.Table:
    """``n`` rows of any contract table, built from its schema: unique per index, all dated ``day``.

    Built from the schema rather than the pipeline so these tests follow schema changes by themselves.
    """
    spec = c.TABLES[layer]
    base = datetime.combine(day, dtime(1), tzinfo=UTC)
    idx = range(start, start + n)
    columns = []
    for f in spec.schema:
        t = f.type
        vals: list[object]
        if f.name in (c.PATIENT_ID, c.PATIENT_KEY):
            vals = [f"P{i % patients:06d}" for i in idx]
        elif f.name == c.WINDOW_SECONDS:  # a partition column of Gold: one-minute windows, one partition
            vals = [60] * n
        elif pa.types.is_date32(t):
            vals = [day] * n
        elif pa.types.is_timestamp(t):
            vals = [base + timedelta(seconds=i) for i in idx]
        elif pa.types.is_string(t):
            vals = [f"{tag}-{f.name}-{i}" for i in idx]
        elif pa.types.is_binary(t):
            vals = [f"{tag}-{i}".encode() for i in idx]
        elif pa.types.is_boolean(t):
            vals = [i % 2 == 0 for i in idx]
        elif pa.types.is_integer(t):
            vals = [i % 100 for i in idx]
        elif pa.types.is_floating(t):
            vals = [i * 0.5 for i in idx]
        elif pa.types.is_list(t):
            vals = [[f"{tag}-{i}"] for i in idx]
        else:
            raise TypeError(f"no synthetic value for {spec.name}.{f.name}: {t}")
        columns.append(pa.array(vals, t))
    return pa.Table.from_arrays(columns, schema=spec.schema)


def sorted_rows(table: pa.Table, *keys: str) -> list[dict[str, object]]:
    return table.sort_by([(k, "ascending") for k in keys]).to_pylist()


def partition_files(lake: Lake, layer: c.Layer) -> dict[date, set[str]]:
    """Data file paths per date partition in the current snapshot."""
    column = c.TABLES[layer].partition_by[0]
    actions = pa.table(DeltaTable(lake.uri(layer)).get_add_actions(flatten=True))
    out: dict[date, set[str]] = {}
    for path, day in zip(
        actions["path"].to_pylist(), actions[f"partition.{column}"].to_pylist(), strict=True
    ):
        out.setdefault(day, set()).add(path)
    return out


def table_report(report: MaintenanceReport, layer: str) -> TableReport:
    return next(t for t in report.tables if t.layer == layer)


def partition(report: TableReport, column: str, day: date) -> PartitionReport:
    return next(p for p in report.partitions if p.partition == f"{column}={day.isoformat()}")


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(LocalLake(root=tmp_path / "lake"))


@pytest.fixture
def bronze_lake(lake: Lake) -> Lake:
    """Bronze with 6 small commits in each of two finished days and today."""
    for day_index, day in enumerate((EARLIER, YESTERDAY, TODAY)):
        for k in range(6):
            lake.append("bronze", bronze_rows(20, day=day, start=day_index * 1000 + k * 20))
    return lake


# --- tests -------------------------------------------------------------------------------------------
def test_compaction_shrinks_finished_partitions_and_leaves_today_alone(bronze_lake: Lake) -> None:
    lake = bronze_lake
    before_rows = lake.read("bronze")
    before_files = partition_files(lake, "bronze")
    assert {d: len(f) for d, f in before_files.items()} == {EARLIER: 6, YESTERDAY: 6, TODAY: 6}

    report = table_report(maintain(lake, ["bronze"]), "bronze")

    after_files = partition_files(lake, "bronze")
    assert len(after_files[EARLIER]) == 1
    assert len(after_files[YESTERDAY]) == 1
    assert after_files[TODAY] == before_files[TODAY]  # the live partition: same files, untouched
    assert report.live_partitions == [f"{c.INGEST_DATE}={TODAY.isoformat()}"]
    done = partition(report, c.INGEST_DATE, YESTERDAY)
    assert (done.operation, done.files_before, done.files_after) == ("compact", 6, 1)
    assert done.bytes_after > 0
    assert report.checkpoint_version == report.version_after == report.version_before + 2
    # Same rows, byte for byte.
    assert lake.count("bronze") == before_rows.num_rows == 360
    assert sorted_rows(lake.read("bronze"), c.RECORD_REF) == sorted_rows(before_rows, c.RECORD_REF)
    # A second run finds nothing to do.
    again = table_report(maintain(lake, ["bronze"]), "bronze")
    assert {p.operation for p in again.partitions} == {"skipped"}
    assert again.version_after == report.version_after


def test_z_order_keeps_content_and_records_the_clustering(lake: Lake) -> None:
    for k in range(5):  # patients interleaved across commits
        lake.append("gold", synthetic_rows("gold", 40, day=YESTERDAY, start=k * 40, patients=9))
    before = lake.read("gold")

    report = table_report(maintain(lake, ["gold"]), "gold")

    p = partition(report, c.EVENT_DATE, YESTERDAY)
    assert (p.operation, p.files_before, p.files_after) == ("z_order", 5, 1)
    last = DeltaTable(lake.uri("gold")).history(1)[0]
    assert last["operation"] == "OPTIMIZE"
    assert last["operationMetrics"]["plannerStrategy"] == "zOrder"
    after = lake.read("gold")
    assert sorted_rows(after, *c.GOLD_KEY) == sorted_rows(before, *c.GOLD_KEY)
    # Clustered: the one rewritten file holds each patient's rows together (9 patients: 8 changes),
    # where the appended files alternated patients on every row.
    patients = after[c.PATIENT_KEY].to_pylist()
    assert sum(a != b for a, b in itertools.pairwise(patients)) == 8


def test_vacuum_only_lists_by_default_and_refuses_short_retention_without_the_flag(bronze_lake: Lake) -> None:
    lake = bronze_lake
    root = Path(lake.uri("bronze"))
    with pytest.raises(ConfigError, match="allow_short_retention"):
        MaintenanceOptions(retention_hours=1)

    report = table_report(maintain(lake, ["bronze"], SHORT), "bronze")

    # The 12 files compaction replaced are listed, not deleted.
    assert len(report.vacuum_files) == 12
    assert not report.vacuum_deleted
    assert all((root / f).exists() for f in report.vacuum_files)
    expected = sorted_rows(lake.read("bronze"), c.RECORD_REF)

    deleting = MaintenanceOptions(retention_hours=0, allow_short_retention=True, vacuum_delete=True)
    deleted = table_report(maintain(lake, ["bronze"], deleting), "bronze")
    assert deleted.vacuum_deleted
    assert sorted(deleted.vacuum_files) == sorted(report.vacuum_files)
    assert not any((root / f).exists() for f in report.vacuum_files)
    assert sorted_rows(lake.read("bronze"), c.RECORD_REF) == expected


def test_dry_run_changes_nothing_and_the_cli_reports_json(
    bronze_lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = bronze_lake
    version = lake.version("bronze")
    root = str(Path(lake.uri("bronze")).parent)

    assert main(["--lake", root, "--table", "bronze", "--dry-run", "--json"]) == 0

    out = json.loads(capsys.readouterr().out)
    (table,) = out["tables"]
    assert table["table"] == c.BRONZE_TABLE
    assert {p["partition"]: p["files_before"] for p in table["partitions"]} == {
        f"{c.INGEST_DATE}={EARLIER.isoformat()}": 6,
        f"{c.INGEST_DATE}={YESTERDAY.isoformat()}": 6,
    }
    assert lake.version("bronze") == version
    assert {d: len(f) for d, f in partition_files(lake, "bronze").items()} == {
        EARLIER: 6,
        YESTERDAY: 6,
        TODAY: 6,
    }
    # Below 168 h without the explicit flag: refused with exit code 2.
    assert main(["--lake", root, "--retention-hours", "1"]) == 2
    assert "allow-short-retention" in capsys.readouterr().err


def test_maintenance_next_to_a_live_writer_loses_no_commit(bronze_lake: Lake) -> None:
    """A writer appends to a finished partition (late data) and to today while maintenance loops."""
    lake = bronze_lake
    commits, rows_per_commit = 40, 10
    expected = set(lake.read("bronze", columns=[c.RECORD_REF])[c.RECORD_REF].to_pylist())
    errors: list[BaseException] = []
    written: list[pa.Table] = []

    def writer() -> None:
        for k in range(commits):
            rows = bronze_rows(rows_per_commit, day=YESTERDAY if k % 2 else TODAY, start=10_000 + k * 100)
            try:
                lake.append("bronze", rows)
                written.append(rows)
            except BaseException as exc:  # noqa: BLE001 - any failure is the test's finding
                errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    reports = []
    while thread.is_alive():
        reports.append(table_report(maintain(lake, ["bronze"]), "bronze"))
        time.sleep(0.01)
    thread.join()
    reports.append(table_report(maintain(lake, ["bronze"]), "bronze"))

    assert errors == []
    assert len(written) == commits
    for rows in written:
        expected.update(rows[c.RECORD_REF].to_pylist())
    got = lake.read("bronze", columns=[c.RECORD_REF])[c.RECORD_REF].to_pylist()
    assert len(got) == len(expected) == 360 + commits * rows_per_commit
    assert set(got) == expected
    # The race really happened: writer commits landed while a maintenance run was in progress,
    # and maintenance really rewrote the partition the writer was appending to.
    optimized = [sum(p.operation != "skipped" for p in r.partitions) for r in reports]
    assert any(r.version_after - r.version_before > n for r, n in zip(reports, optimized, strict=True))
    assert (
        sum(
            p.partition.endswith(YESTERDAY.isoformat()) and p.operation == "compact"
            for r in reports
            for p in r.partitions
        )
        >= 2
    )
    assert len(partition_files(lake, "bronze")[YESTERDAY]) == 1


def test_a_real_commit_conflict_is_retried_on_a_fresh_snapshot(lake: Lake) -> None:
    for k in range(4):
        lake.append("bronze", bronze_rows(10, day=YESTERDAY, start=k * 10))
    uri = lake.uri("bronze")
    stale = DeltaTable(uri)
    # A concurrent transaction removes a file the stale snapshot's OPTIMIZE is about to rewrite.
    DeltaTable(uri).delete(f"{c.RECORD_REF} = 'file:w:0:3'")
    snapshots = iter([stale])
    sleeps: list[float] = []
    filters = [(c.INGEST_DATE, "=", YESTERDAY.isoformat())]

    def optimize() -> dict[str, object]:
        dt = next(snapshots, None) or DeltaTable(uri)
        return dict(dt.optimize.compact(partition_filters=filters))

    metrics, attempts = with_conflict_retries(optimize, what="test", sleep=sleeps.append)

    assert attempts == 2 and len(sleeps) == 1 and sleeps[0] > 0
    assert metrics["numFilesRemoved"] == 4
    assert lake.count("bronze") == 39  # the concurrent delete survived the retried compaction
    with pytest.raises(CommitFailedError):  # and a conflict that persists is raised, not swallowed
        with_conflict_retries(
            lambda: DeltaTable(uri, version=3).optimize.compact(partition_filters=filters) and None,
            what="test",
            attempts=2,
            sleep=sleeps.append,
        )


def test_partitions_past_their_retention_are_deleted_and_vacuumed_away(lake: Lake) -> None:
    """Bronze keeps 30 days (the contract): the partitions dated 30 and 45 days ago go, with their
    files once vacuumed; 29 days ago and today stay. A dry run only lists; an override keeps all."""
    days = {d: TODAY - timedelta(days=d) for d in (45, 30, 29, 0)}
    for k, day in enumerate(days.values()):
        lake.append("bronze", bronze_rows(10, day=day, start=k * 100))
    assert c.TABLES["bronze"].retention_days == 30
    expired = [f"{c.INGEST_DATE}={days[d].isoformat()}" for d in (45, 30)]

    dry = table_report(maintain(lake, ["bronze"], MaintenanceOptions(dry_run=True)), "bronze")
    assert dry.expired_partitions == expired and dry.expired_rows == 0 and lake.count("bronze") == 40

    forever = MaintenanceOptions(retention_days={"bronze": None})
    assert table_report(maintain(lake, ["bronze"], forever), "bronze").expired_partitions == []
    assert lake.count("bronze") == 40

    files_before = partition_files(lake, "bronze")
    options = MaintenanceOptions(retention_hours=0, allow_short_retention=True, vacuum_delete=True)
    report = table_report(maintain(lake, ["bronze"], options), "bronze")
    assert report.expired_partitions == expired and report.expired_rows == 20
    kept = lake.read("bronze", columns=[c.INGEST_DATE])[c.INGEST_DATE].to_pylist()
    assert sorted(set(kept)) == [days[29], days[0]] and len(kept) == 20
    root = Path(lake.uri("bronze"))
    gone = files_before[days[45]] | files_before[days[30]]
    assert gone and not any((root / f).exists() for f in gone)  # vacuumed: not in history either


def test_retention_overrides_on_the_command_line(lake: Lake, capsys: pytest.CaptureFixture[str]) -> None:
    lake.append("bronze", bronze_rows(5, day=TODAY - timedelta(days=3), start=0))
    lake.append("bronze", bronze_rows(5, day=TODAY, start=100))
    root = str(Path(lake.uri("bronze")).parent)
    assert main(["--lake", root, "--table", "bronze", "--retention-days", "bronze=forever"]) == 0
    assert lake.count("bronze") == 10
    assert main(["--lake", root, "--table", "bronze", "--retention-days", f"{c.BRONZE_TABLE}=2"]) == 0
    assert "past retention" in capsys.readouterr().out and lake.count("bronze") == 5
    assert main(["--lake", root, "--retention-days", "bronze=0"]) == 2
    assert main(["--lake", root, "--retention-days", "bronze"]) == 2
