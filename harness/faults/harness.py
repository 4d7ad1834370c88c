"""What the fault scenarios share: the stack, its topics, the pipeline and bridge as child processes,
and waiting for the lake to settle.

Everything runs as it does in production: separate processes (``python -m pipelines.beam_vitals``,
``python -m pipelines.kafka_bridge``, ``python -m simulator``) against real local services, so a
scenario can SIGKILL one of them. A stage that cannot go on (a child exited, a wait timed out) raises
:class:`ScenarioError` with the child's log tail; what a scenario proves goes in its ``FaultReport``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow.compute as pc

from harness.stack import LocalStack, ManagedProcess
from harness.waiting import WaitTimeout, wait_until
from vitals_lake import contract as c
from vitals_lake.audit import LakeCounts, count_lake
from vitals_lake.config import KafkaSettings, PubSubSettings
from vitals_lake.lake import Lake

PY: Final = sys.executable
COMMIT_INTERVAL: Final = 2.0  # the pipeline's --commit-interval: short, so a kill lands between commits


class ScenarioError(RuntimeError):
    """A scenario could not run to its end (a child process exited, a wait timed out)."""


@dataclass(frozen=True)
class Topics:
    """A Kafka topic + consumer group and a Pub/Sub topic + subscription, unique to one scenario."""

    kafka: KafkaSettings
    pubsub: PubSubSettings
    partitions: int


@dataclass(frozen=True)
class Settled:
    """The lake's counts once it stopped moving; ``caught_up_at`` (``time.monotonic``) is the first poll
    from which the counts were final (and, when awaited, Gold covered Silver)."""

    counts: LakeCounts
    caught_up_at: float
    timed_out: bool


@contextmanager
def own_stack(workdir: Path, stack: LocalStack | None) -> Iterator[LocalStack]:
    """``stack`` when given (tests share one per session), else a fresh one under ``workdir``, stopped
    on exit."""
    if stack is not None:
        yield stack
        return
    with LocalStack(workdir / "stack") as started:
        yield started


def record_clean_run(
    workdir: Path, *, patients: int, duration_s: int, seed: int, extra_args: tuple[str, ...] = ()
) -> tuple[dict[str, int], list[bytes]]:
    """A clean simulated run (``--fast``, one reading per patient every 2 s, no malformed or duplicated
    records) written under ``workdir/sim``: the simulator's manifest and the readings' lines."""
    out = workdir / "sim"
    argv = [PY, "-m", "simulator", "--sink", "jsonl", "--fast", "--patients", str(patients)]
    argv += ["--duration", f"{duration_s}s", "--interval", "2s", "--seed", str(seed), "--out", str(out)]
    argv += ["--quiet", "--malformed-rate", "0", "--duplicate-rate", "0", *extra_args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise ScenarioError(f"the simulator exited {done.returncode}:\n{done.stderr[-2000:]}")
    produced: dict[str, int] = json.loads((out / "produced.json").read_text())
    return produced, (out / "readings.jsonl").read_bytes().splitlines()


def fresh_topics(stack: LocalStack, *, prefix: str, partitions: int = 4) -> Topics:
    """New topics and a new group, so a scenario never reads another one's records or offsets."""
    suffix = uuid.uuid4().hex[:10]
    topic = stack.create_kafka_topic(f"{prefix}-{suffix}", partitions=partitions)
    kafka = KafkaSettings(
        bootstrap_servers=topic.bootstrap_servers, topic=topic.topic, group_id=f"bridge-{suffix}"
    )
    pubsub = stack.create_pubsub_topic(f"{prefix}-{suffix}", subscriptions=(f"{prefix}-{suffix}-sub",))
    return Topics(kafka=kafka, pubsub=pubsub, partitions=partitions)


@contextmanager
def children(*, stop_timeout: float = 10.0) -> Iterator[list[ManagedProcess]]:
    """A list to append started children to; all are stopped (newest first) on exit, even on errors."""
    procs: list[ManagedProcess] = []
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=stop_timeout)


def child_env(stack: LocalStack) -> dict[str, str]:
    return {**os.environ, **stack.env(), "PYTHONUNBUFFERED": "1"}


def start_pipeline(
    procs: list[ManagedProcess], *, stack: LocalStack, pubsub: PubSubSettings, lake_dir: Path, logs: Path
) -> ManagedProcess:
    """``python -m pipelines.beam_vitals`` on ``pubsub``'s subscription, writing ``lake_dir``."""
    argv = [PY, "-m", "pipelines.beam_vitals", "--subscription", pubsub.subscription_path]
    argv += ["--lake", str(lake_dir), "--commit-interval", f"{COMMIT_INTERVAL:g}"]
    proc = ManagedProcess("pipeline", argv, logs / "pipeline.log", env=child_env(stack))
    procs.append(proc)
    proc.start()
    return proc


