"""Quarantined records can be exported, fixed and replayed through the same gate."""

from __future__ import annotations

from pipelines.beam_vitals import run
from tests.factories import raw, reading
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from vitals_lake.quarantine import export, summary


def test_export_fix_and_replay(tmp_path):
    good = [raw(reading(i)) for i in range(20)]
    bad_hr = raw(reading(20, heart_rate=999))
    bad_bytes = b"\xff\xfe binary"
    (tmp_path / "in.jsonl").write_bytes(b"\n".join([*good, bad_hr, bad_bytes]) + b"\n")
    lake_dir = tmp_path / "lake"
    run(["--input-jsonl", str(tmp_path / "in.jsonl"), "--lake", str(lake_dir)])
    lake = Lake(LocalLake(root=lake_dir))
    assert summary(lake) == {"heart_rate_possible_range": 1, "not_utf8": 1}

    lines, binary = export(lake, tmp_path / "fix.jsonl", rule="heart_rate_possible_range")
    assert (lines, binary) == (1, 0)
    assert (tmp_path / "fix.jsonl").read_bytes() == bad_hr + b"\n"
    # The operator corrects the transcription error and replays.
    (tmp_path / "fix.jsonl").write_bytes(bad_hr.replace(b"999", b"99") + b"\n")
    run(["--input-jsonl", str(tmp_path / "fix.jsonl"), "--lake", str(lake_dir)])

    assert lake.count("silver") == 21
    fixed = [r for r in lake.read("silver").to_pylist() if r[c.EVENT_ID] == "evt-P000001-20"]
    assert fixed[0][c.HEART_RATE] == 99
    assert lake.count("quarantine") == 2  # history stays
    assert lake.count("bronze") == 23  # the fix entered as a new record

    lines, binary = export(lake, tmp_path / "all.jsonl")
    assert (lines, binary) == (1, 1)  # the non-UTF-8 record goes to the binary sidecar
    assert (tmp_path / "all.binary.jsonl").exists()
