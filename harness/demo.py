"""``make demo``: the whole system end to end on local real services, then a conservation summary.

    simulator --Kafka (Tansu)--> bridge --Pub/Sub (emulator)--> Beam (DirectRunner) --> Delta lake

Each component runs as its own process, as it would in production; the stack and every child are
stopped (process groups) on success, failure or Ctrl-C. The summary is printed and written to
``var/demo/summary.json``; the exit code is non-zero when a conservation check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from harness.demo_alerts import alert_summary, keep_deliveries, notifier
from harness.stack import LocalStack, ManagedProcess, StackError
from harness.stack.process import free_port
from harness.waiting import WaitTimeout, wait_until
from vitals_lake import access as lake_access
from vitals_lake import contract as c
from vitals_lake.admissions import refresh
from vitals_lake.audit import Check, LakeCounts, clinical_summary, conservation, count_lake
from vitals_lake.cli import usage_error
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from warehouse.duck import DuckWarehouse
from warehouse.sync import sync_lake

PY = sys.executable


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=int(os.environ.get("DEMO_PATIENTS", "300")))
    parser.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("DEMO_DURATION", "120")),
        help="seconds of real-time readings",
    )
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between a patient's readings")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dir", type=Path, default=Path("var/demo"), help="run folder (wiped at start)")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    if args.patients < 1 or args.seed < 0:
        return usage_error(parser, "--patients must be >= 1 and --seed >= 0")
    if min(args.duration, args.interval, args.drain_timeout) <= 0 or args.duration < args.interval:
        return usage_error(
            parser, "--duration, --interval and --drain-timeout must be > 0, --duration >= --interval"
        )
    return run_demo(
        run_dir=args.dir,
        patients=args.patients,
        duration=args.duration,
        interval=args.interval,
        seed=args.seed,
        drain_timeout=args.drain_timeout,
    )


def run_demo(
    *,
    run_dir: Path,
    patients: int,
    duration: float,
    interval: float,
    seed: int,
    drain_timeout: float,
    simulator_args: Sequence[str] = (),
) -> int:
    """Run everything; return 0 when every conservation check holds (the summary is in run_dir)."""
    run_dir = run_dir.resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    logs, lake_dir, sim_dir = run_dir / "logs", run_dir / "lake", run_dir / "sim"
    warehouse_path = run_dir / "warehouse.duckdb"
    lake = Lake(LocalLake(root=lake_dir))
    started = time.monotonic()
    say(f"run folder {run_dir}")

    # A pseudonym key for this run (in the cloud it comes from Secret Manager).
    key = secrets.token_bytes(32)
    os.environ["VITALS_PSEUDONYM_KEY"] = key.hex()
    admitted = load_cohort_admissions(run_dir / "admissions", lake, patients=patients, seed=seed, key=key)
    say(f"admissions loaded: {admitted} patients (ward, bed, diagnosis, SpO2 scale) before the stream")
    model_dir = run_dir / "model"
    model = train_demo_model(model_dir, seed=seed)
    say(
        f"anomaly model {model['model']} {model['model_version']} trained on a labelled history"
        f" ({model['training']['rows']:,} normal readings; chosen on validation patients)"
    )

    children: list[ManagedProcess] = []
    with (
        LocalStack(run_dir / "stack", handle_signals=True) as stack,
        notifier(run_dir, stack.pubsub) as delivery,
    ):
        say(f"stack up: Tansu {stack.tansu.bootstrap}, Pub/Sub emulator {stack.emulator.host_port}")
        say(
            f"alert notifier (functions-framework) {delivery.function.push_endpoint}, pushed from"
            f" {c.ALERTS_TOPIC}; email to SMTP {delivery.mail.host}:{delivery.mail.port},"
            f" webhooks to {delivery.hooks.url('')}"
        )
        env = {**os.environ, **stack.env(), "PYTHONUNBUFFERED": "1"}
        try:
            pipeline = demo_pipeline(
                stack, lake_dir=lake_dir, model_dir=model_dir, log=logs / "pipeline.log", env=env
            )
            children.append(pipeline)
            pipeline.start()
            pipeline.wait_ready(pipeline_tables_created(lake), timeout=120)
            say(
                "pipeline running (DirectRunner, streaming); tables created; alert rule times scaled to"
                " the demo's compressed episodes (persistence 15 s, clear 30 s, cooldown 120 s)"
            )

            bridge_stats = run_dir / "bridge.json"
            bridge = ManagedProcess(
                "bridge",
                [PY, "-m", "pipelines.kafka_bridge", "--stats-file", str(bridge_stats)],
                logs / "bridge.log",
                env=env,
            )
            children.append(bridge)
            bridge.start()
            say("bridge running (Kafka -> Pub/Sub, envelopes)")

            # The dashboard owns the DuckDB warehouse while the stream runs (DuckDB allows one writer
            # process) and syncs it from the lake every few seconds.
            port = free_port()
            dashboard_url = f"http://127.0.0.1:{port}"
            dashboard = ManagedProcess(
                "dashboard",
                [
                    PY,
                    "-m",
                    "dashboard",
                    "--warehouse",
                    str(warehouse_path),
                    "--lake",
                    str(lake_dir),
                    "--sync-seconds",
                    "5",
                    "--port",
                    str(port),
                ],
                logs / "dashboard.log",
                env=env,
            )
            children.append(dashboard)
            dashboard.start()
            dashboard.wait_ready(lambda: _http_ok(f"{dashboard_url}/healthz"), timeout=60)
            say(f"dashboard {dashboard_url} (the four Looker Studio pages over the local warehouse, live)")

            say(f"simulator: {patients} patients, one reading every {interval:g} s, for {duration:g} s ...")
            simulate(
                sim_dir,
                stack.kafka.bootstrap_servers,
                patients=patients,
                duration=duration,
                interval=interval,
                seed=seed,
                env=env,
                extra=simulator_args,
            )
            produced = json.loads((sim_dir / "produced.json").read_text())
            say(f"simulator done: {produced['messages_sent']:,} messages sent")

            counts = drain(
                lake,
                produced["messages_sent"],
                timeout=drain_timeout,
                alive=lambda: pipeline.running() and bridge.running(),
            )
            dashboard_shown = _dashboard_patients(dashboard_url)
            dashboard.stop(timeout=20)
            # SIGTERM: the pipeline cancels first, while the bridge's heartbeats keep its Pub/Sub pull
            # short (an idle pull waits 30 s); then the bridge drains and commits its offsets.
            pipeline.stop(timeout=40)
            bridge.stop(timeout=20)
            if not delivery.settle(lake):  # pushes still in flight reach the function, are acknowledged
                say("alert deliveries did not settle within 60 s: see the alerts summary")
            alerts = alert_summary(lake, delivery)
            alerts["kept_in"] = str(keep_deliveries(run_dir, delivery))
        finally:
            for child in reversed(children):
                child.stop(timeout=10)

    bridge_report = json.loads(bridge_stats.read_text()) if bridge_stats.exists() else {}
    checks = conservation(counts, produced=produced["messages_sent"])
    warehouse = load_warehouse(lake, warehouse_path)
    warehouse["dashboard"] = {"url": dashboard_url, "patients_shown_during_run": dashboard_shown}
    summary = build_summary(
        produced,
        bridge_report,
        counts=counts,
        checks=checks,
        lake=lake,
        run_dir=run_dir,
        seconds=time.monotonic() - started,
    )
    summary["warehouse"] = warehouse
    summary["alerts"] = alerts
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary)
    return 0 if all(ch.ok for ch in checks) else 1


def pipeline_tables_created(lake: Lake) -> Callable[[], bool]:
    """A started pipeline's readiness: it creates the tables it writes (its grant, and only those)."""
    return lambda: all(lake.exists(layer) for layer in lake_access.writes("pipeline"))


