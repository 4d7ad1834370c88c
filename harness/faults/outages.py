"""Downstream outages on the real local stack: the warehouse and the notifier's targets fail for a while;
everything is delivered after recovery, once.

Two public scenarios, each ``run_*(workdir, *, quick=False) -> FaultReport``; :func:`run_scenario` runs
both (the ``harness.faults`` convention, returning a list here):

* :func:`run_warehouse_outage`: the streaming pipeline (``python -m pipelines.beam_vitals``, a
  subprocess on the DirectRunner) reads the Pub/Sub emulator and streams Gold, alerts and data-quality
  rows into the BigQuery emulator through a :class:`~harness.faults.proxy.FaultProxy`. Simulated
  readings (with clinical episodes, so alerts open) are published paced over real time; mid-stream the
  proxy answers 503 to every request for ``outage_s`` (quick 20 s, full 45 s), then forwards again.
  After the stream settles, BigQuery (newest row per key) must equal the lake: Gold by
  (patient_id, window_seconds, window_start) with the same ``updated_at`` and reading count, alerts by
  (alert_id, alert_state, event_time), data-quality rows by (batch_id, layer, rule); and no key (and
  version) may be stored twice. The emulator ignores ``insertId``, so "once" is checked by key here,
  not taken from BigQuery's best-effort de-duplication.
* :func:`run_notifier_outage`: synthetic, schema-valid alert events (``vitals_lake.alert_events``, not
  the whole pipeline: deterministic counts) are published to an alerts topic pushed by the Pub/Sub
  emulator to the notifier under functions-framework. The SMTP server is stopped and the webhook
  receiver answers 503 for ``outage_s`` (quick 15 s, full 45 s), then both are back. Every event must
  reach its inbox and its webhook exactly once (counted by the ``X-Vitals-Notification-Id`` header and
  the ``Idempotency-Key`` once the function acknowledged every message, so that no redelivery is still
  to come), with no final dead letter. The function's own retries are short (2 tries)
  so that recovery runs on Pub/Sub's redelivery, which is what an outage longer than a retry relies on.

Each scenario starts what it needs under ``workdir`` and stops it on the way out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
from google.cloud import bigquery

from harness.demo import pipeline_tables_created
from harness.faults import FaultReport
from harness.faults.harness import children
from harness.faults.proxy import FaultProxy
from harness.stack import LocalStack, ManagedProcess
from harness.stack.bigquery import BigQueryEmulator
from harness.stack.function import NotifierFunction
from harness.stack.mail import LocalMailServer
from harness.stack.webhook import WebhookReceiver
from harness.waiting import WaitTimeout, wait_until
from pipelines.pubsub_clients import close_publisher, publisher_client
from vitals_lake import contract as c
from vitals_lake.alert_events import attributes, to_json
from vitals_lake.config import LocalLake, PubSubSettings
from vitals_lake.contract import Layer
from vitals_lake.envelope import SourceRecord, encode_envelope, heartbeat
from vitals_lake.lake import Lake
from warehouse.bigquery import make_client
from warehouse.settings import BigQuerySettings

PY: Final = sys.executable
COMMIT_INTERVAL: Final = 2.0
WRITE_RETRY_DEADLINE_S: Final = 5.0  # shorter than any outage: the writer's ride-out is what recovers
# The demo's alert timings: episodes of a few simulated minutes open (and clear) alerts.
ALERT_TIMES: Final = ("--alert-persistence-seconds", "15", "--alert-clear-seconds", "30")
ALERT_TIMES_COOLDOWN: Final = ("--alert-cooldown-seconds", "120")
GOLD_KEY: Final = (c.PATIENT_KEY, c.WINDOW_SECONDS, c.WINDOW_START)
ALERT_KEY: Final = (c.ALERT_ID, c.ALERT_STATE, c.EVENT_TIME)
DQ_KEY: Final = (c.BATCH_ID, c.LAYER, c.RULE)


def run_scenario(workdir: Path, *, quick: bool = False) -> list[FaultReport]:
    """Both outage scenarios, one after the other (each in its own sub-folder)."""
    return [
        run_warehouse_outage(workdir / "warehouse", quick=quick),
        run_notifier_outage(workdir / "notifier", quick=quick),
    ]


# --- shared helpers --------------------------------------------------------------------------------------
def _wait(probe: Callable[[], bool], *, timeout: float, every: float = 0.5, what: str) -> bool:
    """:func:`~harness.waiting.wait_until`, where a timeout is the scenario's finding (a failed check)."""
    try:
        wait_until(probe, timeout=timeout, interval=every, what=what)
    except WaitTimeout:
        return False
    return True


