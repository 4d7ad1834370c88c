"""Stream age: the CPU of a stream's batches early on and hours later, through one engine.

A stream commits every table every few seconds for months, through one engine whose shard state and
open tables live as long as its worker. ``lake_age`` replays an hour in a few large batches; this
runs what a stream does: one simulated cohort (``patients`` at one reading per ``interval`` s for
``hours``) through one ``BatchEngine`` (``vitals_lake.engine``) in batches of one commit interval's
readings (``batch``: patients x 5 s / interval), each committed to every table as the pipeline does,
into a lake holding the cohort's admissions. No maintenance runs in between: a day's files pile up
until the daily compaction, as in production.

Measured: the CPU of each batch (``time.process_time``: every thread of the process, delta-rs's
included), per stage (``EngineOutput.cpu``: ``silver``, ``gold``, ``trends``) and in all; the first
tenth of the batches against the last tenth. Flat means about 1x. Before a kept Delta table was
reloaded every 10 versions and writers stopped cleaning up expired log files (2026-12-06), the last
tenth of the full run cost 5.4x the first (``docs/benchmarks.md``).

Checks: every reading is in Silver once, in quarantine or a counted duplicate (the simulator sends
faults and re-sends), and the stages add up to the batches' CPU.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import pyarrow.compute as pc

from bench.lake_age import STAGES, _engine, empty_lake, simulate
from bench.lake_age import Sizes as LakeAgeSizes
from bench.runner import Context, Result, Variant, benchmark
from vitals_lake import contract as c
from vitals_lake import envelope
from vitals_lake.pseudonym import PseudonymKey

NAME: Final = "stream_age"
TITLE: Final = "Stream age: CPU per batch of a stream's first and last tenth, one engine, commits every 5 s"
COMMIT_SECONDS: Final = 5.0  # the pipeline's default commit interval (StreamSettings.commit_interval)
ALL: Final = "all stages"
TENTH: Final = 10


@dataclass(frozen=True)
class Sizes:
    patients: int
    interval: float  # seconds between one patient's readings
    hours: int
    batch: int  # readings per batch: a commit interval's (patients x COMMIT_SECONDS / interval)


FULL: Final = Sizes(patients=100, interval=5.0, hours=2, batch=100)
QUICK: Final = Sizes(patients=10, interval=60.0, hours=1, batch=20)  # 30 batches: a smoke test


@benchmark(NAME, TITLE)
def stream_age(ctx: Context) -> Result:
    sizes = QUICK if ctx.quick else FULL
    result = Result(NAME, TITLE)
    result.config = asdict(sizes)
    key = PseudonymKey.from_env().secret
    per_batch = sizes.batch
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-stream-age-") as tmp_name:
        tmp = Path(tmp_name)
        ctx.log(f"  simulating {sizes.patients} patients x {sizes.hours} h at {sizes.interval:g} s")
        readings = simulate(
            tmp / "sim",
            LakeAgeSizes(
                patients=sizes.patients,
                interval=sizes.interval,
                batch=per_batch,
                history_hours=sizes.hours - 1,
            ),
        )
        lines = readings.history + readings.hour
        lake = empty_lake(tmp / "lake", readings, key)
        engine = _engine(lake, key)
        result.setup_seconds = time.perf_counter() - t0
        cpu: list[dict[str, float]] = []
        rows: list[int] = []
        inserted = duplicates = quarantined = 0
        ctx.log(f"  {len(lines):,} readings in batches of {per_batch} (one {COMMIT_SECONDS:g} s commit each)")
        for number, start in enumerate(range(0, len(lines), per_batch)):
            chunk = lines[start : start + per_batch]
            records = envelope.records_from_lines(chunk, source="file")
            bronze = envelope.to_bronze(
                records, ingest_time_us=time.time_ns() // 1000, ref_prefix="file:stream"
            )
            started = time.process_time()
            out = engine.run(bronze, batch_id=f"stream-{number}")
            spent = time.process_time() - started
            cpu.append({**out.cpu, ALL: spent})
            rows.append(len(chunk))
            inserted += out.silver.num_rows
            duplicates += out.duplicates
            quarantined += out.quarantine.num_rows
        silver = lake.read("silver", columns=[c.EVENT_ID])[c.EVENT_ID]
        distinct = pc.count_distinct(silver).as_py()

    tenth = max(len(cpu) // TENTH, 1)
    for measure in (*STAGES, ALL):
        first = [b.get(measure, 0.0) for b in cpu[:tenth]]
        last = [b.get(measure, 0.0) for b in cpu[-tenth:]]
        group = f"{measure} CPU"
        early = Variant(f"batches 1-{tenth}", sum(rows[:tenth]), sum(first), first, group=group, note="CPU s")
        late = Variant(
            f"batches {len(cpu) - tenth + 1}-{len(cpu)}",
            sum(rows[-tenth:]),
            sum(last),
            last,
            group=group,
            note="CPU s",
        )
        result.add(early, late)
        if early.seconds > 0 and late.seconds > 0:
            result.ratio(f"{measure}: last vs first tenth of the batches (flat = ~1x)", late, early)
    result.checks["every reading is in Silver once, in quarantine or a counted duplicate"] = (
        len(silver) == distinct == inserted and sum(rows) == inserted + quarantined + duplicates
    )
    result.checks["the stages add up to the batches' CPU"] = all(
        0.9 * b[ALL] <= sum(b.get(s, 0.0) for s in STAGES) <= 1.01 * b[ALL] + 0.01 for b in cpu
    )
    result.config.update(
        {
            "readings": len(lines),
            "batches": len(cpu),
            "per_batch": per_batch,
            "duplicates": duplicates,
            "quarantined": quarantined,
        }
    )
    result.notes.append(
        f"{len(lines):,} readings in {len(cpu):,} batches of {per_batch}:"
        f" {len(cpu) * COMMIT_SECONDS / 60:,.0f} min of a stream's commits; Silver {len(silver):,} rows,"
        f" quarantined {quarantined:,}, duplicates removed {duplicates:,}"
    )
    return result