def demo_pipeline(
    stack: LocalStack, *, lake_dir: Path, model_dir: Path, log: Path, env: dict[str, str]
) -> ManagedProcess:
    """The streaming pipeline as the demo runs it (not started): the stack's subscription, the model,
    alerts published to the notifier's topic, the alert rule's times scaled to short episodes."""
    argv = [PY, "-m", "pipelines.beam_vitals", "--subscription", stack.pubsub.subscription_path]
    argv += ["--lake", str(lake_dir), "--model-uri", str(model_dir)]
    argv += ["--alerts-topic", stack.alerts_topic_path, *DEMO_ALERT_TIMES]
    return ManagedProcess("pipeline", argv, log, env=env)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _sync_runs(url: str) -> int:
    with urllib.request.urlopen(f"{url}/healthz", timeout=10) as resp:
        return int(json.loads(resp.read())["sync"]["runs"])


def _dashboard_patients(url: str) -> int:
    """How many patients the live dashboard's high-risk page lists, once a whole sync of the drained lake
    ran (two more sync runs: the one under way when called may have started before the lake drained)."""
    try:
        runs = _sync_runs(url)
        wait_until(lambda: _sync_runs(url) >= runs + 2, timeout=60, interval=0.5, what="two dashboard syncs")
    except (OSError, ValueError, KeyError, WaitTimeout) as exc:
        say(f"dashboard sync: {exc}")
    try:
        with urllib.request.urlopen(f"{url}/api/high-risk", timeout=10) as resp:
            return len(json.loads(resp.read())["patients"])
    except (OSError, ValueError, KeyError) as exc:
        say(f"dashboard did not answer: {exc}")
        return 0