# --- a. the warehouse unreachable mid-stream ---------------------------------------------------------------
def run_warehouse_outage(workdir: Path, *, quick: bool = False) -> FaultReport:
    """BigQuery (through the proxy) answers 503 to everything for a while, mid-stream; see the module doc."""
    started = time.monotonic()
    outage_s = 20.0 if quick else 45.0
    publish_s = 45.0 if quick else 90.0
    outage_at = 10.0 if quick else 20.0  # seconds into publishing
    patients, sim_seconds = (30, 150) if quick else (60, 300)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    logs, lake_dir, sim_dir = workdir / "logs", workdir / "lake", workdir / "sim"
    report = FaultReport(
        scenario="warehouse_outage",
        description=(
            f"streaming pipeline -> BigQuery emulator through a proxy answering 503 to every request for "
            f"{outage_s:.0f} s mid-stream; readings of {patients} patients published over {publish_s:.0f} s; "
            "then BigQuery (newest per key) must equal the lake: Gold, alerts, data quality, each key once"
        ),
    )
    lines = _simulate(sim_dir, patients=patients, seconds=sim_seconds)
    lake = Lake(LocalLake(root=lake_dir))
    dataset = f"outage_{uuid.uuid4().hex[:8]}"
    with (
        LocalStack(workdir / "stack") as stack,
        BigQueryEmulator(workdir / "bigquery") as emulator,
        contextlib.closing(FaultProxy(emulator.endpoint)) as proxy,
        children(stop_timeout=40) as procs,
    ):
        pubsub = stack.create_pubsub_topic(
            f"outage-{dataset}", subscriptions=(f"outage-{dataset}-sub",), ack_deadline_seconds=30
        )
        direct = BigQuerySettings.for_emulator(emulator.endpoint, project=stack.project, dataset=dataset)
        client = make_client(direct)
        argv = [PY, "-m", "pipelines.beam_vitals", "--subscription", pubsub.subscription_path]
        argv += ["--lake", str(lake_dir), "--commit-interval", f"{COMMIT_INTERVAL:g}"]
        argv += ["--bigquery-dataset", f"{stack.project}.{dataset}", "--bigquery-endpoint", proxy.endpoint]
        # One write gives up after a few seconds, so the outage is ridden out by the pipeline's writer
        # (repeats with backoff, not failing the bundle), the path a long outage takes.
        argv += ["--bigquery-retry-deadline", f"{WRITE_RETRY_DEADLINE_S:g}"]
        argv += [*ALERT_TIMES, *ALERT_TIMES_COOLDOWN]
        env = {**os.environ, **stack.env(), "PYTHONUNBUFFERED": "1"}
        pipeline = ManagedProcess("pipeline", argv, logs / "pipeline.log", env=env)
        procs.append(pipeline)
        pipeline.start()
        pipeline.wait_ready(pipeline_tables_created(lake), timeout=120)

        timeline: dict[str, float] = {}
        outage_stats: dict[str, int] = {}

        def outage() -> None:
            time.sleep(outage_at)
            bronze_before = lake.version("bronze")
            proxy.fail_all, proxy.always = True, "503"
            timeline["outage_start"] = time.monotonic()
            time.sleep(outage_s)
            proxy.always, proxy.fail_all = None, False
            timeline["recovered"] = time.monotonic()
            outage_stats["bronze_commits_during_outage"] = lake.version("bronze") - bronze_before
            outage_stats["refused_requests"] = len(proxy.served)

        breaker = threading.Thread(target=outage, name="outage", daemon=True)
        publish_start = time.monotonic()
        breaker.start()
        published, during = _publish_paced(
            pubsub,
            lines,
            seconds=publish_s,
            in_outage=lambda: "outage_start" in timeline and "recovered" not in timeline,
        )
        breaker.join()
        beats = _Heartbeats(pubsub)
        try:
            # Judged on the comparison that settled, not on a later one: the lake's Gold may still take
            # a last commit after BigQuery matched it, which says nothing about the warehouse.
            last: dict[str, Any] = {}

            def settled() -> bool:
                last.update(_warehouse_matches_lake(lake, client, direct, published))
                return bool(last["settled"])

            matched = _wait(
                settled, timeout=240 if quick else 360, every=2.0, what="BigQuery to match the lake"
            )
            drain_s = time.monotonic() - timeline["recovered"]
            comparison = last
        finally:
            beats.stop()
        alive = pipeline.running()
        pipeline.stop(timeout=40)
        client.close()
        log_text = pipeline.log_path.read_text(errors="replace") if pipeline.log_path.exists() else ""

    refused_ids = set(proxy.refused_ids)
    report.figures.update(
        outage_s=outage_s,
        readings_published=len(lines),
        readings_published_during_outage=during,
        rows_during_outage=len(refused_ids),
        retries=outage_stats.get("refused_requests", 0),
        bronze_commits_during_outage=outage_stats.get("bronze_commits_during_outage", -1),
        drain_after_recovery_s=round(drain_s, 1),
        recovered_at_s=round(timeline["recovered"] - publish_start, 1),  # since publishing began
        lake_gold_rows=comparison["lake_gold_rows"],
        bq_gold_rows=comparison["bq_gold_rows"],
        bq_gold_rows_stored=comparison["bq_gold_stored"],
        lake_alert_rows=comparison["lake_alert_rows"],
        bq_alert_rows=comparison["bq_alert_rows"],
        lake_dq_rows=comparison["lake_dq_rows"],
        bq_dq_rows=comparison["bq_dq_rows"],
        duplicates=comparison["duplicates"],
        lost=comparison["lost"],
        unexpected=comparison["unexpected"],
        silver_readings=comparison["silver"],
        pipeline_warnings_unreachable=log_text.count("transient error, retrying"),
        writer_repeats_logged=log_text.count("write repeat"),
    )
    refused_landed = len(refused_ids & comparison["bq_ids"]) if refused_ids else 0
    report.figures["refused_rows_landed_after_recovery"] = refused_landed
    report.checks.update(
        {
            "the outage refused warehouse writes": bool(refused_ids) and report.figures["retries"] > 0,
            "the pipeline survived the outage": alive,
            "the pipeline's writer rode the outage out (repeated writes, bundle not failed)": (
                report.figures["writer_repeats_logged"] > 0
            ),
            "every valid reading reached Silver": comparison["silver"] == len(lines),
            "the warehouse settled equal to the lake": matched,
            "BigQuery Gold (newest per key) equals lake Gold": comparison["gold_equal"],
            "BigQuery alerts equal lake alerts": comparison["alerts_equal"],
            "BigQuery data-quality rows equal the lake's": comparison["dq_equal"],
            "alerts were raised (the alert check is not vacuous)": comparison["lake_alert_rows"] > 0,
            "no key stored twice in BigQuery": comparison["duplicates"] == 0,
            "nothing lost": comparison["lost"] == 0,
            "rows refused during the outage landed after it": refused_landed == len(refused_ids),
        }
    )
    report.notes.append(
        "the DirectRunner executes bundles on one thread: while the sink waits for BigQuery the whole "
        "local stream pauses (Bronze commits during the outage are in the figures) and catches up from "
        "the Pub/Sub backlog afterwards; allowed lateness (600 s) covers the pause"
    )
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _simulate(out: Path, *, patients: int, seconds: int) -> list[bytes]:
    """Readings (JSON lines) of a simulated cohort covering the last ``seconds``, valid and unique."""
    argv = [PY, "-m", "simulator", "--sink", "jsonl", "--fast", "--patients", str(patients)]
    argv += ["--duration", f"{seconds}s", "--interval", "2s", "--seed", "17", "--episode-rate", "0.6"]
    argv += ["--malformed-rate", "0", "--duplicate-rate", "0", "--out", str(out), "--quiet"]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    lines = (out / "readings.jsonl").read_bytes().splitlines()
    produced = json.loads((out / "produced.json").read_text())
    if len(lines) != produced["valid_readings"]:
        raise RuntimeError(
            f"simulator wrote {len(lines)} lines for {produced['valid_readings']} valid readings"
        )
    return lines


