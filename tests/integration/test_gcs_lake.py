"""The lake on ``gs://``: delta-rs / object_store against fake-gcs-server behind the translating proxy."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import threading
import uuid
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from threading import Barrier
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from tests.integration.test_maintenance import (
    TODAY,
    YESTERDAY,
    bronze_rows,
    pin_maintenance_clock,
    sorted_rows,
    synthetic_rows,
)
from vitals_lake import contract as c
from vitals_lake import envelope
from vitals_lake.config import GcsLake
from vitals_lake.lake import CHECKPOINT_INTERVAL, Lake
from vitals_lake.maintenance import MaintenanceOptions, main, maintain

if TYPE_CHECKING:  # imported at run time by pytest_plugins only, so pytest can rewrite its asserts
    from tests.gcs_server import FakeGcs, LakeFactory

pytest_plugins = ("tests.gcs_server",)

WRITER_COMMITS: Final = 30
ROWS_PER_COMMIT: Final = 5
PRECONDITION_FAILED: Final = 412
MATCH: Final = "x-goog-if-generation-match"
RACERS: Final = 16
RACE_ROUNDS: Final = 5


def fresh_lake(fake_gcs: tuple[LakeFactory, str]) -> tuple[Lake, GcsLake]:
    factory, _ = fake_gcs
    settings = factory(f"t-{uuid.uuid4().hex[:8]}")
    return Lake(settings), settings


def log_objects(server: FakeGcs, settings: GcsLake, layer: c.Layer) -> list[str]:
    prefix = f"{settings.prefix}/{c.TABLES[layer].name}/_delta_log/"
    return [n.removeprefix(prefix) for n in server.object_names(settings.bucket, prefix)]


def http_call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    from tests.gcs_server import http_request  # noqa: PLC0415 - loaded as a plugin first (assert rewriting)

    return http_request(port, method, path, body, headers)


def test_put_if_absent_lets_exactly_one_of_racing_writers_win(
    fake_gcs: tuple[LakeFactory, str], fake_gcs_server: FakeGcs
) -> None:
    """The precondition Delta commits rely on: ``x-goog-if-generation-match: 0`` → 412 when taken."""
    port = fake_gcs_server.proxy_port
    keys = [f"/{fake_gcs[1]}/race/{uuid.uuid4().hex}/00000000000000000001.json" for _ in range(RACE_ROUNDS)]
    statuses: dict[tuple[int, int], int] = {}
    start = threading.Barrier(RACERS)

    def race(i: int) -> None:
        # Connected before the barrier, so the requests reach the proxy together.
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in keys]
        for conn in conns:
            conn.connect()
        start.wait()
        for r, (key, conn) in enumerate(zip(keys, conns, strict=True)):
            conn.request("PUT", key, body=f"writer {i}".encode(), headers={MATCH: "0"})
            resp = conn.getresponse()
            resp.read()
            statuses[(r, i)] = resp.status
            conn.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for r, key in enumerate(keys):
        round_statuses = sorted(statuses[(r, i)] for i in range(RACERS))
        assert round_statuses == [200] + [PRECONDITION_FAILED] * (RACERS - 1), key
        (winner,) = [i for i in range(RACERS) if statuses[(r, i)] == 200]
        status, headers, body = http_call(port, "GET", key)
        assert (status, body) == (200, f"writer {winner}".encode())
    # Conditional overwrite: only the current generation matches.
    generation = headers["x-goog-generation"]
    assert http_call(port, "PUT", keys[-1], b"x", {MATCH: "1"})[0] == PRECONDITION_FAILED
    assert http_call(port, "PUT", keys[-1], b"x", {MATCH: generation})[0] == 200


def test_copy_if_not_exists_and_delete(fake_gcs: tuple[LakeFactory, str], fake_gcs_server: FakeGcs) -> None:
    """object_store's copy (``x-goog-copy-source``), its if-not-exists form, and DELETE."""
    port, bucket = fake_gcs_server.proxy_port, fake_gcs[1]
    root = f"/{bucket}/copy-{uuid.uuid4().hex[:8]}"
    assert http_call(port, "PUT", f"{root}/src", b"source")[0] == 200
    assert http_call(port, "PUT", f"{root}/taken", b"taken")[0] == 200
    source = {"x-goog-copy-source": f"{root.lstrip('/')}/src"}

    assert http_call(port, "PUT", f"{root}/dst", None, {**source, MATCH: "0"})[0] == 200
    assert http_call(port, "PUT", f"{root}/taken", None, {**source, MATCH: "0"})[0] == PRECONDITION_FAILED
    assert http_call(port, "GET", f"{root}/dst")[2] == b"source"
    assert http_call(port, "GET", f"{root}/taken")[2] == b"taken"
    assert http_call(port, "DELETE", f"{root}/dst")[0] == 204
    assert http_call(port, "GET", f"{root}/dst")[0] == 404
    assert http_call(port, "DELETE", f"{root}/dst")[0] == 404


