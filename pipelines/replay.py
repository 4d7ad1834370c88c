"""Replay a file of readings into a lake with several processes, each owning its patient shards.

The Beam pipeline replays a file too (``--input-jsonl``), but the local runner does not run a stateful
stage on more than one core (measured with apache-beam 2.77: a stateful DoFn over 8 keys on
``--direct_num_workers 2 --direct_running_mode multi_processing`` ran 0.63x as fast as on one worker).
This tool does what Dataflow's shuffle does, with files: worker ``w`` of ``W``

1. gates batches (parse, check, enrich, NEWS2), each claimed by whichever worker gets to it first (an
   exclusive create of a claim file), writes their Bronze, quarantine and data-quality rows, and puts
   the valid rows of every shard into a spool directory (one Arrow IPC file per batch and shard,
   written then renamed, so a reader never sees half a file): all workers at once, nobody waits, and a
   faster worker gates more;
2. advances its own shards (``shard % W == w``) batch by batch in the file's order, whichever worker
   gated the batch, and appends their Silver and alerts (appends never conflict).

Then one upsert of all workers' Gold and rolling rows (the shards are disjoint, so MERGEs never race).

Every shard sees its rows in the same order as a single worker would give them, through the same
batch engine (``vitals_lake.engine``), so Silver and Gold are identical whatever ``--workers``. The
per-diagnosis hours are derived at the end (they sum over all shards).

    python -m pipelines.replay --input-jsonl readings.jsonl --lake var/lake --workers 2
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final

import pyarrow as pa

from vitals_lake import access as lake_access
from vitals_lake import contract as c
from vitals_lake import envelope
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, lake_from_uri
from vitals_lake.engine import BatchEngine, EngineSettings
from vitals_lake.gold_upsert import (
    derive_diagnosis_hourly,
    newest_per_key,
    upsert_gold_rows,
    upsert_rolling_rows,
)
from vitals_lake.lake import Lake
from vitals_lake.memory import retain_freed_memory
from vitals_lake.model.serving import ModelWatcher
from vitals_lake.pseudonym import PseudonymKey
from vitals_lake.sharding import LOCAL_SHARDS, check_shards

PROG: Final = "python -m pipelines.replay"
log = logging.getLogger("pipelines.replay")
WAIT_SECONDS: Final = 900.0  # a spool file not there by then: the other worker has failed


@dataclass(frozen=True, kw_only=True)
class ReplayPlan:
    """What every worker of one replay agrees on (validated once, passed to each worker as JSON)."""

    input_jsonl: str
    lake: str
    shards: int
    workers: int
    batch_size: int
    run_id: str
    spool: str
    model_uri: str | None = None
    horizon_seconds: int = 3600
    allowed_lateness_seconds: int = 600

    def __post_init__(self) -> None:
        check_shards(self.shards)
        if not 1 <= self.workers <= self.shards:
            raise ConfigError(f"--workers must be between 1 and --shards ({self.shards}), got {self.workers}")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")

    def settings(self) -> EngineSettings:
        # A replay of recorded readings: no future / age rules (the readings are old by design).
        return EngineSettings(
            shards=self.shards,
            horizon=timedelta(seconds=self.horizon_seconds),
            allowed_lateness=timedelta(seconds=self.allowed_lateness_seconds),
            time_rules=None,
        )


@dataclass(frozen=True)
class WorkerReport:
    worker: int
    batches_gated: int
    readings_gated: int
    silver_rows: int
    duplicates: int
    cpu_seconds: float
    wall_seconds: float
    gate_seconds: float  # wall time of step 1 (gating its batches)
    waited_seconds: float  # on other workers' spool files
    state_bytes: int  # the shards' memory (array bytes)


class Spool:
    """Valid rows handed from the worker that gated a batch to the worker that owns a shard."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, batch: int, shard: int) -> Path:
        return self.root / f"{batch:07d}-{shard:04d}.arrow"

    def claim(self, batch: int) -> bool:
        """True for exactly one worker per batch: the one whose exclusive create succeeded."""
        try:
            os.close(os.open(self.root / f"{batch:07d}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def put(self, batch: int, shard: int, rows: pa.Table) -> None:
        self._write(self.path(batch, shard), rows)

    def _write(self, final: Path, rows: pa.Table) -> None:
        tmp = final.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
            writer.write_table(rows)
        tmp.rename(final)  # atomic: the reader sees the whole file or none

    def put_final(self, table: str, worker: int, rows: pa.Table) -> None:
        self._write(self.root / f"{table}-w{worker}.arrow", rows)

    def take_final(self, table: str, worker: int) -> pa.Table:
        return self._read(self.root / f"{table}-w{worker}.arrow", timeout=0.0)

    def take(self, batch: int, shard: int, *, timeout: float = WAIT_SECONDS) -> pa.Table:
        return self._read(self.path(batch, shard), timeout=timeout)

    def _read(self, path: Path, *, timeout: float) -> pa.Table:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not appear within {timeout:.0f} s: did another worker fail?")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        with pa.memory_map(str(path)) as source:
            rows = pa.ipc.open_file(source).read_all()
        path.unlink()
        return rows


def _batches(lines: list[bytes], size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, len(lines))) for lo in range(0, len(lines), size)]