def _publish_paced(
    pubsub: PubSubSettings, lines: list[bytes], *, seconds: float, in_outage: Callable[[], bool]
) -> tuple[int, int]:
    """Publish envelopes of 50 readings evenly over ``seconds``, with a heartbeat every second (an idle
    DirectRunner pull would hold the last windows for 30 s). Returns (readings, readings in the outage)."""
    client = publisher_client(pubsub)
    try:
        batches = [lines[i : i + 50] for i in range(0, len(lines), 50)]
        gap = seconds / max(1, len(batches))
        during = 0
        begin = time.monotonic()
        next_beat = begin
        futures = []
        for n, batch in enumerate(batches):
            while time.monotonic() < begin + n * gap:
                if time.monotonic() >= next_beat:
                    data, attrs = heartbeat()
                    futures.append(client.publish(pubsub.topic_path, data, **attrs))
                    next_beat += 1.0
                time.sleep(0.05)
            records = [SourceRecord(value=v, partition=0, offset=n * 50 + i) for i, v in enumerate(batch)]
            data, attrs = encode_envelope(records, source="simulator")
            futures.append(client.publish(pubsub.topic_path, data, **attrs))
            if in_outage():
                during += len(batch)
        for f in futures:
            f.result(timeout=30)
        return len(lines), during
    finally:
        close_publisher(client)


