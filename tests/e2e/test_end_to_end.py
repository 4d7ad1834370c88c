"""The whole system on real local services, exactly as `make demo` runs it:

simulator -> Kafka (Tansu) -> bridge -> Pub/Sub (emulator) -> Beam (DirectRunner, streaming) -> Delta.
Counts per layer must match what the simulator says it sent, record for record.
"""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from harness.demo import run_demo
from tests.factories import ids_by_key
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from warehouse import views
from warehouse.duck import DuckWarehouse

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("e2e") / "demo"
    code = run_demo(
        run_dir=run_dir,
        patients=40,
        duration=45,  # episodes last up to 60 % of the run: long enough for the alert rule's 15 s
        interval=2,
        seed=7,
        drain_timeout=180,
        # Dirty on purpose: every imperfection shows up in a 45-second run.
        simulator_args=[
            "--malformed-rate",
            "0.05",
            "--duplicate-rate",
            "0.05",
            "--late-rate",
            "0.05",
            "--out-of-order-rate",
            "0.1",
            # Every patient has a clinical episode, so alerts open and leave the platform.
            "--episode-rate",
            "1.0",
        ],
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    produced = json.loads((run_dir / "sim" / "produced.json").read_text())
    return code, summary, produced, Lake(LocalLake(root=run_dir / "lake"))


def test_demo_exits_zero_and_conservation_holds(demo):
    code, summary, _, _ = demo
    assert code == 0, json.dumps(summary["conservation"], indent=1)
    assert summary["ok"] and all(ch["ok"] for ch in summary["conservation"])


def test_exact_counts_per_layer_match_the_simulator(demo):
    _, _, produced, lake = demo
    assert produced["malformed_sent"] > 0 and produced["duplicates_sent"] > 0  # the run really was dirty
    assert lake.count("bronze") == produced["messages_sent"]
    assert lake.count("silver") == produced["valid_readings"]
    assert lake.count("quarantine") == produced["malformed_sent"]
    dups = pc.sum(lake.read("silver_commits")[c.DUPLICATE_ROWS]).as_py()
    assert dups == produced["duplicates_sent"]


def test_bronze_keeps_kafka_coordinates_once_each(demo):
    _, _, produced, lake = demo
    refs = lake.read("bronze", columns=[c.RECORD_REF])[c.RECORD_REF]
    assert pc.count_distinct(refs).as_py() == produced["messages_sent"]
    assert all(r.startswith(f"kafka:{c.VITALS_TOPIC}:") for r in refs.to_pylist()[:50])


def test_gold_has_one_row_per_patient_minute_covering_every_silver_reading(demo):
    _, _, _, lake = demo
    silver = lake.read("silver", columns=[c.PATIENT_KEY, c.TIMESTAMP])
    minutes = pc.floor_temporal(silver[c.TIMESTAMP], multiple=60, unit="second")
    expected = {}
    for patient, minute in zip(silver[c.PATIENT_KEY].to_pylist(), minutes.to_pylist(), strict=True):
        expected[(patient, minute)] = expected.get((patient, minute), 0) + 1
    # Silver and Gold name patients by key: the identity map knows every key of the run.
    assert set(ids_by_key(lake)) == set(silver[c.PATIENT_KEY].to_pylist())
    gold = lake.read("gold", columns=[c.PATIENT_KEY, c.WINDOW_SECONDS, c.WINDOW_START, c.READING_COUNT])
    got = {
        (r[c.PATIENT_KEY], r[c.WINDOW_START]): r[c.READING_COUNT]
        for r in gold.to_pylist()
        if r[c.WINDOW_SECONDS] == 60
    }
    assert got == expected


def test_quarantine_names_the_rules(demo):
    _, summary, produced, _ = demo
    rules = summary["lake"]["quarantine_by_rule"]
    assert sum(rules.values()) >= produced["malformed_sent"]
    assert {"malformed_json", "timestamp_iso8601_with_offset"} & set(rules)


def test_every_silver_reading_is_scored_by_the_demo_model_and_the_alert_rule(demo):
    _, summary, _, lake = demo
    silver = lake.read("silver", columns=[c.ANOMALY_SCORE, c.MODEL_VERSION, c.ALERT_OPEN, c.ALERT_OPENED])
    assert silver[c.ANOMALY_SCORE].null_count == 0
    assert len(set(silver[c.MODEL_VERSION].to_pylist())) == 1
    assert silver[c.ALERT_OPEN].null_count == 0 and silver[c.ALERT_OPENED].null_count == 0
    cl = summary["clinical"]
    assert cl["scored_readings"] == silver.num_rows
    assert cl["alerts_opened"] <= cl["readings_with_alert_open"]


def test_the_demo_fills_the_local_warehouse_and_its_views(demo):
    _, summary, _, lake = demo
    wh = summary["warehouse"]
    gold = lake.read("gold", columns=[c.PATIENT_KEY])
    assert wh["gold_windows"] == gold.num_rows > 0  # synced live by the dashboard, then finished
    patients = len(set(gold[c.PATIENT_KEY].to_pylist()))
    assert wh["view_rows"]["patient_risk_scores"] == wh["view_rows"]["latest_vitals"] == patients
    assert wh["view_rows"]["data_quality_daily"] > 0
    assert wh["highest_risk"] and wh["highest_risk"][0]["risk_level"] in c.NEWS2_RESPONSES


def test_the_dashboard_ran_during_the_stream_and_listed_every_patient(demo):
    _, summary, _, _ = demo
    shown = summary["warehouse"]["dashboard"]["patients_shown_during_run"]
    assert shown == summary["warehouse"]["view_rows"]["patient_risk_scores"] > 0


def test_alerts_the_pipeline_raised_reach_the_inbox_and_the_webhooks_once(demo):
    _, summary, _, lake = demo
    al = summary["alerts"]
    events = lake.read("alerts", columns=[c.ALERT_STATE, c.SEVERITY])
    assert sum(al["events"].values()) == events.num_rows
    # Routing: every event to the EHR webhook; "medium" and up also by email and to chat.
    ranked = [c.NEWS2_RESPONSES.index(s) for s in events[c.SEVERITY].to_pylist()]
    to_ward = sum(r >= c.NEWS2_RESPONSES.index("medium") for r in ranked)
    assert al["emails_delivered"] == to_ward
    assert al["webhooks_delivered"] == events.num_rows + to_ward
    assert al["dead_letters"] == 0


def test_no_raw_patient_id_or_name_reaches_analysts_notifications_or_logs(demo):
    """Minimum necessary, on the whole run: the reporting views (what analysts and Looker Studio read),
        every e-mail and webhook that left the platform, and every log line of our processes hold no
        patient id and no name, and neither do the lake's and the warehouse's Gold and alerts. The identity
    tables, where they are, are the scan's own check."""
    _, summary, _, lake = demo
    run_dir = lake.settings.root.parent
    ids = set(ids_by_key(lake).values())
    names = {n for n in lake.read("patients", columns=[c.NAME])[c.NAME].to_pylist() if n}
    assert len(ids) == 40 and names, "the run had patients and admissions with names"
    identifying = ids | names

    def found(text: str) -> set[str]:
        return {x for x in identifying if x in text}

    # The scan finds them where they belong: the identity tables.
    assert found(json.dumps(lake.read("patients").to_pylist(), default=str))
    assert found(json.dumps(lake.read("patient_keys").to_pylist(), default=str))
    # The lake's tables past the gate name patients by key only.
    for layer in ("silver", "gold", "rolling", "alerts", "dq_metrics"):
        assert not found(json.dumps(lake.read(layer).to_pylist(), default=str)), layer

    with DuckWarehouse(run_dir / "warehouse.duckdb") as wh:
        assert wh.count("patient_risk_scores") == wh.count("latest_vitals") == len(ids)
        for view in [*views.PUBLIC_VIEWS, c.GOLD_TABLE, c.ALERTS_TABLE]:
            rows = wh.query(f"SELECT * FROM {view}")
            assert not found(json.dumps(rows.to_pylist(), default=str)), view

    delivered = Path(summary["alerts"]["kept_in"])
    sent = [*sorted(delivered.glob("mail-*.eml")), delivered / "webhooks.jsonl"]
    assert summary["alerts"]["webhooks_delivered"] > 0, "the run sent alerts to scan"
    assert len(sent) == 1 + summary["alerts"]["emails_delivered"]
    assert (delivered / "webhooks.jsonl").read_text().count("\n") >= summary["alerts"]["webhooks_delivered"]
    for path in sent:
        text = path.read_text(errors="replace")
        if path.suffix == ".eml":  # the parts as a mail client shows them (bodies may be encoded)
            mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            text += "".join(str(part.get_content()) for part in mail.walk() if not part.is_multipart())
        assert not found(text), path.name

    logs = sorted((run_dir / "logs").glob("*.log"))
    assert {p.stem for p in logs} >= {"pipeline", "bridge", "dashboard", "alert-notifier"}, logs
    for path in logs:
        assert not found(path.read_text(errors="replace")), path.name