def load_warehouse(lake: Lake, path: Path) -> dict[str, Any]:
    """Bring the local warehouse up to date with the lake; what its views now hold."""
    with DuckWarehouse(path) as wh:
        wh.ensure()
        synced = sync_lake(lake, wh)
        rows = {view: wh.count(view) for view in DEMO_VIEWS}
        top = wh.query(
            "SELECT patient_key, ward, bed, risk_level, news2_score_max, news2_trend, anomaly_score_max"
            " FROM patient_risk_scores ORDER BY risk_rank DESC, news2_score_max DESC LIMIT 5"
        ).to_pylist()
        windows = wh.count("gold_latest")  # one per Gold key: the lake's Gold, whoever synced it
    return {
        "path": str(path),
        "synced_rows": synced,
        "gold_windows": windows,
        "view_rows": rows,
        "highest_risk": top,
    }


def train_demo_model(out: Path, *, seed: int) -> dict[str, Any]:
    """A model for the stream to load: a small labelled history, trained as ``make train`` does."""
    from ml import evaluate, train  # noqa: PLC0415 - scikit-learn and friends only when the demo runs

    history = out.parent / "ml-history"
    readings, labels = evaluate.simulate(
        history, patients=60, hours=6, interval=60, seed=seed, episode_rate=0.5
    )
    return train.train(readings, labels, out, seed=seed)


def load_cohort_admissions(folder: Path, lake: Lake, *, patients: int, seed: int, key: bytes) -> int:
    """The hospital knows its patients before their monitors stream: write the cohort's admission
    drop (same seed, so the same patients) and load it the way the admissions loader does."""
    import subprocess  # noqa: PLC0415

    argv = [
        PY,
        "-m",
        "simulator",
        "--patients",
        str(patients),
        "--seed",
        str(seed),
        "--fast",
        "--duration",
        "5s",
        "--sink",
        "null",
        "--out",
        str(folder),
        "--quiet",
    ]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    report = refresh(
        str(folder / "landing"), str(folder / "reference" / c.DIAGNOSIS_MAPPING_FILE), lake, key=key
    )
    return report.patients_changed


def simulator_argv(
    sim_dir: Path, bootstrap: str, *, patients: int, duration: float, interval: float, seed: int
) -> list[str]:
    """``python -m simulator`` producing to Kafka in real time (append fault options to taste)."""
    return [
        *(PY, "-m", "simulator", "--sink", "kafka", "--bootstrap", bootstrap),
        *("--patients", str(patients), "--duration", f"{duration:g}s", "--interval", f"{interval:g}s"),
        *("--seed", str(seed), "--out", str(sim_dir)),
    ]