def run_worker(plan: ReplayPlan, worker: int) -> WorkerReport:
    """Worker ``worker`` of ``plan.workers`` (see the module's doc): gate, then advance."""
    started, cpu0 = time.monotonic(), time.process_time()
    retain_freed_memory()
    lake = Lake(lake_from_uri(plan.lake))
    lake.ensure_all(lake_access.writes("pipeline"))
    model = ModelWatcher(plan.model_uri, poll_seconds=1e9) if plan.model_uri else None
    engine = BatchEngine(lake, settings=plan.settings(), key=PseudonymKey.from_env().secret, model=model)
    spool = Spool(Path(plan.spool))
    lines = envelope.read_jsonl(Path(plan.input_jsonl))
    batches = _batches(lines, plan.batch_size)
    # 1. Gate the batches this worker claims, every worker at once: nothing here waits for another.
    gated_batches = gated_readings = 0
    for n, (lo, hi) in enumerate(batches):
        if not spool.claim(n):
            continue
        batch_id = f"{n}-{plan.run_id}"
        records = envelope.records_from_lines(lines[lo:hi], source="file")
        bronze = envelope.to_bronze(
            records, ingest_time_us=time.time_ns() // 1000, ref_prefix=f"file:{plan.input_jsonl}"
        )
        gated = engine.gate(bronze, batch_id=batch_id)
        engine.commit_gate(bronze, quarantine=gated.parsed.quarantine, dq=gated.dq, batch_id=batch_id)
        present = dict(gated.shards)
        for shard in range(plan.shards):  # empty ones too: an owner must not wait for nothing
            spool.put(n, shard, present.get(shard, c.GATED_SCHEMA.empty_table()))
        gated_batches += 1
        gated_readings += hi - lo
    del lines
    gate_seconds = time.monotonic() - started
    # 2. Advance this worker's shards batch by batch in the file's order, whoever gated the batch.
    #    Silver and alerts are appended (appends never conflict); Gold and rolling rows are kept and
    #    upserted once by finish(), so workers never race on a MERGE.
    mine = [s for s in range(plan.shards) if s % plan.workers == worker]
    silver_rows = duplicates = 0
    waited = 0.0
    gold, rolling = [], []
    for n in range(len(batches)):
        t = time.monotonic()
        rows_of = {shard: spool.take(n, shard) for shard in mine}
        waited += time.monotonic() - t
        out = engine.advance([(s, rows_of[s]) for s in mine if rows_of[s].num_rows])
        engine.commit_shards(out, batch_id=f"{n}-w{worker}-{plan.run_id}", gold=False)
        gold.append(out.gold)
        rolling.append(out.rolling)
        silver_rows += out.silver.num_rows
        duplicates += out.duplicates
    spool.put_final("gold", worker, newest_per_key(_cat(gold, c.GOLD_SCHEMA), c.GOLD_KEY))
    spool.put_final("rolling", worker, newest_per_key(_cat(rolling, c.ROLLING_SCHEMA), c.ROLLING_KEY))
    return WorkerReport(
        worker=worker,
        batches_gated=gated_batches,
        readings_gated=gated_readings,
        silver_rows=silver_rows,
        duplicates=duplicates,
        cpu_seconds=time.process_time() - cpu0,
        wall_seconds=time.monotonic() - started,
        gate_seconds=gate_seconds,
        waited_seconds=waited,
        state_bytes=engine.state_bytes(),
    )


