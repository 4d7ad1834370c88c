"""Sustained load on the whole local stack: N patients, one reading each every 5 s, for minutes.

Every component runs as its own process, as in ``make demo``: the simulator producing to Kafka (Tansu),
the bridge (Kafka -> Pub/Sub emulator), the pipeline (Beam DirectRunner, streaming, with the model and
the alert rule), and the notifier function (functions-framework, pushed by the emulator) delivering to
a local SMTP server and webhook receiver. While it runs, a sampler records every few seconds how many
readings the simulator has sent (its progress line), how many Bronze holds (Delta log statistics), and
each process group's CPU time and resident memory (``/proc``).

Afterwards: reading -> Silver commit latency from every Silver file's commit time (Delta add action)
minus each row's reading timestamp; reading -> alert delivered from each webhook delivery's arrival
minus the event time of the reading that changed the alert's state.

A load *holds* when Bronze keeps up (consumed / produced >= 0.99, counting what Bronze holds 15 s
after the producer stopped: what is in flight then is one commit interval, not a backlog), the lag
does not grow, p95 reading -> Silver <= 10 s and p95 reading -> alert <= 15 s. A ladder of short
rungs finds the highest N that holds; the sustained run repeats that N for the full duration. Sizes come
from the environment (``VITALS_LOAD_LADDER=5000,10000,20000,30000,40000``, ``VITALS_LOAD_RUNG_MINUTES``,
``VITALS_LOAD_MINUTES``). The simulator's timing faults (late, out-of-order, skewed and local-offset
clocks) are off: they move reading timestamps on purpose and would be counted as pipeline latency.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from bench.runner import Context, Result, Variant, benchmark
from harness.demo import (
    PY,
    demo_pipeline,
    load_cohort_admissions,
    pipeline_tables_created,
    simulator_argv,
    train_demo_model,
)
from harness.demo_alerts import Notifier, notifier
from harness.faults.harness import child_env, children
from harness.stack import LocalStack, ManagedProcess
from harness.stack.process import group_members
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake

NAME: Final = "sustained_load"
TITLE: Final = "Sustained load on the whole local stack (N patients, one reading every 5 s)"
INTERVAL_S: Final = 5.0
SAMPLE_EVERY_S: Final = 5.0
TARGET_PATIENTS: Final = 20_000  # 4,000 readings/s for 10 minutes
TARGET_CONSUMED: Final = 0.99
TARGET_SILVER_P95_S: Final = 10.0
TARGET_ALERT_P95_S: Final = 15.0
# Readings in flight when the producer stops (bridge linger + one commit interval + the commit) are
# not a backlog: "consumed" is Bronze this long after the producer stopped.
DRAIN_ALLOWANCE_S: Final = 15.0
DEFAULT_LADDER: Final = (5000, 10000, 20000, 30000, 40000)
DEFAULT_RUNG_MINUTES: Final = 3.0
DEFAULT_MINUTES: Final = 10.0
QUICK_LADDER: Final = (100,)
QUICK_MINUTES: Final = 0.75
SEED: Final = 42
# Timing faults off (see the module docstring); duplicates and malformed records stay on.
SIMULATOR_FAULTS_OFF: Final = (
    "--late-rate=0",
    "--out-of-order-rate=0",
    "--skewed-device-rate=0",
    "--local-offset-rate=0",
    "--no-wait-for-late",
)
_SENT = re.compile(rb"simulator: ([\d,]+) messages sent")
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the simulator started
    produced: int
    bronze: int

    @property
    def lag(self) -> int:
        return max(self.produced - self.bronze, 0)


@dataclass
class ProcessUse:
    """One process group's CPU (cores on average while the simulator ran) and peak resident memory."""

    cpu_cores: float = 0.0
    peak_rss_mb: float = 0.0