def start_bridge(
    procs: list[ManagedProcess], *, stack: LocalStack, topics: Topics, logs: Path
) -> ManagedProcess:
    """``python -m pipelines.kafka_bridge`` from ``topics.kafka`` (its group) to ``topics.pubsub``."""
    k, ps = topics.kafka, topics.pubsub
    argv = [PY, "-m", "pipelines.kafka_bridge", "--bootstrap", k.bootstrap_servers, "--topic", k.topic]
    argv += ["--group", k.group_id, "--project", ps.project, "--pubsub-topic", ps.topic]
    argv += ["--emulator-host", str(ps.emulator_host), "--progress-seconds", "2"]
    proc = ManagedProcess("bridge", argv, logs / "bridge.log", env=child_env(stack))
    procs.append(proc)
    proc.start()
    return proc


def _check_alive(alive: list[ManagedProcess], what: str) -> None:
    for p in alive:
        if not p.running():
            raise ScenarioError(f"{p.name} exited while {what}; log {p.log_path}:\n{p.log_tail()}")


def wait_for(what: str, probe: Callable[[], bool], *, timeout: float, alive: list[ManagedProcess]) -> None:
    """Poll ``probe`` until true; raise :class:`ScenarioError` if a child in ``alive`` exits or ``timeout``
    passes."""

    def probe_alive() -> bool:
        if probe():
            return True
        _check_alive(alive, f"waiting for {what}")
        return False

    try:
        wait_until(probe_alive, timeout=timeout, interval=0.25, what=what)
    except WaitTimeout as exc:
        raise ScenarioError(str(exc)) from None


def settle(
    lake: Lake,
    *,
    timeout: float,
    alive: list[ManagedProcess],
    min_bronze: int = 0,
    gold: bool = True,
    quiet: float = 3 * COMMIT_INTERVAL,
) -> Settled:
    """Wait until Bronze holds ``min_bronze`` rows, no table grows for ``quiet`` seconds and (with
    ``gold``) Gold covers every Silver reading. On timeout, return the counts as they are (the
    scenario's checks then say what is missing) with ``timed_out`` set."""
    last: tuple[int, ...] | None = None
    since = time.monotonic()
    ready_since: float | None = None
    counts: LakeCounts | None = None

    def settled() -> Settled | None:
        nonlocal last, since, ready_since, counts
        counts = count_lake(lake)
        key = (counts.bronze, counts.silver, counts.quarantine, counts.duplicates_removed)
        now = time.monotonic()
        if key != last:
            last, since = key, now
        ready = counts.bronze >= min_bronze and (
            not gold or counts.gold_readings[60] == counts.gold_readings[3600] == counts.silver
        )
        if not ready:
            ready_since = None
        elif ready_since is None or ready_since < since:
            ready_since = now
        if ready_since is not None and now - since >= quiet:
            return Settled(counts, ready_since, timed_out=False)
        _check_alive(alive, "draining")
        return None

    try:
        return wait_until(settled, timeout=timeout, interval=1.0, what="the lake to settle")
    except WaitTimeout:
        return Settled(counts if counts is not None else count_lake(lake), time.monotonic(), timed_out=True)


def gold_minutes(lake: Lake) -> tuple[dict[Any, int], dict[Any, int]]:
    """(readings per patient-minute counted from Silver, ``reading_count`` per patient-minute in Gold)."""
    silver = lake.read("silver", columns=[c.PATIENT_KEY, c.TIMESTAMP])
    minutes = pc.floor_temporal(silver[c.TIMESTAMP], multiple=60, unit="second")
    expected = Counter(zip(silver[c.PATIENT_KEY].to_pylist(), minutes.to_pylist(), strict=True))
    gold = lake.read("gold", columns=[c.PATIENT_KEY, c.WINDOW_SECONDS, c.WINDOW_START, c.READING_COUNT])
    got = {
        (r[c.PATIENT_KEY], r[c.WINDOW_START]): r[c.READING_COUNT]
        for r in gold.to_pylist()
        if r[c.WINDOW_SECONDS] == 60
    }
    return dict(expected), got


def mismatched_minutes(lake: Lake) -> int:
    """Patient-minutes whose Gold ``reading_count`` differs from Silver's (missing or extra ones too)."""
    expected, got = gold_minutes(lake)
    return sum(expected.get(k) != got.get(k) for k in expected.keys() | got.keys())


def distinct(lake: Lake, layer: c.Layer, column: str) -> int:
    """Distinct values of ``column`` in ``layer`` (record refs, event ids)."""
    values = lake.read(layer, columns=[column])[column]
    return int(pc.count_distinct(values).as_py()) if len(values) else 0


def gold_checks(counts: LakeCounts, *, mismatched: int) -> dict[str, bool]:
    """Gold holds every Silver reading exactly once: per patient-minute (``mismatched`` minutes whose
    reading count differs from Silver's) and in total, in minute and in hour windows alike."""
    return {
        "Gold counts every Silver reading once, per patient-minute": mismatched == 0,
        "Gold minute and hour windows sum to Silver": (
            counts.gold_readings[60] == counts.gold_readings[3600] == counts.silver
        ),
    }