def test_listing_translates_prefix_delimiter_and_exclusive_start_after(
    fake_gcs: tuple[LakeFactory, str], fake_gcs_server: FakeGcs
) -> None:
    port, bucket = fake_gcs_server.proxy_port, fake_gcs[1]
    root = f"list-{uuid.uuid4().hex[:8]}"
    for name in ("a/1.json", "a/2.json", "a/3.json", "a/sub/x.parquet", "b.json"):
        assert http_call(port, "PUT", f"/{bucket}/{root}/{name}", b"{}")[0] == 200

    def listing(**params: str) -> tuple[list[str], list[str]]:
        query = "&".join(f"{k.replace('_', '-')}={quote(v, safe='')}" for k, v in params.items())
        status, _, body = http_call(port, "GET", f"/{bucket}?list-type=2&{query}")
        assert status == 200
        doc = ET.fromstring(body)
        keys = [e.text or "" for e in doc.iterfind("Contents/Key")]
        return keys, [e.text or "" for e in doc.iterfind("CommonPrefixes/Prefix")]

    assert listing(prefix=f"{root}/a/") == (
        [f"{root}/a/{n}" for n in ("1.json", "2.json", "3.json", "sub/x.parquet")],
        [],
    )
    assert listing(prefix=f"{root}/", delimiter="/") == ([f"{root}/b.json"], [f"{root}/a/"])
    # object_store lists a Delta log "after version N" with start-after: strictly after that key.
    keys, _ = listing(prefix=f"{root}/a/", delimiter="/", start_after=f"{root}/a/1.json")
    assert keys == [f"{root}/a/2.json", f"{root}/a/3.json"]


def test_appends_past_a_checkpoint_read_back_exactly(
    fake_gcs: tuple[LakeFactory, str], fake_gcs_server: FakeGcs
) -> None:
    lake, settings = fresh_lake(fake_gcs)
    batches = [bronze_rows(25, day=TODAY, start=k * 25) for k in range(CHECKPOINT_INTERVAL + 2)]
    for rows in batches:
        lake.append("bronze", rows)

    # delta-rs checkpoints the commit whose version + 1 is a multiple of the interval (version 9).
    log = log_objects(fake_gcs_server, settings, "bronze")
    assert f"{CHECKPOINT_INTERVAL - 1:020d}.checkpoint.parquet" in log
    assert "_last_checkpoint" in log
    assert lake.version("bronze") == CHECKPOINT_INTERVAL + 2  # version 0 is the empty table
    expected = pa.concat_tables(batches)
    assert lake.count("bronze") == expected.num_rows
    assert sorted_rows(lake.read("bronze"), c.RECORD_REF) == sorted_rows(expected, c.RECORD_REF)
    assert fake_gcs_server.unhandled == []