def simulate(
    sim_dir: Path,
    bootstrap: str,
    *,
    patients: int,
    duration: float,
    interval: float,
    seed: int,
    env: dict[str, str],
    extra: Sequence[str] = (),
) -> None:
    import subprocess  # noqa: PLC0415 - only the demo's foreground child

    # Late readings arrive 5-20 s after their time: inside the pipeline's lateness, short for a demo.
    argv = simulator_argv(
        sim_dir, bootstrap, patients=patients, duration=duration, interval=interval, seed=seed
    )
    argv += ["--late-seconds", "5", "20", *extra]
    result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise StackError(f"simulator exited with code {result.returncode}")


def drain(lake: Lake, produced: int, *, timeout: float, alive: Callable[[], bool]) -> LakeCounts:
    """Wait until every produced record is in Bronze and accounted for downstream, and Gold holds
    every Silver reading (its windows fire on the watermark, a little after the last commit)."""

    def settled() -> LakeCounts | None:
        if not alive():
            raise _Stopped
        counts = count_lake(lake)
        done = counts.bronze >= produced and all(ch.ok for ch in conservation(counts, produced=counts.bronze))
        return counts if done else None

    try:
        return wait_until(settled, timeout=timeout, interval=2, what="the lake to settle")
    except _Stopped:
        say("a component stopped early: see var/demo/logs/")
    except WaitTimeout:
        say(f"drain timed out after {timeout:.0f} s")
    return count_lake(lake)


class _Stopped(Exception):
    """A component of the demo exited while the lake was draining."""


def build_summary(
    produced: dict[str, Any],
    bridge: dict[str, Any],
    *,
    counts: LakeCounts,
    checks: list[Check],
    lake: Lake,
    run_dir: Path,
    seconds: float,
) -> dict[str, Any]:
    return {
        "ok": all(ch.ok for ch in checks),
        "seconds": round(seconds, 1),
        "produced": {
            "messages_sent": produced["messages_sent"],
            "valid_readings": produced["valid_readings"],
            "duplicates_sent": produced["duplicates_sent"],
            "malformed_sent": produced["malformed_sent"],
            "late_sent": produced.get("late_sent"),
            "out_of_order_sent": produced.get("out_of_order_sent"),
            "patients": produced.get("patients"),
            "episodes": produced.get("episodes"),
        },
        "bridge": {
            k: bridge[k]
            for k in ("records_consumed", "records_published", "envelopes", "heartbeats", "publish_failures")
            if k in bridge
        },
        "lake": counts.to_dict(),
        "expected_from_simulator": {
            "silver = valid readings": [counts.silver, produced["valid_readings"]],
            "quarantine = malformed sent": [counts.quarantine, produced["malformed_sent"]],
            "duplicates removed = duplicates sent": [counts.duplicates_removed, produced["duplicates_sent"]],
        },
        "conservation": [ch.to_dict() for ch in checks],
        "clinical": clinical_summary(lake),
        "tables": {spec.name: lake.uri(layer) for layer, spec in c.TABLES.items()},
        "logs": str(run_dir / "logs"),
        "summary": str(run_dir / "summary.json"),
        "read_them": [
            f"{PY} -m vitals_lake.inspect --lake {lake.settings.table_uri('').rstrip('/')}",
            f"{PY} -m vitals_lake.inspect --lake {lake.settings.table_uri('').rstrip('/')} gold --limit 5",
            f'{PY} -c "from deltalake import DeltaTable; '
            f"print(DeltaTable('{lake.uri('silver')}').to_pyarrow_table().slice(0, 5))\"",
        ],
    }


