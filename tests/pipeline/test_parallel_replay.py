"""The parallel replay: two worker processes, each owning its shards, write what one worker writes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

from bench.parallel_replay import COMPARED, same_rows
from tests.factories import DROP, T0, raw, reading
from vitals_lake.config import lake_from_uri
from vitals_lake.lake import Lake


def _readings(path):
    lines = []
    for p in range(12):
        for i in range(0, 2 * 3600, 30):  # two hours: both hour windows and the rolling means
            lines.append(
                raw(
                    reading(
                        i,
                        patient=f"P{p:06d}",
                        at=T0 + timedelta(seconds=i),
                        heart_rate=60 + (i // 30 + p) % 70,
                    )
                )
            )
    lines[100:100] = [
        lines[5],
        lines[6],
        b"{not json",
        raw(reading(1, patient="P000001", spo2=DROP, heart_rate=400)),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def _replay(tmp_path, name, workers):
    lake = tmp_path / name
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.replay",
            "--input-jsonl",
            str(tmp_path / "r.jsonl"),
            "--lake",
            str(lake),
            "--shards",
            "4",
            "--workers",
            str(workers),
            "--batch-size",
            "700",
            "--run-id",
            "t",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return Lake(lake_from_uri(str(lake))), json.loads(out.stdout)


def test_two_workers_write_the_same_silver_gold_and_trends_as_one(tmp_path):
    n = _readings(tmp_path / "r.jsonl")
    one, r1 = _replay(tmp_path, "one", 1)
    two, r2 = _replay(tmp_path, "two", 2)
    assert r1["readings"] == r2["readings"] == n
    assert [w["worker"] for w in r2["workers"]] == [0, 1]
    # Batches are claimed by whichever worker gets there first: each is gated exactly once.
    assert sum(w["batches_gated"] for w in r2["workers"]) == r1["workers"][0]["batches_gated"] == -(-n // 700)
    assert all(w["silver_rows"] > 0 for w in r2["workers"])
    # Conservation in both: every record in Silver, in quarantine, or a counted duplicate.
    for lake, report in ((one, r1), (two, r2)):
        dups = sum(w["duplicates"] for w in report["workers"])
        assert lake.count("silver") + lake.count("quarantine") + dups == n
        assert lake.count("bronze") == n
    for table, key in COMPARED.items():
        assert same_rows(one.read(table), two.read(table), key), table
