"""Parallel replay: the same readings replayed by one worker and by two (both cores), side by side.

``pipelines.replay`` with ``--workers 1`` and ``--workers 2`` (2 shards) on the same simulated hour,
each into a fresh lake, each timed as the whole command (start-up, workers, the final diagnosis hours),
the two interleaved ``--repeats`` times (medians).
Target: two workers take at most 1/1.6 of one worker's wall time (printed, never asserted), with
identical Silver, Gold, rolling means and diagnosis hours (checked). The local Beam runner cannot do
this (a stateful stage runs on one core), which is why the replay has its own workers: see
``pipelines/replay.py``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa

from bench.runner import Context, Result, Variant, benchmark
from vitals_lake import contract as c
from vitals_lake.config import lake_from_uri
from vitals_lake.lake import Lake

NAME: Final = "parallel_replay"
TITLE: Final = "Parallel replay: one worker vs two (2 patient shards) on the same readings"
TARGET_SPEEDUP: Final = 1.6
COMPARED: Final[dict[c.Layer, list[str]]] = {
    "silver": [c.EVENT_ID],
    "gold": list(c.GOLD_KEY),
    "rolling": list(c.ROLLING_KEY),
    "diagnosis_hourly": list(c.DIAGNOSIS_HOURLY_KEY),
}
VOLATILE: Final = {c.UPDATED_AT, c.INGEST_TIME, c.INGEST_DATE, c.RECORD_REF}


@dataclass(frozen=True)
class Sizes:
    patients: int
    minutes: int
    interval: str = "10s"
    seed: int = 21


FULL: Final = Sizes(patients=1400, minutes=60)  # 1,400 patients x 1 h at 10 s: about 500,000 readings
QUICK: Final = Sizes(patients=40, minutes=20)


def _simulate(sizes: Sizes, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "simulator", "--patients", str(sizes.patients), "--interval", sizes.interval,
         "--duration", f"{sizes.minutes}m", "--fast", "--quiet", "--seed", str(sizes.seed),
         "--start", "2026-12-03T06:00:00Z", "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out / "readings.jsonl"


def _replay(readings: Path, lake: Path, workers: int) -> tuple[float, dict[str, object]]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.replay", "--input-jsonl", str(readings), "--lake", str(lake),
         "--shards", "2", "--workers", str(workers), "--run-id", f"bench{workers}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return time.monotonic() - started, json.loads(done.stdout)


def same_rows(x: pa.Table, y: pa.Table, key: list[str]) -> bool:
    """The same rows by ``key``, volatile columns aside; floating-point columns equal to 1e-12
    relative (a sum over patients depends on the order their rows were read in)."""
    if x.num_rows != y.num_rows or x.num_rows == 0:
        return False
    order = [(k, "ascending") for k in key]
    x, y = x.sort_by(order), y.sort_by(order)
    for name in x.column_names:
        if name in VOLATILE:
            continue
        a, b = x[name], y[name]
        if pa.types.is_floating(a.type):
            u = np.asarray(a.to_numpy(zero_copy_only=False), float)
            v = np.asarray(b.to_numpy(zero_copy_only=False), float)
            if not np.allclose(u, v, rtol=1e-12, atol=0.0, equal_nan=True):
                return False
        elif not a.equals(b):
            return False
    return True


def same_tables(a: Path, b: Path) -> dict[str, bool]:
    """Per compared table: the same rows in both lakes."""
    la, lb = Lake(lake_from_uri(str(a))), Lake(lake_from_uri(str(b)))
    return {table: same_rows(la.read(table), lb.read(table), key) for table, key in COMPARED.items()}


@benchmark(NAME, TITLE)
def run(ctx: Context) -> Result:
    sizes = QUICK if ctx.quick else FULL
    result = Result(NAME, TITLE)
    work = Path(tempfile.mkdtemp(prefix="vitals-bench-replay-"))
    try:
        readings = _simulate(sizes, work / "sim")
        walls: dict[int, list[float]] = {1: [], 2: []}
        cpus: dict[int, list[float]] = {1: [], 2: []}
        rows = 0
        for i in range(max(ctx.repeats, 1)):  # interleaved, so a noisy minute hits both variants
            for workers in (1, 2):
                lake = work / f"lake{workers}"
                shutil.rmtree(lake, ignore_errors=True)
                seconds, report = _replay(readings, lake, workers)
                rows = int(report["readings"])  # type: ignore[call-overload]
                walls[workers].append(seconds)
                cpus[workers].append(float(report["cpu_seconds"]))  # type: ignore[arg-type]
                ctx.log(f"  {workers} worker(s), run {i + 1}: {rows:,} readings in {seconds:.1f} s")
        variants = [
            Variant(
                label=f"{workers} worker{'s' if workers > 1 else ''}",
                rows=rows,
                seconds=statistics.median(walls[workers]),
                runs=walls[workers],
                note=f"CPU {statistics.median(cpus[workers]):.1f} s (median)",
            )
            for workers in (1, 2)
        ]
        result.add(*variants)
        speedup = result.ratio("2 workers vs 1 (wall time)", variants[1], variants[0])
        result.checks.update(
            {f"{t}: identical": held for t, held in same_tables(work / "lake1", work / "lake2").items()}
        )
        result.notes.append(
            f"speed-up {speedup.value:.2f}x on both cores (target >= {TARGET_SPEEDUP}x: "
            f"{'met' if speedup.value >= TARGET_SPEEDUP else 'NOT met'})"
        )
        result.config = {"patients": sizes.patients, "minutes": sizes.minutes, "interval": sizes.interval}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result