def print_summary(s: dict[str, Any]) -> None:
    p, lk = s["produced"], s["lake"]
    print("\n=== Vitals Lake demo summary ===")
    print(
        f"readings produced     {p['messages_sent']:>9,}  ({p['valid_readings']:,} valid, "
        f"{p['duplicates_sent']:,} duplicates, {p['malformed_sent']:,} malformed; "
        f"{p['late_sent']:,} late, {p['out_of_order_sent']:,} out of order)"
    )
    if s["bridge"]:
        print(f"bridge                {s['bridge']}")
    print(f"Bronze                {lk['bronze']:>9,}")
    print(f"Silver                {lk['silver']:>9,}")
    print(f"quarantine            {lk['quarantine']:>9,}  by rule: {lk['quarantine_by_rule']}")
    print(f"duplicates removed    {lk['duplicates_removed']:>9,}")
    print(
        "Gold rows             "
        + "; ".join(
            f"{rows:,} per patient per {_window_name(int(w))} ({lk['gold_readings'][w]:,} readings)"
            for w, rows in lk["gold_rows"].items()
        )
    )
    cl = s["clinical"]
    print(
        f"enrichment            {cl['silver_known_patient']:,} readings of admitted patients, "
        f"{cl['silver_unknown_patient']:,} of unknown ones (kept, flagged)"
    )
    print(f"NEWS2 responses       {cl['news2_response']}")
    print(
        f"anomaly model         {cl['scored_readings']:,} readings scored by {cl['model_versions']},"
        f" {cl['anomalous_readings']:,} above threshold; combined rule: {cl['alerts_opened']:,} alerts"
        f" opened ({cl['readings_with_alert_open']:,} readings with an alert open)"
    )
    top = list(cl["dq_failures"].items())[:6]
    print(f"data quality          {cl['dq_rules_evaluated']} rules in dq_metrics; most failed: {dict(top)}")
    print("conservation:")
    for ch in s["conservation"]:
        mark = "ok  " if ch["ok"] else "FAIL"
        print(f"  [{mark}] {ch['name']}: {ch['left']:,} vs {ch['right']:,}")
    print("tables:")
    for name, uri in s["tables"].items():
        print(f"  {name:<28} {uri}")
    print("read them:")
    for cmd in s["read_them"]:
        print(f"  {cmd}")
    al = s.get("alerts")
    if al:
        print(
            f"alerts                {al['events']} (opened by severity {al['opened_by_severity']});"
            f" delivered: {al['emails_delivered']} emails, {al['webhooks_delivered']} webhooks,"
            f" {al['dead_letters']} dead letters"
        )
    wh = s.get("warehouse")
    if wh:
        db = wh["dashboard"]
        print(
            f"dashboard             {db['url']} listed {db['patients_shown_during_run']} patients"
            " while the stream ran"
        )
        print(
            f"warehouse             {wh['path']}: {wh['gold_windows']:,} Gold windows;"
            f" rows synced after the stream {wh['synced_rows']}"
        )
        print(f"  view rows           {wh['view_rows']}")
        for r in wh["highest_risk"]:
            score = r["anomaly_score_max"]
            print(
                f"  highest risk        {r['patient_key'][:10]}  ward {r['ward']} bed {r['bed']}"
                f"  {r['risk_level']}  NEWS2 {r['news2_score_max']} ({r['news2_trend']})"
                f"  anomaly {'-' if score is None else f'{score:.2f}'}"
            )
        print(
            f'  query it            {PY} -m warehouse query "SELECT * FROM ward_alert_counts"'
            f" --warehouse {wh['path']}"
        )
    print(f"logs: {s['logs']}   summary: {s['summary']}   took {s['seconds']:.0f} s")
    print("RESULT:", "conservation holds" if s["ok"] else "CONSERVATION FAILED")


# The simulator squeezes a deterioration into at most 60 % of the run (a 2-minute demo has episodes of
# about a minute, where a ward sees tens of minutes), so the alert rule's times are scaled down alike;
# the defaults (60 s / 120 s / 30 min) are what the evaluation measured.
DEMO_ALERT_TIMES: Final = (
    "--alert-persistence-seconds",
    "15",
    "--alert-clear-seconds",
    "30",
    "--alert-cooldown-seconds",
    "120",
)

DEMO_VIEWS: Final = (
    "patient_risk_scores",
    "latest_vitals",
    "vital_signs_hourly_trend",
    "diagnosis_summary",
    "ward_alert_counts",
    "data_quality_daily",
)


def _window_name(seconds: int) -> str:
    return {60: "minute", 3600: "hour"}.get(seconds, f"{seconds} s")


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