def test_insert_new_deduplicates_on_gcs(fake_gcs: tuple[LakeFactory, str]) -> None:
    lake, _ = fresh_lake(fake_gcs)
    first = pa.concat_tables(
        [synthetic_rows("silver", 100, day=TODAY), synthetic_rows("silver", 10, day=TODAY)]
    )
    result, _ = lake.insert_new(
        "silver", first, key=c.EVENT_ID, time_column=c.TIMESTAMP, horizon=timedelta(minutes=10)
    )
    assert (result.inserted, result.duplicates) == (100, 10)
    result, fresh = lake.insert_new(
        "silver",
        synthetic_rows("silver", 60, day=TODAY, start=90),
        key=c.EVENT_ID,
        time_column=c.TIMESTAMP,
        horizon=timedelta(minutes=10),
    )
    assert (result.inserted, result.duplicates) == (50, 10)
    assert sorted(fresh[c.EVENT_ID].to_pylist()) == sorted(f"r-{c.EVENT_ID}-{i}" for i in range(100, 150))
    ids = lake.read("silver", columns=[c.EVENT_ID])[c.EVENT_ID].to_pylist()
    assert sorted(ids) == sorted(f"r-{c.EVENT_ID}-{i}" for i in range(150))


def test_upsert_of_gold_rows_on_gcs(fake_gcs: tuple[LakeFactory, str]) -> None:
    lake, _ = fresh_lake(fake_gcs)
    lake.upsert("gold", synthetic_rows("gold", 20, day=TODAY), keys=c.GOLD_KEY, time_column=c.WINDOW_START)
    changed = synthetic_rows("gold", 20, day=TODAY, start=10)
    changed = changed.set_column(
        changed.schema.get_field_index(c.READING_COUNT),
        c.READING_COUNT,
        pa.array([999] * 20, pa.int32()),
    )

    metrics = lake.upsert("gold", changed, keys=c.GOLD_KEY, time_column=c.WINDOW_START)

    assert metrics.get("num_target_rows_updated") == 10
    assert metrics.get("num_target_rows_inserted") == 10
    gold = lake.read("gold").sort_by(c.WINDOW_START)
    assert gold.num_rows == 30
    counts = gold[c.READING_COUNT].to_pylist()
    assert counts[10:] == [999] * 20
    assert counts[:10] == synthetic_rows("gold", 10, day=TODAY)[c.READING_COUNT].to_pylist()


def test_large_files_go_through_the_multipart_upload(
    fake_gcs: tuple[LakeFactory, str], fake_gcs_server: FakeGcs
) -> None:
    lake, _ = fresh_lake(fake_gcs)
    before = fake_gcs_server.calls["multipart complete"]
    # Incompressible raw payloads make one Parquet file well above object_store's 5 MiB part size.
    lines = [os.urandom(600) for _ in range(20_000)]
    rows = envelope.to_bronze(envelope.records_from_lines(lines), ingest_time_us=0, ref_prefix="big")

    lake.append("bronze", rows)

    assert fake_gcs_server.calls["multipart complete"] == before + 1
    back = lake.read("bronze")
    assert back.num_rows == rows.num_rows
    digest = pc.sum(pc.binary_length(back[c.RAW])).as_py()
    assert digest == 600 * 20_000
    assert set(back[c.RAW].to_pylist()) == set(lines)


