from __future__ import annotations

import pickle
import random
import shutil
import time
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.factories import T0, bronze, raw, reading, silver_rows
from vitals_lake import contract as c
from vitals_lake import lake as lake_module
from vitals_lake.config import LocalLake
from vitals_lake.engine import silver_commit_row
from vitals_lake.lake import (
    REOPEN_AFTER_VERSIONS,
    BatchMarker,
    Lake,
    TimeSpan,
    _scan,
    first_per_key,
    one_per_key,
)
from vitals_lake.maintenance import MaintenanceOptions, maintain
from vitals_lake.summaries import gold_from_silver


@pytest.fixture
def lake(tmp_path):
    return Lake(LocalLake(root=tmp_path / "lake"))


def silver(indices, patient="P000001"):
    return silver_rows([raw(reading(i, patient=patient)) for i in indices])


def test_tables_are_created_with_schema_partitioning_and_checkpoint_interval(lake):
    lake.ensure_all()
    for layer, spec in c.TABLES.items():
        dt = DeltaTable(lake.uri(layer))
        assert dt.metadata().partition_columns == list(spec.lake_partition_by)
        assert dt.metadata().configuration["delta.checkpointInterval"] == "10"
        assert lake.count(layer) == 0


def test_insert_new_removes_duplicates_within_and_across_batches(lake):
    first, fresh = lake.insert_new(
        "silver",
        silver([*range(100), *range(10)]),
        key=c.EVENT_ID,
        time_column=c.TIMESTAMP,
        horizon=timedelta(minutes=10),
    )
    assert (first.offered, first.inserted, first.duplicates) == (110, 100, 10)
    assert fresh.num_rows == 100
    second, fresh = lake.insert_new(
        "silver",
        silver(range(90, 150)),
        key=c.EVENT_ID,
        time_column=c.TIMESTAMP,
        horizon=timedelta(minutes=10),
    )
    assert (second.inserted, second.duplicates) == (50, 10)
    assert sorted(fresh[c.EVENT_ID].to_pylist()) == sorted(f"evt-P000001-{i}" for i in range(100, 150))
    assert lake.count("silver") == 150


def test_duplicates_outside_the_horizon_are_not_looked_for(lake):
    lake.insert_new("silver", silver([0]), key=c.EVENT_ID, time_column=c.TIMESTAMP, horizon=timedelta(0))
    # Same event_id, but readings 1 h later: outside a zero horizon the earlier row is not scanned.
    first = silver([0])
    late = first.set_column(
        first.schema.get_field_index(c.TIMESTAMP), c.TIMESTAMP, silver([720])[c.TIMESTAMP]
    )
    result, _ = lake.insert_new("silver", late, key=c.EVENT_ID, time_column=c.TIMESTAMP, horizon=timedelta(0))
    assert result.inserted == 1


def test_first_per_key_keeps_arrival_order():
    t = silver([3, 1, 3, 2, 1])
    assert first_per_key(t, c.EVENT_ID)[c.EVENT_ID].to_pylist() == [f"evt-P000001-{i}" for i in (3, 1, 2)]


@pytest.mark.parametrize("keep", ["first", "last"])
@pytest.mark.parametrize("keys", [("a",), ("b",), ("a", "b"), ("b", "a")])
def test_one_per_key_matches_a_row_by_row_reference(keys, keep):
    # Few distinct keys, nulls among them, two chunks: every path of the encoding is exercised.
    rng = random.Random(7)
    a = [rng.choice(["x", "y", "z", None]) for _ in range(400)]
    b = [rng.choice([1, 2, None]) for _ in range(400)]
    rows = pa.concat_tables(
        [
            pa.table({"a": a[:150], "b": b[:150], "n": range(150)}),
            pa.table({"a": a[150:], "b": b[150:], "n": range(150, 400)}),
        ]
    )
    chosen: dict[tuple[object, ...], int] = {}
    for n, row in enumerate(rows.to_pylist()):
        key = tuple(row[k] for k in keys)
        if keep == "last" or key not in chosen:
            chosen[key] = n
    expected = sorted(chosen.values())
    assert one_per_key(rows, keys, keep=keep)["n"].to_pylist() == expected
    assert len(expected) < 20  # duplicates were there to drop