@dataclass
class LoadRun:
    patients: int
    minutes: float
    readings_per_s: float
    produced: int = 0
    bronze_when_producer_stopped: int = 0
    bronze_after_allowance: int = 0
    consumed_ratio: float = 0.0
    lag_first_half_max: int = 0
    lag_second_half_max: int = 0
    drained_s: float | None = None
    silver_latency_s: dict[str, float] = field(default_factory=dict)
    ingest_latency_s: dict[str, float] = field(default_factory=dict)  # reading -> pipeline decoded it
    alert_latency_s: dict[str, float] = field(default_factory=dict)
    alerts_delivered: int = 0
    processes: dict[str, ProcessUse] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lag_growing(self) -> bool:
        # Growing: the backlog late in the run is well above anything seen early (a few commit
        # intervals' worth of readings in flight is normal).
        slack = self.readings_per_s * 15
        return self.lag_second_half_max > max(2 * self.lag_first_half_max, slack)

    @property
    def lag_seconds(self) -> float:
        """The largest backlog of the run, in seconds of offered load."""
        worst = max(self.lag_first_half_max, self.lag_second_half_max)
        return worst / self.readings_per_s if self.readings_per_s else 0.0

    @property
    def holds(self) -> bool:
        return not self.failures

    def judge(self) -> None:
        """Keeping up: everything produced reaches Bronze (within the drain allowance once the
        producer stops), the backlog does not grow, and the latency targets hold."""
        if self.consumed_ratio < TARGET_CONSUMED:
            self.failures.append(
                f"consumed/produced {self.consumed_ratio:.3f} < {TARGET_CONSUMED} {DRAIN_ALLOWANCE_S:g} s"
                " after the producer stopped"
            )
        if self.lag_growing:
            self.failures.append(
                f"lag growing ({self.lag_first_half_max:,} -> {self.lag_second_half_max:,} readings)"
            )
        p95 = self.silver_latency_s.get("p95")
        if p95 is None or p95 > TARGET_SILVER_P95_S:
            self.failures.append(f"reading->Silver p95 {p95} s > {TARGET_SILVER_P95_S:g} s")
        a95 = self.alert_latency_s.get("p95")
        if a95 is not None and a95 > TARGET_ALERT_P95_S:
            self.failures.append(f"reading->alert p95 {a95:.1f} s > {TARGET_ALERT_P95_S:g} s")

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["samples"] = [asdict(s) for s in self.samples]
        doc["holds"], doc["lag_growing"], doc["lag_seconds"] = self.holds, self.lag_growing, self.lag_seconds
        return doc


def percentiles(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50 / p95 / p99 / max and the count, in the units given."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "n": float(a.size),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(a.max()),
    }


# -- measuring -----------------------------------------------------------------------------------


def _group_use(pgid: int) -> tuple[float, float]:
    """(CPU seconds, resident MB) summed over the live members of a process group."""
    cpu = rss = 0.0
    for pid in group_members(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE / 2**20
        except (OSError, IndexError, ValueError):
            continue  # exited between listing and reading
    return cpu, rss


def _sent_so_far(log: Path) -> int:
    try:
        found = _SENT.findall(log.read_bytes()[-4096:])
    except OSError:
        return 0
    return int(found[-1].replace(b",", b"")) if found else 0


class Sampler:
    """Every few seconds: produced vs Bronze, and CPU / memory per process group."""

    def __init__(self, groups: dict[str, int], *, bronze_uri: str, simulator_log: Path) -> None:
        self.groups = groups
        self.bronze_uri = bronze_uri
        self.simulator_log = simulator_log
        self.samples: list[Sample] = []
        self.peak_mb: dict[str, float] = dict.fromkeys(groups, 0.0)
        self.cpu_first: dict[str, float] = {}
        self.cpu_last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="load-sampler", daemon=True)
        self._t0 = time.monotonic()
        self._wall: tuple[float, float] = (0.0, 0.0)
        self._table: DeltaTable | None = None

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def bronze_rows(self) -> int:
        if self._table is None:
            self._table = DeltaTable(self.bronze_uri)
        else:
            self._table.update_incremental()
        counts = pa.table(self._table.get_add_actions(flatten=True))["num_records"]
        return int(pc.sum(counts).as_py() or 0)

    def sample(self) -> Sample:
        now = time.monotonic()
        for name, pgid in self.groups.items():
            cpu, rss = _group_use(pgid)
            self.peak_mb[name] = max(self.peak_mb[name], rss)
            self.cpu_first.setdefault(name, cpu)
            if cpu:
                self.cpu_last[name] = cpu
        self._wall = (self._wall[0] or now, now)
        s = Sample(now - self._t0, _sent_so_far(self.simulator_log), self.bronze_rows())
        self.samples.append(s)
        return s

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.sample()

    def use(self) -> dict[str, ProcessUse]:
        wall = max(self._wall[1] - self._wall[0], 1e-9)
        return {
            name: ProcessUse(
                cpu_cores=round((self.cpu_last.get(name, 0.0) - self.cpu_first.get(name, 0.0)) / wall, 3),
                peak_rss_mb=round(self.peak_mb[name], 1),
            )
            for name in self.groups
        }