def test_maintenance_compacts_z_orders_and_vacuums_on_gcs(
    fake_gcs: tuple[LakeFactory, str],
    fake_gcs_server: FakeGcs,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pin_maintenance_clock(monkeypatch)
    lake, settings = fresh_lake(fake_gcs)
    for k in range(5):
        lake.append("gold", synthetic_rows("gold", 30, day=YESTERDAY, start=k * 30))
    for k in range(2):
        lake.append("gold", synthetic_rows("gold", 30, day=TODAY, start=1000 + k * 30))
    before = lake.read("gold")

    # Through the CLI on gs://: the service-account file alone points object_store at the proxy.
    uri = f"gs://{settings.bucket}/{settings.prefix}"
    assert main(["--lake", uri, "--service-account", str(settings.service_account_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    gold = next(t for t in report["tables"] if t["layer"] == "gold")
    (done,) = gold["partitions"]
    assert (done["partition"], done["operation"]) == (f"{c.EVENT_DATE}={YESTERDAY.isoformat()}", "z_order")
    assert (done["files_before"], done["files_after"]) == (5, 1)
    assert gold["live_partitions"] == [f"{c.EVENT_DATE}={TODAY.isoformat()}"]
    assert sorted_rows(lake.read("gold"), *c.GOLD_KEY) == sorted_rows(before, *c.GOLD_KEY)

    # Vacuum deletes the 5 replaced objects from the bucket (DELETE through the proxy).
    deleting = MaintenanceOptions(retention_hours=0, allow_short_retention=True, vacuum_delete=True)
    vacuumed = maintain(lake, ["gold"], deleting).tables[0]
    assert len(vacuumed.vacuum_files) == 5
    prefix = f"{settings.prefix}/{c.GOLD_TABLE}/"
    left = set(fake_gcs_server.object_names(settings.bucket, prefix))
    assert not {prefix + f for f in vacuumed.vacuum_files} & left
    assert sorted_rows(lake.read("gold"), *c.GOLD_KEY) == sorted_rows(before, *c.GOLD_KEY)
    assert fake_gcs_server.unhandled == []


def _append_commits(settings: GcsLake, writer: str, start: Barrier) -> int:
    """One writer process: WRITER_COMMITS separate appends to the same table."""
    lake = Lake(settings)
    batches = [
        bronze_rows(ROWS_PER_COMMIT, day=TODAY, start=k * 100, writer=writer) for k in range(WRITER_COMMITS)
    ]
    start.wait(timeout=60)  # both writers commit at the same time, whatever their start-up took
    for rows in batches:
        lake.append("bronze", rows)
    return WRITER_COMMITS


def test_two_writer_processes_lose_nothing(
    fake_gcs: tuple[LakeFactory, str], fake_gcs_server: FakeGcs
) -> None:
    lake, settings = fresh_lake(fake_gcs)
    lake.ensure("bronze")
    rejected_before = _refused(fake_gcs_server)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        start = manager.Barrier(2)
        futures = [pool.submit(_append_commits, settings, w, start) for w in ("a", "b")]
        assert [f.result(timeout=120) for f in futures] == [WRITER_COMMITS, WRITER_COMMITS]

    refs = lake.read("bronze", columns=[c.RECORD_REF])[c.RECORD_REF].to_pylist()
    expected = {
        f"file:{w}:{k * 100}:{i}"
        for w in ("a", "b")
        for k in range(WRITER_COMMITS)
        for i in range(ROWS_PER_COMMIT)
    }
    assert len(refs) == len(expected) == 2 * WRITER_COMMITS * ROWS_PER_COMMIT
    assert set(refs) == expected
    assert lake.version("bronze") == 2 * WRITER_COMMITS  # every commit got its own version
    assert fake_gcs_server.unhandled == []
    # Whether two processes collide depends on the machine's timing (a loaded machine may serialise
    # them): reported, not asserted. tests/unit/test_lake.py forces a conflict and checks the retry.
    print(f"\ncommit files refused with 412 during the run: {_refused(fake_gcs_server) - rejected_before}")


def _refused(server: FakeGcs) -> int:
    return sum(n for k, n in server.calls.items() if k.endswith("-> 412"))


def test_gcs_lake_base_url_alone_reaches_the_server(
    fake_gcs: tuple[LakeFactory, str], fake_gcs_server: FakeGcs, tmp_path: Path
) -> None:
    # A service-account file without an endpoint: only GcsLake.base_url can point at the proxy.
    account = json.loads(fake_gcs_server.service_account_path.read_text())
    # An endpoint where every bucket is missing: object_store fails fast (404s are not retried).
    account["gcs_base_url"] = f"{fake_gcs_server.base_url}/nowhere"
    path = tmp_path / "account.json"
    path.write_text(json.dumps(account))
    settings = GcsLake(
        bucket=fake_gcs[1],
        prefix=f"t-{uuid.uuid4().hex[:8]}",
        base_url=fake_gcs_server.base_url,
        service_account_path=str(path),
    )
    lake = Lake(settings)
    lake.append("bronze", bronze_rows(3, day=TODAY))
    assert DeltaTable(lake.uri("bronze"), storage_options=settings.storage_options).count() == 3