class _Heartbeats:
    """Keep-alive messages every second while the stream drains."""

    def __init__(self, pubsub: PubSubSettings) -> None:
        self._client = publisher_client(pubsub)
        self._topic = pubsub.topic_path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        data, attrs = heartbeat()
        while not self._stop.wait(1.0):
            self._client.publish(self._topic, data, **attrs)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        close_publisher(self._client)


def _rows(
    client: bigquery.Client, settings: BigQuerySettings, table: str, cols: tuple[str, ...]
) -> list[Any]:
    sql = f"SELECT {', '.join(cols)} FROM `{settings.table_ref(table)}`"
    return [tuple(r.values()) for r in client.query(sql).result()]


def _lake_rows(lake: Lake, layer: Layer, cols: tuple[str, ...]) -> list[tuple[Any, ...]]:
    table: pa.Table = lake.read(layer, columns=list(cols))
    return list(zip(*(table[col].to_pylist() for col in cols), strict=True))


def _warehouse_matches_lake(
    lake: Lake, client: bigquery.Client, settings: BigQuerySettings, published: int
) -> dict[str, Any]:
    """Compare BigQuery with the lake by key; ``settled``: Silver complete and every table equal."""
    from warehouse.tables import WAREHOUSE_TABLES  # noqa: PLC0415

    gold_cols = (*GOLD_KEY, c.UPDATED_AT, c.READING_COUNT)
    lake_gold = {r[:3]: r[3:] for r in _lake_rows(lake, "gold", gold_cols)}
    bq_gold_all = _rows(client, settings, c.GOLD_TABLE, gold_cols)
    newest: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in bq_gold_all:
        if r[:3] not in newest or r[3] > newest[r[:3]][0]:
            newest[r[:3]] = r[3:]
    gold_versions = Counter(r[:4] for r in bq_gold_all)

    lake_alerts = set(_lake_rows(lake, "alerts", ALERT_KEY))
    bq_alerts = Counter(_rows(client, settings, c.ALERTS_TABLE, ALERT_KEY))
    lake_dq = set(_lake_rows(lake, "dq_metrics", DQ_KEY))
    bq_dq = Counter(_rows(client, settings, c.DQ_METRICS_TABLE, DQ_KEY))

    duplicates = sum(n - 1 for counter in (gold_versions, bq_alerts, bq_dq) for n in counter.values())
    lost = sum(1 for k, v in lake_gold.items() if newest.get(k) != v)
    lost += len(lake_alerts - set(bq_alerts)) + len(lake_dq - set(bq_dq))
    unexpected = len(set(newest) - set(lake_gold)) + len(set(bq_alerts) - lake_alerts)
    unexpected += len(set(bq_dq) - lake_dq)
    silver = lake.count("silver")
    gold_equal = newest == lake_gold
    alerts_equal = set(bq_alerts) == lake_alerts
    dq_equal = set(bq_dq) == lake_dq
    ids = set()
    for name, rows in (
        (c.GOLD_TABLE, [dict(zip(gold_cols, r, strict=True)) for r in bq_gold_all]),
        (c.ALERTS_TABLE, [dict(zip(ALERT_KEY, r, strict=True)) for r in bq_alerts]),
        (c.DQ_METRICS_TABLE, [dict(zip(DQ_KEY, r, strict=True)) for r in bq_dq]),
    ):
        if rows:
            spec = WAREHOUSE_TABLES[name]
            cols = [*spec.key, *([spec.version] if spec.version else [])]
            ids.update(spec.insert_ids(pa.Table.from_pylist([{k: r[k] for k in cols} for r in rows])))
    # Gold covers every Silver reading in both window lengths: the lake's Gold is complete, so equal
    # to it means the warehouse is complete too (an equal but unfinished pair is not settled).
    gold_readings = Counter[int]()
    for key, (_, count) in lake_gold.items():
        gold_readings[key[1]] += count
    complete = all(gold_readings[w] == silver for w in c.GOLD_WINDOWS)
    return {
        "settled": silver == published and complete and gold_equal and alerts_equal and dq_equal,
        "gold_equal": gold_equal,
        "alerts_equal": alerts_equal,
        "dq_equal": dq_equal,
        "lake_gold_rows": len(lake_gold),
        "bq_gold_rows": len(newest),
        "bq_gold_stored": len(bq_gold_all),
        "lake_alert_rows": len(lake_alerts),
        "bq_alert_rows": sum(bq_alerts.values()),
        "lake_dq_rows": len(lake_dq),
        "bq_dq_rows": sum(bq_dq.values()),
        "duplicates": duplicates,
        "lost": lost,
        "unexpected": unexpected,
        "silver": silver,
        "bq_ids": ids,
    }