def gold_rows(updated_at_us: int, *, count: int | None = None) -> pa.Table:
    """One Gold minute row of 12 readings; ``count`` overrides its reading count."""
    rows = gold_from_silver(silver(range(12)), window_seconds=60, updated_at_us=updated_at_us)
    if count is not None:
        i = rows.schema.get_field_index(c.READING_COUNT)
        rows = rows.set_column(i, c.READING_COUNT, pa.array([count], rows.schema.field(i).type))
    return rows


def test_upsert_replaces_by_key(lake):
    lake.upsert("gold", gold_rows(1), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    lake.upsert("gold", gold_rows(2, count=99), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    gold = lake.read("gold")
    assert gold.num_rows == 1 and gold[c.READING_COUNT][0].as_py() == 99


def test_a_batch_marker_makes_a_repeated_commit_a_no_op(lake):
    rows = silver(range(10))
    first = lake.append("silver", rows, marker=BatchMarker("silver", "1795327200000000-0"))
    again = lake.append("silver", rows, marker=BatchMarker("silver", "1795327200000000-0"))
    other = lake.append("silver", rows, marker=BatchMarker("silver", "1795327205000000-0"))
    assert (first, again, other) == (True, False, True)
    assert lake.count("silver") == 20


def test_an_older_batch_retried_after_a_newer_one_still_lands(lake):
    # Beam may commit windows out of order: markers are per batch, not a rising version.
    lake.append("bronze", bronze([raw(reading(1))]), marker=BatchMarker("bronze", "2000-0"))
    assert lake.append("bronze", bronze([raw(reading(2))]), marker=BatchMarker("bronze", "1000-0"))
    assert lake.count("bronze") == 2


def test_insert_new_reports_a_replayed_batch_without_writing(lake):
    marker = BatchMarker("silver", "42-0")
    lake.insert_new(
        "silver",
        silver(range(5)),
        key=c.EVENT_ID,
        time_column=c.TIMESTAMP,
        horizon=timedelta(minutes=10),
        marker=marker,
    )
    result, fresh = lake.insert_new(
        "silver",
        silver(range(5, 9)),
        key=c.EVENT_ID,
        time_column=c.TIMESTAMP,
        horizon=timedelta(minutes=10),
        marker=marker,
    )
    assert result.replayed and fresh.num_rows == 0
    assert lake.count("silver") == 5


def test_gold_upsert_with_a_marker_is_applied_once(lake):
    marker = BatchMarker("gold", "7-0")
    lake.upsert(
        "gold",
        gold_rows(1),
        keys=c.GOLD_KEY,
        time_column=c.WINDOW_START,
        marker=marker,
    )
    version = lake.version("gold")
    lake.upsert(
        "gold",
        gold_rows(2),
        keys=c.GOLD_KEY,
        time_column=c.WINDOW_START,
        marker=marker,
    )
    assert lake.version("gold") == version


def test_gold_upsert_retries_when_a_concurrent_rewrite_wins(lake, monkeypatch):
    lake.upsert("gold", gold_rows(1), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    stale = DeltaTable(lake.uri("gold"))
    # Another writer rewrites the same rows (as maintenance's z-order would) after our snapshot.
    lake.upsert("gold", gold_rows(2), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    calls = {"n": 0}
    fresh = lake.ensure

    def ensure_stale_first(layer):
        calls["n"] += 1
        return stale if calls["n"] == 1 else fresh(layer)

    monkeypatch.setattr(lake, "ensure", ensure_stale_first)
    lake.upsert("gold", gold_rows(3, count=99), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    assert calls["n"] >= 2  # the stale attempt conflicted and was retried
    gold = lake.read("gold")
    assert gold.num_rows == 1 and gold[c.READING_COUNT][0].as_py() == 99


def _minute_rows(hour: int, updated_at_us: int, *, readings: int = 12) -> pa.Table:
    """One Gold minute row, in ``hour`` hours after T0's hour."""
    at = T0.replace(minute=0, second=0) + timedelta(hours=hour)
    rows = [raw(reading(i, at=at + timedelta(seconds=5 * i))) for i in range(readings)]
    return gold_from_silver(silver_rows(rows), window_seconds=60, updated_at_us=updated_at_us)


def _files(lake: Lake, layer: c.Layer) -> set[str]:
    return set(pa.table(DeltaTable(lake.uri(layer)).get_add_actions(flatten=True)).column("path").to_pylist())


def test_an_upsert_rewrites_only_the_hours_it_touches(lake):
    # Delta's MERGE rewrites each file holding a matched row: with date partitions alone, a day of
    # upserts was one file rewritten by every commit. The hour level bounds a rewrite to one hour.
    for hour in range(3):
        lake.upsert("gold", _minute_rows(hour, 1), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    before = _files(lake, "gold")
    lake.upsert("gold", _minute_rows(2, 2, readings=6), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    after = _files(lake, "gold")
    hour_of = {path: path.split(f"{c.EVENT_HOUR}=")[1].split("/")[0] for path in before | after}
    first_two = {str(h) for h in (T0.hour, T0.hour + 1)}
    assert {p for p in before if hour_of[p] in first_two} <= after  # untouched hours: same files
    assert {hour_of[p] for p in after - before} == {str(T0.hour + 2)}
    gold = lake.read("gold")
    assert gold.schema.names == c.GOLD_SCHEMA.names  # the layout column stays in the lake
    assert sorted(gold[c.READING_COUNT].to_pylist()) == [6, 12, 12]


def test_a_span_selects_the_files_of_its_hours_and_reads_exactly_its_rows(lake):
    # A scan is built per file listed: a time-bounded read must list the span's files, not the table's.
    for hour in range(4):
        lake.upsert("gold", _minute_rows(hour, 1), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    everything = lake.read("gold")
    starts = sorted(everything[c.WINDOW_START].to_pylist())
    span = TimeSpan(c.WINDOW_START, starts[1], starts[2])
    listed = DeltaTable(lake.uri("gold")).file_uris(
        file_pruning_predicate=span.files(c.TABLES["gold"], hourly=True)
    )
    assert {uri.split(f"{c.EVENT_HOUR}=")[1].split("/")[0] for uri in listed} == {
        str(s.hour) for s in starts[1:3]
    }
    read = lake.read("gold", span=span)
    assert sorted(read[c.WINDOW_START].to_pylist()) == starts[1:3]
    open_ended = lake.read("gold", columns=[c.WINDOW_START], span=TimeSpan(c.WINDOW_START, starts[2]))
    assert sorted(open_ended[c.WINDOW_START].to_pylist()) == starts[2:]


def test_a_span_on_a_column_that_does_not_date_the_table_prunes_by_statistics_only(lake):
    rows = silver(range(0, 720, 60))  # one reading every 5 min for an hour
    # Ingested a day after they were taken: bounding event_date by the ingest date would find nothing.
    late = pc.add(rows[c.TIMESTAMP], pa.scalar(timedelta(days=1), pa.duration("us")))
    rows = rows.set_column(rows.schema.get_field_index(c.INGEST_TIME), c.INGEST_TIME, late)
    lake.append("silver", rows)
    ingest = sorted(rows[c.INGEST_TIME].to_pylist())
    span = TimeSpan(c.INGEST_TIME, ingest[3], ingest[5])
    assert not any(column == c.EVENT_DATE for column, _, _ in span.files(c.TABLES["silver"], hourly=False))
    assert sorted(lake.read("silver", span=span)[c.INGEST_TIME].to_pylist()) == ingest[3:6]


def test_a_table_created_before_the_hour_level_keeps_its_layout(tmp_path):
    lake = Lake(LocalLake(root=tmp_path))
    DeltaTable.create(lake.uri("gold"), schema=c.GOLD_SCHEMA, partition_by=[c.EVENT_DATE])
    lake.upsert("gold", _minute_rows(0, 1), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    lake.upsert("gold", _minute_rows(0, 2, readings=6), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    assert DeltaTable(lake.uri("gold")).metadata().partition_columns == [c.EVENT_DATE]
    assert lake.read("gold")[c.READING_COUNT].to_pylist() == [6]
    start = lake.read("gold")[c.WINDOW_START][0].as_py()
    assert lake.read("gold", span=TimeSpan(c.WINDOW_START, start, start)).num_rows == 1


def test_batch_markers_expire_after_the_retention_so_a_checkpoint_does_not_keep_every_batch(lake):
    # A marker without its time was never expired: every checkpoint carried every batch ever
    # committed, and every open of the table read them all.
    two_days_ago_ms = time.time_ns() // 1_000_000 - 2 * 24 * 3600 * 1000
    old = BatchMarker("silver", "old", written_at_ms=two_days_ago_ms)
    lake.append("silver", silver(range(3)), marker=old)
    for i in range(10):  # reach the next checkpoint (checkpointInterval 10), which drops expired markers
        lake.append("silver", silver(range(3 + i, 4 + i)), marker=BatchMarker("silver", f"new-{i}"))
    dt = DeltaTable(lake.uri("silver"))
    assert dt.version() >= 10
    assert dt.transaction_version(old.app_id) is None  # older than the 1-day retention: gone
    assert dt.transaction_version(BatchMarker("silver", "new-9").app_id) == 1  # recent: kept


def test_a_thread_opens_a_table_once_and_sees_commits_made_elsewhere(lake, monkeypatch):
    opened = []

    class Counting(DeltaTable):
        def __init__(self, *args, **kwargs):
            opened.append(args[0])
            super().__init__(*args, **kwargs)

    lake.append("silver", silver(range(10)))
    monkeypatch.setattr("vitals_lake.lake.DeltaTable", Counting)
    for start in range(10, 50, 10):
        lake.append("silver", silver(range(start, start + 10)))
    write_deltalake(lake.uri("silver"), silver(range(50, 60)), mode="append")  # another writer
    assert lake.count("silver") == 60
    assert lake.version("silver") == DeltaTable(lake.uri("silver")).version()
    assert opened == []  # opened by the first append, then only brought up to date


@pytest.mark.parametrize("history", [1, 6])  # the new table's log shorter, or longer, than the old one
def test_a_table_deleted_and_created_again_is_opened_afresh(lake, history):
    for hour in range(3):
        lake.upsert("gold", _minute_rows(hour, 1), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    shutil.rmtree(lake.uri("gold"))
    other = Lake(lake.settings)  # another process re-creates it and commits
    for _ in range(history):
        other.upsert("gold", _minute_rows(5, 1, readings=3), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    lake.upsert("gold", _minute_rows(6, 1, readings=4), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    assert sorted(lake.read("gold")[c.READING_COUNT].to_pylist()) == [3, 4]
    assert DeltaTable(lake.uri("gold")).version() == history + 1  # created, its commits, then ours


def test_a_lake_with_open_tables_pickles_as_its_settings(lake):
    lake.append("silver", silver(range(5)))
    copy = pickle.loads(pickle.dumps(lake))
    assert copy.settings == lake.settings
    copy.append("silver", silver(range(5, 8)))
    assert lake.count("silver") == copy.count("silver") == 8


def test_a_string_filter_reads_files_that_a_delete_rewrote(tmp_path):
    """delta-rs's DELETE and MERGE rewrite files with strings stored as string_view, and Arrow cannot
    push a string comparison down to their statistics: the read filters after the scan instead."""
    path = str(tmp_path / "t")
    write_deltalake(path, pa.table({c.PATIENT_ID: ["P1", "P2", "P3"], "v": [1, 2, 3]}))
    DeltaTable(path).delete(f"{c.PATIENT_ID} = 'P1'")
    dt = DeltaTable(path)
    for where in (pc.field(c.PATIENT_ID) == "P2", pc.field(c.PATIENT_ID).isin(["P2"])):
        with pytest.raises(pa.ArrowNotImplementedError):  # what the read works around
            dt.to_pyarrow_dataset().to_table(filter=where)
        got = _scan(dt, c.TABLES["silver"], columns=["v"], where=where, span=None)
        assert got.to_pylist() == [{"v": 2}]
    assert _scan(dt, c.TABLES["silver"], columns=None, where=pc.field("v") > 1, span=None).num_rows == 2


def _commit_row(i: int) -> pa.Table:
    return silver_commit_row(f"b{i}", offered=1, inserted=1, duplicates=0, committed_at_us=i)


def test_a_kept_table_is_loaded_afresh_every_few_versions(lake, monkeypatch):
    # A delta-rs table object replays every commit it has seen since it was loaded, on each write:
    # kept open for a whole stream, a commit grew from 13 ms to 76 ms over 600 commits.
    loaded: list[tuple[DeltaTable, int]] = []

    class Counted(DeltaTable):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaded.append((self, self.version()))

    monkeypatch.setattr(lake_module, "DeltaTable", Counted)
    commits = 4 * REOPEN_AFTER_VERSIONS + 5
    for i in range(commits):
        assert lake.append("silver_commits", _commit_row(i), marker=BatchMarker("silver_commits", f"b{i}"))
    spans = [table.version() - version for table, version in loaded]
    assert max(spans) <= REOPEN_AFTER_VERSIONS
    assert len(loaded) >= commits // REOPEN_AFTER_VERSIONS
    assert len(loaded) <= commits // REOPEN_AFTER_VERSIONS + 2  # not once per commit
    # Batch markers written through the earlier objects are still recognised.
    assert not lake.append("silver_commits", _commit_row(3), marker=BatchMarker("silver_commits", "b3"))
    assert lake.count("silver_commits") == commits


def _log_files(lake: Lake, layer) -> int:
    return sum(1 for p in (lake.settings.root / c.TABLES[layer].name / "_delta_log").glob("*.json"))


def test_writers_leave_expired_log_files_to_maintenance(lake):
    # Cleaning them up after each checkpoint lists the whole log: commits grew slower with the log.
    lake.ensure("silver_commits")
    DeltaTable(lake.uri("silver_commits")).alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 0 seconds"}
    )
    for i in range(2 * REOPEN_AFTER_VERSIONS + 3):
        lake.append("silver_commits", _commit_row(i))
    assert _log_files(lake, "silver_commits") == 2 * REOPEN_AFTER_VERSIONS + 5  # every commit's file
    maintain(lake, ["silver_commits"], MaintenanceOptions())
    assert _log_files(lake, "silver_commits") <= 2  # maintenance's checkpoint covers the rest
    assert lake.count("silver_commits") == 2 * REOPEN_AFTER_VERSIONS + 3


def test_a_table_created_before_gets_the_commit_cost_properties(tmp_path):
    root = tmp_path / "lake"
    older = Lake(LocalLake(root=root))
    older.ensure("silver_commits")
    DeltaTable(older.uri("silver_commits")).alter.set_table_properties(
        {"delta.enableExpiredLogCleanup": "true"}
    )
    lake = Lake(LocalLake(root=root))  # a new process of a newer version
    lake.append("silver_commits", _commit_row(0))
    assert (
        DeltaTable(lake.uri("silver_commits")).metadata().configuration["delta.enableExpiredLogCleanup"]
        == "false"
    )
    assert lake.count("silver_commits") == 1
