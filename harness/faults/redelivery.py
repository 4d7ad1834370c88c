"""A Pub/Sub redelivery storm: every envelope reaches the pipeline three times.

Pub/Sub delivers at least once; after an ack deadline passes or a subscriber restarts, whole envelopes
come back. Here every envelope of a recorded run is published three times (interleaved with the
others) to a running pipeline. Bronze keeps all deliveries (append-only); Silver must keep each reading
once and count exactly the repeats as duplicates removed; Gold must count each reading once.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from harness.demo import pipeline_tables_created
from harness.faults import FaultReport
from harness.faults.harness import (
    children,
    distinct,
    gold_checks,
    mismatched_minutes,
    own_stack,
    record_clean_run,
    settle,
    start_pipeline,
    wait_for,
)
from harness.stack import LocalStack, publisher_client
from pipelines.pubsub_clients import close_publisher
from vitals_lake import contract as c
from vitals_lake.config import LocalLake, PubSubSettings
from vitals_lake.envelope import SourceRecord, encode_envelope, heartbeat
from vitals_lake.lake import Lake

NAME: Final = "redelivery"
DESCRIPTION: Final = "a Pub/Sub redelivery storm: every envelope delivered three times"
COPIES: Final = 3
ENVELOPE_RECORDS: Final = 50


@dataclass(frozen=True)
class Sizes:
    patients: int
    duration_s: int  # simulated (--fast): readings = patients x duration / 2 s


FULL: Final = Sizes(patients=40, duration_s=30)
QUICK: Final = Sizes(patients=20, duration_s=30)


def _publish_storm(pubsub: PubSubSettings, client: Any, lines: list[bytes]) -> int:
    """Publish every envelope of ``ENVELOPE_RECORDS`` lines ``COPIES`` times; return the envelopes."""
    futures: list[Future[str]] = []
    envelopes = 0
    for start in range(0, len(lines), ENVELOPE_RECORDS):
        chunk = lines[start : start + ENVELOPE_RECORDS]
        records = [SourceRecord(value=v, partition=0, offset=start + i) for i, v in enumerate(chunk)]
        data, attrs = encode_envelope(records, source="simulator")
        # What at-least-once redelivery looks like to the pipeline: the same envelope again, as
        # separate messages interleaved with the others.
        futures += [client.publish(pubsub.topic_path, data, **attrs) for _ in range(COPIES)]
        envelopes += 1
    for f in futures:
        f.result(timeout=30)
    return envelopes


def run_scenario(workdir: Path, *, quick: bool = False, stack: LocalStack | None = None) -> FaultReport:
    """Publish the storm to a running pipeline, let it drain, and compare the lake with what was sent.

    ``stack``: an already running local stack (the tests share one); by default one is started under
    ``workdir`` and stopped at the end.
    """
    sizes = QUICK if quick else FULL
    started = time.monotonic()
    report = FaultReport(NAME, DESCRIPTION)
    produced, lines = record_clean_run(workdir, patients=sizes.patients, duration_s=sizes.duration_s, seed=5)
    readings = len(lines)
    lake_dir, logs = workdir / "lake", workdir / "logs"
    lake = Lake(LocalLake(root=lake_dir))
    with own_stack(workdir, stack) as st, children() as procs:
        suffix = uuid.uuid4().hex[:10]
        # A short ack deadline: redelivery by the emulator itself adds to the storm, never hides it.
        pubsub = st.create_pubsub_topic(
            f"storm-{suffix}", subscriptions=(f"storm-{suffix}-sub",), ack_deadline_seconds=10
        )
        pipeline = start_pipeline(procs, stack=st, pubsub=pubsub, lake_dir=lake_dir, logs=logs)
        pipeline.wait_ready(pipeline_tables_created(lake), timeout=90)
        client = publisher_client(pubsub)
        stop = threading.Event()

        def heartbeats() -> None:
            # As the bridge does: an idle Pub/Sub pull would otherwise hold the pipeline's
            # processing-time triggers (and so Gold) for up to 30 s.
            data, attrs = heartbeat()
            while not stop.wait(1.0):
                client.publish(pubsub.topic_path, data, **attrs)

        beat = threading.Thread(target=heartbeats, daemon=True)
        try:
            envelopes = _publish_storm(pubsub, client, lines)
            published = time.monotonic()
            beat.start()
            wait_for(
                "every delivery in Bronze",
                lambda: lake.count("bronze") >= COPIES * readings,
                timeout=60,
                alive=[pipeline],
            )
            settled = settle(lake, timeout=60, alive=[pipeline])
        finally:
            stop.set()
            if beat.is_alive():
                beat.join()
            close_publisher(client)
        pipeline.stop(timeout=40)

    counts = settled.counts
    silver_ids = distinct(lake, "silver", c.EVENT_ID)
    report.figures = {
        "envelopes": envelopes,
        "deliveries": COPIES * envelopes,
        "readings": readings,
        "bronze_rows": counts.bronze,
        "silver_rows": counts.silver,
        "duplicates_removed": counts.duplicates_removed,
        "expected_duplicates": (COPIES - 1) * readings,
        "quarantine_rows": counts.quarantine,
        "gold_readings": counts.gold_readings[60],
        "gold_minutes_mismatched": mismatched_minutes(lake),
        "drain_s": round(settled.caught_up_at - published, 1),
    }
    checks = report.checks
    checks["the recorded run is clean (every record a valid reading)"] = (
        readings == produced["messages_sent"] == produced["valid_readings"]
    )
    checks["Bronze holds every delivery"] = counts.bronze == COPIES * readings
    checks["Silver holds every reading once"] = counts.silver == silver_ids == readings
    checks["duplicates removed = the repeats, exactly"] = counts.duplicates_removed == (COPIES - 1) * readings
    checks["nothing quarantined"] = counts.quarantine == 0
    checks["Bronze = Silver + quarantine + duplicates removed"] = (
        counts.bronze == counts.silver + counts.quarantine + counts.duplicates_removed
    )
    checks.update(gold_checks(counts, mismatched=report.figures["gold_minutes_mismatched"]))
    if settled.timed_out:
        report.notes.append("the pipeline did not settle within 60 s")
    report.notes.append(
        f"{sizes.patients} patients x {sizes.duration_s} s at 2 s, recorded (--fast),"
        f" {ENVELOPE_RECORDS} records per envelope, each published {COPIES} times; drain_s: last publish"
        " until the lake held its final counts and Gold covered Silver (1 s polls)"
    )
    report.seconds = time.monotonic() - started
    return report