# --- b. the notifier's targets down ----------------------------------------------------------------------
INBOX: Final = "ward-team@hospital.example"
HOOK_PATH: Final = "/ehr"
HOOK_KEY_ENV: Final = "OUTAGE_WEBHOOK_KEY"


def synthetic_alert_events(n: int, *, seed: str) -> list[dict[str, Any]]:
    """``n`` valid alert events (opened, high severity) as the pipeline publishes them."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    rows = []
    for i in range(n):
        at = t0 + timedelta(seconds=i)
        rows.append(
            {
                c.ALERT_ID: f"{seed}{i:04d}",
                c.ALERT_STATE: "opened",
                c.PATIENT_KEY: f"pk-{seed}-{i:04d}",
                c.WARD: "ICU",
                c.BED: str(i % 20 + 1),
                c.SEVERITY: "high",
                c.ALERT_REASONS: ["news2_emergency"],
                c.NEWS2_SCORE: 8,
                c.ALERT_FLAGS_RAISED: ["tachycardia"],
                c.ANOMALY_SCORE: 0.9,
                c.MODEL_VERSION: "outage-test",
                c.HEART_RATE: 131.0,
                c.TEMPERATURE: 38.9,
                c.SPO2: 91.0,
                c.RESPIRATION_RATE: 26.0,
                c.SYSTOLIC: 95.0,
                c.DIASTOLIC: 60.0,
                c.WINDOW_START: at - timedelta(minutes=1),
                c.WINDOW_END: at,
                c.EVENT_TIME: at,
                c.EVENT_DATE: at.date(),
            }
        )
    table = pa.Table.from_pylist(rows, schema=c.ALERTS_SCHEMA)
    return [json.loads(raw) for raw in to_json(table)]


def notification_id(event: dict[str, Any]) -> str:
    """The notifier's id of one notification (its README): alert, state and event time."""
    return f"{event[c.ALERT_ID]}:{event[c.ALERT_STATE]}:{event[c.EVENT_TIME]}"


