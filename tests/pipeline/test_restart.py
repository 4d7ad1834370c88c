"""Gold stays whole when a window's readings arrive across two pipeline runs (as after a restart):
Beam's window state starts empty in the second run, but Gold is recomputed from the lake."""

from __future__ import annotations

from pipelines.beam_vitals import run
from tests.factories import raw, reading
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake


def test_a_second_run_adds_to_windows_the_first_run_wrote(tmp_path):
    readings = [raw(reading(i, patient=f"P{p:06d}")) for p in range(3) for i in range(36)]  # 3 minutes each
    first, second = readings[0::2], readings[1::2]  # both runs touch every minute
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(first) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b"\n".join(second) + b"\n")
    lake_dir = str(tmp_path / "lake")
    run(["--input-jsonl", str(tmp_path / "a.jsonl"), "--lake", lake_dir])
    run(["--input-jsonl", str(tmp_path / "b.jsonl"), "--lake", lake_dir])

    gold = Lake(LocalLake(root=tmp_path / "lake")).read("gold").to_pylist()
    minutes = [r for r in gold if r[c.WINDOW_SECONDS] == 60]
    hours = [r for r in gold if r[c.WINDOW_SECONDS] == 3600]
    assert len(minutes) == 9 and all(r[c.READING_COUNT] == 12 for r in minutes)
    assert len(hours) == 3 and all(r[c.READING_COUNT] == 36 for r in hours)