def silver_latencies(lake_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per Silver row, in seconds: its file's commit time minus its reading timestamp, and the time
    the pipeline decoded it (``ingest_time``) minus its reading timestamp (the transport's share)."""
    table = DeltaTable(str(lake_dir / c.SILVER_TABLE))
    actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
    committed: list[np.ndarray] = []
    ingested: list[np.ndarray] = []
    for path, modified in zip(actions["path"], actions["modification_time"], strict=True):
        rows = pq.read_table(lake_dir / c.SILVER_TABLE / path, columns=[c.TIMESTAMP, c.INGEST_TIME])
        reading_us = pc.cast(rows[c.TIMESTAMP], pa.int64()).to_numpy(zero_copy_only=False)
        ingest_us = pc.cast(rows[c.INGEST_TIME], pa.int64()).to_numpy(zero_copy_only=False)
        committed.append((_epoch_us(modified) - reading_us) / 1e6)
        ingested.append((ingest_us - reading_us) / 1e6)
    if not committed:
        return np.empty(0), np.empty(0)
    return np.concatenate(committed), np.concatenate(ingested)


def _epoch_us(value: Any) -> int:
    """A Delta add action's modification time (datetime or epoch milliseconds) in microseconds."""
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1e6)
    return int(value) * 1000


def alert_latencies(delivery: Notifier) -> np.ndarray:
    """Per alert state change delivered to the EHR webhook (every alert goes there): arrival minus the
    event time of the reading that changed the state, in seconds."""
    out = []
    for d in delivery.hooks.deliveries("/ehr"):
        event_time = d.json["alert"][c.EVENT_TIME]
        out.append(d.received_at - _iso_seconds(event_time))
    return np.asarray(out, dtype=np.float64)


def _iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- one run -------------------------------------------------------------------------------------


def run_load(run_dir: Path, *, patients: int, minutes: float, model_dir: Path, log: Any = print) -> LoadRun:
    """Run the whole stack under ``patients`` x one reading per 5 s for ``minutes``; measure."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    logs, lake_dir, sim_dir = run_dir / "logs", run_dir / "lake", run_dir / "sim"
    lake = Lake(LocalLake(root=lake_dir))
    key = secrets.token_bytes(32)
    os.environ["VITALS_PSEUDONYM_KEY"] = key.hex()
    load_cohort_admissions(run_dir / "admissions", lake, patients=patients, seed=SEED, key=key)
    result = LoadRun(patients=patients, minutes=minutes, readings_per_s=patients / INTERVAL_S)
    started = time.monotonic()
    with (
        LocalStack(run_dir / "stack") as stack,
        notifier(run_dir, stack.pubsub) as delivery,
        children(stop_timeout=20) as procs,
    ):
        env = child_env(stack)
        pipeline = demo_pipeline(
            stack, lake_dir=lake_dir, model_dir=model_dir, log=logs / "pipeline.log", env=env
        )
        procs.append(pipeline)
        pipeline.start()
        pipeline.wait_ready(pipeline_tables_created(lake), timeout=180)
        bridge = ManagedProcess("bridge", [PY, "-m", "pipelines.kafka_bridge"], logs / "bridge.log", env=env)
        procs.append(bridge)
        bridge.start()
        argv = simulator_argv(
            sim_dir,
            stack.kafka.bootstrap_servers,
            patients=patients,
            duration=minutes * 60,
            interval=INTERVAL_S,
            seed=SEED,
        )
        simulator = ManagedProcess(
            "simulator",
            [*argv, *SIMULATOR_FAULTS_OFF],
            logs / "simulator.log",
            env=env,
        )
        groups = {
            "simulator": 0,
            "tansu (Kafka)": stack.tansu.pid or 0,
            "bridge": 0,
            "pubsub emulator": stack.emulator.pid or 0,
            "pipeline": pipeline.pid or 0,
            "notifier function": delivery.function.pid or 0,
        }
        procs.append(simulator)
        simulator.start()
        groups["simulator"], groups["bridge"] = simulator.pid or 0, bridge.pid or 0
        sampler = Sampler(groups, bronze_uri=str(lake_dir / c.BRONZE_TABLE), simulator_log=simulator.log_path)
        sampler.start()
        log(f"    {patients:,} patients ({result.readings_per_s:,.0f} readings/s) for {minutes:g} min ...")
        deadline = time.monotonic() + minutes * 60 + 120
        while simulator.running() and time.monotonic() < deadline:
            if not (pipeline.running() and bridge.running()):
                result.failures.append("a component exited: see " + str(logs))
                break
            time.sleep(1)
        sampler.stop()
        last = sampler.sample()  # the moment the producer stopped
        produced = json.loads((sim_dir / "produced.json").read_text())["messages_sent"]
        result.produced = produced
        result.bronze_when_producer_stopped = last.bronze
        result.processes = sampler.use()
        result.samples = sampler.samples
        half = last.t / 2
        result.lag_first_half_max = max((s.lag for s in sampler.samples if s.t <= half), default=0)
        result.lag_second_half_max = max((s.lag for s in sampler.samples if s.t > half), default=0)
        t_stop = time.monotonic()
        time.sleep(DRAIN_ALLOWANCE_S)
        result.bronze_after_allowance = sampler.bronze_rows()
        result.consumed_ratio = result.bronze_after_allowance / produced if produced else 0.0
        # Drain: how long until Bronze holds everything sent.
        while sampler.bronze_rows() < produced and time.monotonic() - t_stop < 120:
            time.sleep(1)
        if sampler.bronze_rows() >= produced:
            result.drained_s = round(time.monotonic() - t_stop, 1)
        time.sleep(10)  # the last Silver commit and pushes in flight
        pipeline.stop(timeout=60)
        bridge.stop(timeout=20)
        delivery.settle(lake)  # every alert delivered and acknowledged: nothing still in flight
        alerts = alert_latencies(delivery)
        result.alerts_delivered = len(alerts)
    to_silver, to_ingest = silver_latencies(lake_dir)
    result.silver_latency_s = percentiles(to_silver)
    result.ingest_latency_s = percentiles(to_ingest)
    result.alert_latency_s = percentiles(alerts)
    result.seconds = round(time.monotonic() - started, 1)
    result.judge()
    return result


# -- the benchmark -------------------------------------------------------------------------------


def _env_ladder() -> tuple[int, ...]:
    text = os.environ.get("VITALS_LOAD_LADDER")
    return tuple(int(x) for x in text.split(",")) if text else DEFAULT_LADDER


def _describe(r: LoadRun) -> str:
    s, a, i = r.silver_latency_s, r.alert_latency_s, r.ingest_latency_s
    parts = [
        f"consumed {r.consumed_ratio:.3f}, worst lag {r.lag_seconds:.0f} s",
        f"ingest p50/p95 {i.get('p50', float('nan')):.1f}/{i.get('p95', float('nan')):.1f} s",
        f"Silver p50/p95/p99 {s.get('p50', float('nan')):.1f}/{s.get('p95', float('nan')):.1f}/"
        f"{s.get('p99', float('nan')):.1f} s",
    ]
    if a:
        parts.append(
            f"alert p50/p95/p99 {a['p50']:.1f}/{a['p95']:.1f}/{a['p99']:.1f} s ({r.alerts_delivered})"
        )
    else:
        parts.append("no alerts delivered")
    parts.append(f"pipeline {r.processes.get('pipeline', ProcessUse()).cpu_cores:.2f} cores")
    parts.append("holds" if r.holds else "FAILS: " + "; ".join(r.failures))
    return ", ".join(parts)


@benchmark(NAME, TITLE)
def sustained_load(ctx: Context) -> Result:
    ladder = QUICK_LADDER if ctx.quick else _env_ladder()
    rung_minutes = (
        QUICK_MINUTES
        if ctx.quick
        else float(os.environ.get("VITALS_LOAD_RUNG_MINUTES", DEFAULT_RUNG_MINUTES))
    )
    minutes = QUICK_MINUTES if ctx.quick else float(os.environ.get("VITALS_LOAD_MINUTES", DEFAULT_MINUTES))
    result = Result(NAME, TITLE)
    runs: list[tuple[str, LoadRun]] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        model_dir = tmp / "model"
        train_demo_model(model_dir, seed=SEED)
        result.setup_seconds = time.perf_counter() - t0
        highest: int | None = None
        for n in ladder:
            ctx.log(f"  rung: {n:,} patients")
            run = run_load(
                tmp / f"rung-{n}", patients=n, minutes=rung_minutes, model_dir=model_dir, log=ctx.log
            )
            runs.append(("rung", run))
            ctx.log(f"    {_describe(run)}")
            if not run.holds:
                break
            highest = n
        sustained_at = [highest] if highest is not None else []
        if highest is not None and highest > TARGET_PATIENTS:
            sustained_at.append(TARGET_PATIENTS)  # measured directly if the highest does not hold
        for n in sustained_at if not ctx.quick and minutes > 0 else []:  # VITALS_LOAD_MINUTES=0: ladder
            ctx.log(f"  sustained: {n:,} patients for {minutes:g} min")
            run = run_load(
                tmp / f"sustained-{n}", patients=n, minutes=minutes, model_dir=model_dir, log=ctx.log
            )
            runs.append(("sustained", run))
            ctx.log(f"    {_describe(run)}")
            if run.holds:
                break
    for kind, run in runs:
        result.add(
            Variant(
                label=f"{run.patients:,} patients ({run.readings_per_s:,.0f} readings/s)",
                rows=run.produced,
                seconds=run.minutes * 60,
                runs=[run.minutes * 60],
                group=f"{kind} {run.minutes:g} min",
                note=_describe(run),
            )
        )
    sustained = [r for kind, r in runs if kind == "sustained"]
    final = sustained[-1] if sustained else None
    holding = [r.patients for _, r in runs if r.holds]
    # A rung as long as the target's 10 minutes (VITALS_LOAD_RUNG_MINUTES=10) counts as well.
    long_enough = [r for kind, r in runs if kind == "sustained" or r.minutes >= DEFAULT_MINUTES]
    result.checks[f"a {TARGET_PATIENTS:,}-patient load holds for {DEFAULT_MINUTES:g} min (target)"] = any(
        r.holds and r.patients >= TARGET_PATIENTS and r.minutes >= DEFAULT_MINUTES for r in long_enough
    )
    result.config = {
        "interval_s": INTERVAL_S,
        "ladder": list(ladder),
        "rung_minutes": rung_minutes,
        "sustained_minutes": minutes,
        "highest_holding_patients": max(holding) if holding else None,
        "targets": {
            "consumed_over_produced": TARGET_CONSUMED,
            "silver_p95_s": TARGET_SILVER_P95_S,
            "alert_p95_s": TARGET_ALERT_P95_S,
            "patients": TARGET_PATIENTS,
        },
        "simulator_faults_off": list(SIMULATOR_FAULTS_OFF),
        "runs": [{"kind": kind, **run.to_json()} for kind, run in runs],
    }
    result.notes.append(
        "rows = readings produced; rows/s = readings produced per second of the run (the offered load);"
        " the note says whether the stack kept up"
    )
    for kind, run in runs:
        use = ", ".join(
            f"{name} {u.cpu_cores:.2f} cores / {u.peak_rss_mb:,.0f} MB" for name, u in run.processes.items()
        )
        result.notes.append(f"{kind} {run.patients:,} patients: CPU (average cores) and peak RSS: {use}")
    held_long = [r.patients for r in sustained if r.holds]
    result.notes.append(
        (f"highest N that held a {rung_minutes:g}-min rung: {max(holding):,}" if holding else "no rung held")
        + (f"; held for {minutes:g} min: {max(held_long):,} patients" if held_long else "")
    )
    if final is None and not ctx.quick:
        result.notes.append(
            "no sustained run: VITALS_LOAD_MINUTES=0 (the rungs only)"
            if minutes <= 0
            else "no sustained run: the first rung did not hold"
        )
    return result