def run_notifier_outage(workdir: Path, *, quick: bool = False) -> FaultReport:
    """SMTP stopped and the webhook answering 503 for a while; see the module docstring."""
    started = time.monotonic()
    events_n = 20 if quick else 60
    outage_s = 15.0 if quick else 45.0
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    report = FaultReport(
        scenario="notifier_outage",
        description=(
            f"{events_n} synthetic alert events pushed by the Pub/Sub emulator to the notifier function; "
            f"SMTP stopped and the webhook answering 503 for {outage_s:.0f} s (a quarter of the events "
            "before, the rest during the outage); afterwards each event emailed and webhooked exactly once"
        ),
    )
    events = synthetic_alert_events(events_n, seed=uuid.uuid4().hex[:8])
    expected = {notification_id(e) for e in events}
    key = secrets.token_hex(16)
    with (
        LocalStack(workdir / "stack") as stack,
        LocalMailServer(workdir) as mail,
        WebhookReceiver(secret=key) as hooks,
    ):
        topic = f"{c.ALERTS_TOPIC}-{uuid.uuid4().hex[:8]}"
        settings = PubSubSettings(project=stack.project, topic=topic, emulator_host=stack.emulator.host_port)
        config = {
            "smtp": mail.smtp_config(),
            "retry": {"attempts": 2, "base_delay_seconds": 0.2, "max_delay_seconds": 0.5},
            "webhooks": {
                "ehr": {"url": hooks.url(HOOK_PATH), "format": "json", "signing_secret": HOOK_KEY_ENV}
            },
            "local_receivers": True,  # the test receivers listen on loopback, plain HTTP
            "routes": [{"name": "all", "email": [INBOX], "webhooks": ["ehr"]}],
        }
        with NotifierFunction(workdir, config=config, env={**mail.env(), HOOK_KEY_ENV: key}) as fn:
            fn.subscribe(settings, f"{topic}-notifier", topic=topic)
            publisher = publisher_client(settings)
            try:
                first = events_n // 4
                futures = [_publish_event(publisher, settings, e) for e in events[:first]]
                message_ids = {str(f.result(timeout=30)) for f in futures}
                _wait(
                    lambda: len(hooks.deliveries(HOOK_PATH)) >= first,
                    timeout=20,
                    every=0.1,
                    what="the events before the outage webhooked",
                )
                mail.stop()
                hooks.fail(HOOK_PATH, status=503)
                outage_start = time.monotonic()
                rest = events[first:]
                gap = (outage_s / 2) / max(1, len(rest))  # published over the outage's first half
                futures = []
                for e in rest:
                    futures.append(_publish_event(publisher, settings, e))
                    time.sleep(gap)
                message_ids |= {str(f.result(timeout=30)) for f in futures}
                time.sleep(max(0.0, outage_start + outage_s - time.monotonic()))
                refused_during = len(hooks.deliveries(HOOK_PATH, accepted=False))
                mail.start()  # same port
                hooks.reset(HOOK_PATH)
                recovered = time.monotonic()

                def all_delivered() -> bool:
                    return expected <= _emailed(mail) and expected <= _hooked(hooks)

                delivered = _wait(
                    all_delivered,
                    timeout=120 if quick else 180,
                    every=0.2,
                    what="every event emailed and webhooked",
                )
                drain_s = time.monotonic() - recovered

                def all_acknowledged() -> bool:
                    latest = fn.acknowledged()
                    return all(latest.get(m) for m in message_ids)

                # Once the last invocation of every message answered 200, Pub/Sub has nothing left to
                # redeliver: a second email or webhook can no longer come, and the counts below are final.
                acknowledged = _wait(
                    all_acknowledged, timeout=60, every=0.2, what="every message acknowledged"
                )
            finally:
                close_publisher(publisher)
            counts = fn.delivery_counts()
            dead = fn.dead_letters()

    emails = Counter(_notification_ids(mail))
    webhooks = Counter(d.idempotency_key for d in hooks.deliveries(HOOK_PATH))
    duplicate_deliveries = sum(n - 1 for n in emails.values()) + sum(n - 1 for n in webhooks.values())
    final_dead = [d for d in dead if d.get("result") != "failed"]  # failed: handed back to Pub/Sub
    # Each invocation that gave up writes one "failed" record per destination and answers 500: the
    # webhook's records count the redeliveries the outage cost.
    redeliveries = sum(
        1 for d in dead if d.get("result") == "failed" and d.get("destination") == "webhook:ehr"
    )
    report.figures.update(
        events=events_n,
        outage_s=outage_s,
        emails_delivered=sum(emails.values()),
        webhooks_delivered=sum(webhooks.values()),
        duplicate_deliveries=duplicate_deliveries,
        drain_after_recovery_s=round(drain_s, 1),
        webhook_requests_refused=len(hooks.deliveries(HOOK_PATH, accepted=False)),
        webhook_requests_refused_during_outage=refused_during,
        failed_delivery_records=len(dead) - len(final_dead),
        redeliveries=redeliveries,
        dead_letters=len(final_dead),
        function_delivery_counts=counts,
    )
    report.checks.update(
        {
            "the outage refused deliveries": refused_during > 0 and len(dead) > len(final_dead),
            "every event delivered after recovery": delivered,
            "every message acknowledged (nothing left to redeliver)": acknowledged,
            "every event emailed exactly once": set(emails) == expected and set(emails.values()) == {1},
            "every event webhooked exactly once": set(webhooks) == expected and set(webhooks.values()) == {1},
            "no duplicate deliveries": duplicate_deliveries == 0,
            "no dead letters (nothing given up for good)": not final_dead,
            "every webhook signed correctly": all(
                d.signature_valid for d in hooks.deliveries(HOOK_PATH, accepted=None)
            ),
        }
    )
    report.notes.append(
        "the function records a 'failed' dead-letter entry each time an invocation gives up transiently "
        "and hands the message back to Pub/Sub (HTTP 500): those are redelivery attempts, counted in "
        "failed_delivery_records; only 'rejected'/'malformed' entries are final dead letters"
    )
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _publish_event(publisher: Any, settings: PubSubSettings, event: dict[str, Any]) -> Any:
    return publisher.publish(settings.topic_path, json.dumps(event).encode(), **attributes(event))


def _notification_ids(mail: LocalMailServer) -> list[str]:
    return [str(m.message["X-Vitals-Notification-Id"]) for m in mail.messages(to=INBOX)]


def _emailed(mail: LocalMailServer) -> set[str]:
    return set(_notification_ids(mail))


def _hooked(hooks: WebhookReceiver) -> set[str]:
    return {k for d in hooks.deliveries(HOOK_PATH) if (k := d.idempotency_key)}


__all__ = [
    "notification_id",
    "run_notifier_outage",
    "run_scenario",
    "run_warehouse_outage",
    "synthetic_alert_events",
]