def _cat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(tables) if tables else schema.empty_table()


def finish(plan: ReplayPlan) -> int:
    """After every worker: upsert the Gold and rolling rows they computed (one MERGE each: the shards
    are disjoint, so the rows are too) and derive the per-diagnosis hours they touched."""
    lake = Lake(lake_from_uri(plan.lake))
    spool = Spool(Path(plan.spool))
    gold = _cat([spool.take_final("gold", w) for w in range(plan.workers)], c.GOLD_SCHEMA)
    rolling = _cat([spool.take_final("rolling", w) for w in range(plan.workers)], c.ROLLING_SCHEMA)
    batch_id = f"final-{plan.run_id}"
    written = upsert_gold_rows(lake, gold, batch_id=batch_id)
    upsert_rolling_rows(lake, rolling, batch_id=batch_id)
    derive_diagnosis_hourly(lake, written, batch_id=batch_id)
    return written.num_rows


@dataclass(frozen=True)
class ReplayReport:
    readings: int
    workers: list[WorkerReport]
    wall_seconds: float
    cpu_seconds: float  # all workers and this process
    finish_seconds: float  # wall time of the final Gold, rolling and diagnosis-hour upserts

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def replay(plan: ReplayPlan) -> ReplayReport:
    """Run ``plan.workers`` worker processes (one in-process when 1) and the final step."""
    started = time.monotonic()
    cpu0 = _cpu()
    if plan.workers == 1:
        reports = [run_worker(plan, 0)]
    else:
        # Forked, not spawned: the workers start with this process's imports (nothing here has
        # started a thread or opened a table yet), about half a second each.
        fork = multiprocessing.get_context("fork")
        pipes = [fork.Pipe(duplex=False) for _ in range(plan.workers)]
        procs = [
            fork.Process(target=_worker_main, args=(plan, w, send), name=f"replay-worker-{w}")
            for w, (_, send) in enumerate(pipes)
        ]
        for proc in procs:
            proc.start()
        reports = []
        for w, (proc, (receive, _)) in enumerate(zip(procs, pipes, strict=True)):
            report = receive.recv() if receive.poll(WAIT_SECONDS * 4) else None
            proc.join()
            if report is None or proc.exitcode != 0:
                for other in procs:
                    other.kill()
                raise RuntimeError(f"replay worker {w} failed with exit status {proc.exitcode}")
            reports.append(report)
    finishing = time.monotonic()
    finish(plan)
    finished = time.monotonic()
    readings = sum(r.readings_gated for r in reports)
    return ReplayReport(readings, reports, finished - started, _cpu() - cpu0, finished - finishing)


def _worker_main(plan: ReplayPlan, worker: int, send: Connection) -> None:
    send.send(run_worker(plan, worker))
    send.close()


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--input-jsonl", required=False, help="readings, one JSON document per line")
    p.add_argument("--lake", help="lake root: a local directory or gs://bucket/prefix")
    p.add_argument("--shards", type=int, default=LOCAL_SHARDS, help="patient shards")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (at most --shards)")
    p.add_argument("--batch-size", type=int, default=25_000, help="readings per batch")
    p.add_argument("--model-uri", help="anomaly model artifact directory (local or gs://)")
    p.add_argument("--run-id", help="names this replay's commit batches (default: random)")
    p.add_argument("--spool", help="directory for rows handed between workers (default: a temporary one)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.input_jsonl or not args.lake:
        return usage_error(parser, "--input-jsonl and --lake are required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spool = Path(args.spool) if args.spool else Path(tempfile.mkdtemp(prefix="vitals-replay-"))
    try:
        plan = ReplayPlan(
            input_jsonl=args.input_jsonl,
            lake=args.lake,
            shards=args.shards,
            workers=args.workers,
            batch_size=args.batch_size,
            run_id=args.run_id or uuid.uuid4().hex[:12],
            spool=str(spool),
            model_uri=args.model_uri,
        )
        report = replay(plan)
    except (ConfigError, ValueError) as exc:
        return usage_error(parser, str(exc))
    finally:
        if not args.spool:
            shutil.rmtree(spool, ignore_errors=True)
    print(json.dumps(report.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
