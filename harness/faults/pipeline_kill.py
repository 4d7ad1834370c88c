"""The streaming pipeline SIGKILLed mid-stream, then recovered with ``pipelines.recovery``.

Simulator -> Tansu -> bridge -> Pub/Sub emulator -> pipeline -> lake, all real processes. The pipeline
is killed between Bronze commits while the simulator still produces. The DirectRunner acknowledges
Pub/Sub messages when it pulls them and the bridge has committed their Kafka offsets, so what the dead
pipeline held is lost for good when both are just restarted: that control (the lake short of what was
sent) proves the scenario can fail. Then both are stopped, ``python -m pipelines.recovery --rewind
--rebuild-gold`` rewinds the bridge's group to what the lake holds, both restart, and Silver and Gold
must equal what the simulator sent: nothing lost, nothing doubled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from harness.demo import pipeline_tables_created
from harness.faults import FaultReport
from harness.faults.harness import (
    COMMIT_INTERVAL,
    PY,
    ScenarioError,
    child_env,
    children,
    distinct,
    fresh_topics,
    gold_checks,
    mismatched_minutes,
    own_stack,
    settle,
    start_bridge,
    start_pipeline,
    wait_for,
)
from harness.stack import LocalStack, ManagedProcess
from vitals_lake import contract as c
from vitals_lake.config import KafkaSettings, LocalLake
from vitals_lake.lake import Lake

NAME: Final = "pipeline_kill"
DESCRIPTION: Final = (
    "the streaming pipeline SIGKILLed mid-stream; restarted without, then with the recovery rewind"
)


@dataclass(frozen=True)
class Sizes:
    patients: int
    duration_s: int  # real time: the simulator must still be producing when the kill lands


FULL: Final = Sizes(patients=40, duration_s=24)
QUICK: Final = Sizes(patients=20, duration_s=20)


def _simulator(
    procs: list[ManagedProcess],
    *,
    stack: LocalStack,
    kafka: KafkaSettings,
    sizes: Sizes,
    out: Path,
    logs: Path,
) -> ManagedProcess:
    """The simulator in real time into Kafka, with its faults (malformed, duplicated, late records)."""
    argv = [PY, "-m", "simulator", "--sink", "kafka", "--bootstrap", kafka.bootstrap_servers]
    argv += ["--topic", kafka.topic, "--patients", str(sizes.patients), "--duration", f"{sizes.duration_s}s"]
    argv += ["--interval", "2s", "--seed", "11", "--out", str(out), "--late-seconds", "5", "20", "--quiet"]
    argv += ["--malformed-rate", "0.05", "--duplicate-rate", "0.05", "--out-of-order-rate", "0.1"]
    sim = ManagedProcess("simulator", argv, logs / "simulator.log", env=child_env(stack))
    procs.append(sim)
    sim.start()
    return sim


def _recover(*, stack: LocalStack, kafka: KafkaSettings, lake_dir: Path, logs: Path) -> dict[str, Any]:
    """``python -m pipelines.recovery --rewind --rebuild-gold``, as an operator runs it; its JSON report."""
    argv = [PY, "-m", "pipelines.recovery", "--lake", str(lake_dir), "--bootstrap", kafka.bootstrap_servers]
    argv += ["--topic", kafka.topic, "--group", kafka.group_id, "--rewind", "--rebuild-gold"]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=child_env(stack), timeout=120, check=False
    )
    (logs / "recovery.log").write_text(done.stderr)
    if done.returncode != 0:
        raise ScenarioError(f"pipelines.recovery exited {done.returncode}:\n{done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def run_scenario(workdir: Path, *, quick: bool = False, stack: LocalStack | None = None) -> FaultReport:
    """Kill, restart without recovery (the control), recover, and compare the lake with what was sent.

    ``stack``: an already running local stack (the tests share one); by default one is started under
    ``workdir`` and stopped at the end.
    """
    sizes = QUICK if quick else FULL
    started = time.monotonic()
    report = FaultReport(NAME, DESCRIPTION)
    lake_dir, logs, sim_dir = workdir / "lake", workdir / "logs", workdir / "sim"
    lake = Lake(LocalLake(root=lake_dir))
    with own_stack(workdir, stack) as st, children() as procs:
        topics = fresh_topics(st, prefix="kill")
        kafka = topics.kafka
        pipeline = start_pipeline(procs, stack=st, pubsub=topics.pubsub, lake_dir=lake_dir, logs=logs)
        pipeline.wait_ready(pipeline_tables_created(lake), timeout=90)
        bridge = start_bridge(procs, stack=st, topics=topics, logs=logs)
        sim = _simulator(procs, stack=st, kafka=kafka, sizes=sizes, out=sim_dir, logs=logs)

        # Kill mid-interval after a few Bronze commits, while the simulator still produces: the pipeline
        # holds readings it pulled (and Pub/Sub forgot) but has not committed.
        first = lake.version("bronze")
        wait_for(
            "three Bronze commits",
            lambda: lake.version("bronze") >= first + 3,
            timeout=60,
            alive=[pipeline, bridge],
        )
        time.sleep(COMMIT_INTERVAL / 2)
        report.checks["the kill landed mid-stream (the simulator still producing)"] = sim.running()
        if pipeline.pid is None:
            raise ScenarioError("the pipeline has no process to kill")
        os.killpg(pipeline.pid, signal.SIGKILL)
        pipeline.stop()
        killed_at = lake.count("bronze")

        # The control, without recovery: restart both as they are; what the dead pipeline pulled never
        # returns. (Gold is not awaited: windows whose upsert the kill cut off stay short until recovery.)
        bridge.stop(timeout=20)
        alive = [
            start_bridge(procs, stack=st, topics=topics, logs=logs),
            start_pipeline(procs, stack=st, pubsub=topics.pubsub, lake_dir=lake_dir, logs=logs),
        ]
        wait_for("the simulator to finish", lambda: not sim.running(), timeout=60, alive=alive)
        produced = json.loads((sim_dir / "produced.json").read_text())
        no_rewind = settle(lake, timeout=60, alive=alive, min_bronze=killed_at + 1, gold=False)
        no_rewind_refs = distinct(lake, "bronze", c.RECORD_REF)

        # Recovery: stop both (the pipeline first: SIGTERM cancels it), rewind the group to what the lake
        # holds and rebuild recent Gold, restart both.
        for proc in alive[::-1]:
            proc.stop(timeout=40)
        recovered = _recover(stack=st, kafka=kafka, lake_dir=lake_dir, logs=logs)
        positions = recovered["positions"]
        rewound = {r["partition"]: r for r in recovered["rewound"]}
        resent = sum((r["committed_before"] or 0) - r["committed_after"] for r in rewound.values())
        unsettled = recovered["unsettled_bronze_rows"]
        at_recovery = lake.count("bronze")
        restarted = time.monotonic()
        alive = [
            start_bridge(procs, stack=st, topics=topics, logs=logs),
            start_pipeline(procs, stack=st, pubsub=topics.pubsub, lake_dir=lake_dir, logs=logs),
        ]
        final = settle(lake, timeout=90, alive=alive, min_bronze=at_recovery + resent)

    counts = final.counts
    sent, valid, malformed = produced["messages_sent"], produced["valid_readings"], produced["malformed_sent"]
    silver_ids = distinct(lake, "silver", c.EVENT_ID)
    bronze_refs = distinct(lake, "bronze", c.RECORD_REF)
    leftover = counts.bronze - (counts.silver + counts.quarantine + counts.duplicates_removed)
    report.figures = {
        "records_sent": sent,
        "readings_sent": valid,
        "malformed_sent": malformed,
        "bronze_rows_at_kill": killed_at,
        "lost_without_recovery_records": sent - no_rewind_refs,
        "lost_without_recovery_readings": valid - no_rewind.counts.silver,
        "rewind_offsets": resent,
        "rewound_partitions": sum(
            r["committed_after"] < (r["committed_before"] or 0) for r in rewound.values()
        ),
        "unsettled_bronze_rows": unsettled,
        "gold_rows_rebuilt": recovered.get("gold_rows_rebuilt", 0),
        "recovery_s": round(final.caught_up_at - restarted, 1),
        "silver_rows": counts.silver,
        "gold_readings": counts.gold_readings[60],
        "gold_hour_readings": counts.gold_readings[3600],
        "lost": valid - silver_ids,
        "doubled": counts.silver - silver_ids,
        "bronze_rows": counts.bronze,
        "quarantine_rows": counts.quarantine,
        "duplicates_removed": counts.duplicates_removed,
        "gold_minutes_mismatched": mismatched_minutes(lake),
    }
    checks = report.checks
    # The control: without the rewind the kill loses records, so the checks below can fail.
    checks["without the rewind, readings are lost (the control)"] = no_rewind.counts.silver < valid
    checks["without the rewind, records are missing from Bronze"] = no_rewind_refs < sent
    checks["the rewind commits what the lake holds, per partition"] = {
        p: r["committed_after"] for p, r in rewound.items()
    } == {p: positions.get(f"{kafka.topic}:{p}", 0) for p in range(topics.partitions)}
    checks["the rewind goes back behind the bridge's commits"] = resent > 0 and any(
        r["committed_after"] < (r["committed_before"] or 0) for r in rewound.values()
    )
    checks["Silver holds every valid reading once"] = counts.silver == silver_ids == valid
    # A re-sent malformed record may be quarantined twice: count it by source.
    checks["quarantine holds every malformed record"] = (
        distinct(lake, "quarantine", c.RECORD_REF) == malformed
    )
    # Bronze is append-only: records re-sent after the rewind appear twice.
    checks["Bronze holds every record at least once"] = bronze_refs == sent and counts.bronze >= sent
    # Conservation, adapted: Bronze = Silver + quarantine + duplicates removed + the rows of batches a stop
    # cut off between their Bronze and Silver/quarantine commits (found by recovery, re-sent).
    checks["Bronze = Silver + quarantine + duplicates removed + unsettled rows"] = leftover >= unsettled >= 0
    checks.update(gold_checks(counts, mismatched=report.figures["gold_minutes_mismatched"]))
    if no_rewind.timed_out:
        report.notes.append("the control (restart without rewind) did not settle within 60 s")
    if final.timed_out:
        report.notes.append("the recovered run did not settle within 90 s")
    report.notes.append(
        f"{sizes.patients} patients x {sizes.duration_s} s at 2 s, 5% malformed, 5% duplicated, 10% out of"
        f" order; commit interval {COMMIT_INTERVAL:g} s; recovery_s: restart after the rewind until the"
        " lake held its final counts and Gold covered Silver (1 s polls; includes the pipeline's start-up)"
    )
    report.seconds = time.monotonic() - started
    return report
