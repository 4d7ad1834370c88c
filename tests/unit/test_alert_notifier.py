"""The alert notifier Cloud Function, through ``functions_framework.create_app(...).test_client()``.

Email goes to a real local SMTP server (aiosmtpd, STARTTLS + AUTH) and webhooks to a real HTTP receiver,
both in threads of this process; the pure parts (routing, rendering, signing, retry classification,
idempotency store, secrets) are tested directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import smtplib
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import functions_framework
import pyarrow as pa
import pytest
import requests
import yaml

from harness.stack.mail import LocalMailServer
from harness.stack.webhook import WebhookReceiver, verify_signature
from vitals_lake import contract as c
from vitals_lake.alert_events import to_json

FUNCTION_DIR = Path(__file__).resolve().parents[2] / "functions" / "alert_notifier"
FUNCTION_SOURCE = FUNCTION_DIR / "main.py"
if str(FUNCTION_DIR) not in sys.path:
    sys.path.insert(0, str(FUNCTION_DIR))

from notifier import config as cfg  # noqa: E402
from notifier import event as ev  # noqa: E402
from notifier import render, retry, secrets, service, state, webhooks  # noqa: E402
from notifier import smtp as notifier_smtp  # noqa: E402

SIGNING_KEY = "unit-signing-key-0123456789abcdef"
T0 = datetime(2026, 11, 22, 8, 57, 5, 123456, tzinfo=UTC)


# --- events ---------------------------------------------------------------------------------------
def make_event(**overrides: Any) -> dict[str, Any]:
    """One alert event as the pipeline publishes it (serialised by vitals_lake.alert_events.to_json)."""
    row: dict[str, Any] = {
        c.ALERT_ID: uuid.uuid4().hex[:24],
        c.ALERT_STATE: "opened",
        c.PATIENT_ID: "MRN-0042",
        c.PATIENT_KEY: "pk-7f3a9c",
        c.WARD: "ICU",
        c.BED: "12",
        c.SEVERITY: "high",
        c.ALERT_REASONS: ["news2_emergency", "model"],
        c.NEWS2_SCORE: 9,
        c.news2_subscore_column(c.HEART_RATE): 3,
        c.news2_subscore_column(c.RESPIRATION_RATE): 3,
        c.ALERT_FLAGS_RAISED: ["tachycardia", "fever"],
        c.ANOMALY_SCORE: 0.8731,
        c.MODEL_VERSION: "iforest-3",
        c.HEART_RATE: 132.0,
        c.TEMPERATURE: 39.2,
        c.SPO2: 89.0,
        c.RESPIRATION_RATE: 28.0,
        c.SYSTOLIC: 85.0,
        c.DIASTOLIC: 50.0,
        c.WINDOW_START: T0 - timedelta(minutes=1),
        c.WINDOW_END: T0,
        c.EVENT_TIME: T0,
        c.EVENT_DATE: T0.date(),
        **overrides,
    }
    [raw] = to_json(pa.Table.from_pylist([row], schema=c.ALERTS_SCHEMA))
    return dict(json.loads(raw))


def push_envelope(data: bytes, message_id: str | None = None) -> dict[str, Any]:
    """The Pub/Sub push body (what the emulator and a push subscription POST)."""
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": {},
            "messageId": message_id or uuid.uuid4().hex[:12],
            "publishTime": "2026-11-22T08:57:06.000Z",
        },
        "subscription": "projects/vitals-lake-local/subscriptions/vitals-alerts-notifier",
    }


def alert_event(payload: dict[str, Any]) -> ev.AlertEvent:
    return ev.parse_pubsub_data(push_envelope(json.dumps(payload).encode()))


# --- the function under test ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMailServer]:
    with LocalMailServer(tmp_path_factory.mktemp("mail")) as server:
        yield server


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SIGNING_KEY) as receiver:
        yield receiver


@pytest.fixture(autouse=True)
def _reset(mail: LocalMailServer, hooks: WebhookReceiver) -> None:
    mail.clear()
    hooks.clear()
    hooks.reset()


class Function:
    def __init__(self, client: Any, state_dir: Path) -> None:
        self.client = client
        self.state_dir = state_dir

    def post(self, payload: dict[str, Any] | bytes, message_id: str | None = None) -> Any:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.client.post("/", json=push_envelope(data, message_id))

    def dead_letters(self) -> list[dict[str, Any]]:
        return state.LocalState(self.state_dir).dead_letters()


MakeFunction = Callable[..., Function]


def base_config(mail: LocalMailServer, hooks: WebhookReceiver) -> dict[str, Any]:
    return {
        "smtp": mail.smtp_config(),
        "retry": {"attempts": 3, "base_delay_seconds": 0.01, "max_delay_seconds": 0.02},
        "webhooks": {
            "ehr": {"url": hooks.url("/ehr"), "format": "json", "signing_secret": "HOOK_KEY"},
            "slack": {"url": hooks.url("/slack"), "format": "slack", "signing_secret": "HOOK_KEY"},
        },
        "local_receivers": True,  # the test receivers listen on loopback, plain HTTP
        "routes": [
            {"name": "icu", "wards": ["ICU"], "email": ["icu@hospital.example"], "webhooks": ["ehr", "slack"]}
        ],
    }


@pytest.fixture
def make_function(
    mail: LocalMailServer, hooks: WebhookReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> MakeFunction:
    def make(config: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Function:
        path = tmp_path / "routing.yaml"
        path.write_text(yaml.safe_dump(config or base_config(mail, hooks)))
        full_env = {
            "NOTIFIER_CONFIG": str(path),
            "NOTIFIER_STATE": "local",
            "NOTIFIER_STATE_DIR": str(tmp_path / "state"),
            "HOOK_KEY": SIGNING_KEY,
            **mail.env(),
            **(env or {}),
        }
        for key, value in full_env.items():
            monkeypatch.setenv(key, value)
        app = functions_framework.create_app("notify", str(FUNCTION_SOURCE), "cloudevent")
        return Function(app.test_client(), tmp_path / "state")

    return make


# --- end to end through the test client -----------------------------------------------------------
def test_an_alert_is_emailed_and_posted_to_both_webhooks(
    make_function: MakeFunction, mail: LocalMailServer, hooks: WebhookReceiver
) -> None:
    fn = make_function()
    payload = make_event()
    response = fn.post(payload)
    assert response.status_code == 200, response.get_data(as_text=True)

    [msg] = mail.wait_for(1, to="icu@hospital.example")
    assert msg.tls and msg.auth_user == mail.username
    assert msg.subject == "[Vitals Lake] HIGH alert opened: ward ICU, bed 12"
    for body in (msg.text, msg.html):
        for shown in (
            "pk-7f3a9c",
            "ICU",
            "12",
            "132 /min",
            "89 %",
            "39.2 °C",
            "85/50 mmHg",
            payload[c.ALERT_ID],
        ):
            assert shown in body
        assert "MRN-0042" not in body  # the events do not carry the hospital id
    assert "<table>" in msg.html and "<table>" not in msg.text

    notification_id = f"{payload[c.ALERT_ID]}:opened:{payload[c.EVENT_TIME]}"
    [ehr] = hooks.deliveries("/ehr")
    [slack] = hooks.deliveries("/slack")
    for delivery in (ehr, slack):
        assert delivery.signature_valid is True
        assert delivery.idempotency_key == notification_id
    assert ehr.json["alert"][c.PATIENT_KEY] == "pk-7f3a9c"
    assert c.PATIENT_ID not in ehr.json["alert"]
    assert ehr.json["notification_id"] == notification_id
    assert slack.json["blocks"][0]["type"] == "header" and "HIGH alert opened" in slack.json["text"]
    assert "MRN-0042" not in slack.body.decode()


def test_the_handled_log_carries_the_reading_to_sent_latency_the_slo_counts(
    make_function: MakeFunction,
    mail: LocalMailServer,
    hooks: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Terraform's log-based latency metric extracts ``reading_to_sent_s`` from this line."""
    config = base_config(mail, hooks)
    config["routes"] = [{"name": "icu", "wards": ["ICU"], "webhooks": ["ehr"]}]
    fn = make_function(config=config)
    reading_time = datetime.now(UTC) - timedelta(seconds=30)
    assert fn.post(make_event(**{c.EVENT_TIME: reading_time})).status_code == 200
    hooks.fail("/ehr", status=401)  # nothing sent for the second event: no latency to count
    assert fn.post(make_event(**{c.EVENT_TIME: reading_time})).status_code == 200

    handled = [r for r in caplog.records if r.getMessage() == service.LOG_ALERT_HANDLED]
    assert len(handled) == 2
    first, second = (r.fields for r in handled)
    assert 30 <= first[service.LATENCY_FIELD] < 90
    assert "sent" in first["outcomes"].values()
    assert service.LATENCY_FIELD not in second, second


def test_a_binary_mode_cloudevent_from_eventarc_is_handled(
    make_function: MakeFunction, mail: LocalMailServer
) -> None:
    fn = make_function()
    data = push_envelope(json.dumps(make_event()).encode())
    headers = {
        "ce-id": "1234",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/vitals-alerts",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
        "Content-Type": "application/json",
    }
    assert fn.client.post("/", json=data, headers=headers).status_code == 200
    mail.wait_for(1)


def test_a_redelivered_alert_is_not_sent_twice(
    make_function: MakeFunction, mail: LocalMailServer, hooks: WebhookReceiver
) -> None:
    fn = make_function()
    payload = make_event()
    assert fn.post(payload, "m-1").status_code == 200
    assert fn.post(payload, "m-1").status_code == 200  # Pub/Sub redelivery
    assert fn.post(payload, "m-2").status_code == 200  # the pipeline re-derived and re-published it
    assert len(mail.messages()) == 1
    assert len(hooks.deliveries("/ehr")) == 1 and len(hooks.deliveries("/slack")) == 1
    # The next state change of the same alert is a new notification.
    assert fn.post({**payload, c.ALERT_STATE: "resolved", c.ALERT_REASONS: []}).status_code == 200
    assert len(mail.messages()) == 2


def test_a_transient_failure_asks_for_redelivery_and_the_redelivery_sends_only_what_is_missing(
    make_function: MakeFunction, mail: LocalMailServer, hooks: WebhookReceiver
) -> None:
    fn = make_function()
    hooks.fail("/ehr", status=503, times=3)  # all three tries of the first delivery
    payload = make_event()
    first = fn.post(payload)
    assert first.status_code == 500  # Pub/Sub redelivers, then dead-letters after max attempts
    assert len(hooks.deliveries("/ehr", accepted=None)) == 3
    [dead] = fn.dead_letters()
    assert dead["destination"] == "webhook:ehr" and dead["result"] == "failed" and dead["attempts"] == 3
    assert dead["error"] == "HTTP 503"

    assert fn.post(payload).status_code == 200  # the redelivery
    assert len(hooks.deliveries("/ehr")) == 1
    assert len(mail.messages()) == 1 and len(hooks.deliveries("/slack")) == 1  # not sent again


def test_a_4xx_is_not_retried_and_the_message_is_acknowledged(
    make_function: MakeFunction, mail: LocalMailServer, hooks: WebhookReceiver
) -> None:
    fn = make_function()
    hooks.fail("/ehr", status=400)
    payload = make_event()
    assert fn.post(payload).status_code == 200
    assert len(hooks.deliveries("/ehr", accepted=None)) == 1
    [dead] = fn.dead_letters()
    assert (dead["destination"], dead["result"], dead["attempts"]) == ("webhook:ehr", "rejected", 1)
    assert fn.post(payload).status_code == 200  # a redelivery does not try a refused delivery again
    assert len(hooks.deliveries("/ehr", accepted=None)) == 1


def test_a_429_is_retried(make_function: MakeFunction, hooks: WebhookReceiver) -> None:
    fn = make_function()
    hooks.fail("/slack", status=429, times=1)
    assert fn.post(make_event()).status_code == 200
    assert [d.status for d in hooks.deliveries("/slack", accepted=None)] == [429, 200]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not base64 JSON"),
        (b"\xff\xfe", "not base64 JSON"),
        (b"[1, 2]", "$: type"),
        (json.dumps({**make_event(), c.SEVERITY: "MRN-0042"}).encode(), "$.severity: enum"),
        (json.dumps({k: v for k, v in make_event().items() if k != c.ALERT_ID}).encode(), "required"),
        (json.dumps({**make_event(), c.EVENT_TIME: "yesterday"}).encode(), "event_time"),
    ],
)
def test_a_malformed_event_is_logged_dead_lettered_and_acknowledged(
    make_function: MakeFunction,
    mail: LocalMailServer,
    caplog: pytest.LogCaptureFixture,
    data: bytes,
    reason: str,
) -> None:
    fn = make_function()
    response = fn.post(data, "bad-1")
    assert response.status_code == 200  # acknowledged: never redelivered forever
    [dead] = fn.dead_letters()
    assert dead["kind"] == "malformed" and dead["message_id"] == "bad-1" and reason in dead["reason"]
    # Not stored (it may name a patient; Firestore is outside the data-access audit logs): its digest is.
    assert "data" not in dead and dead["data_sha256"] == hashlib.sha256(data).hexdigest()
    assert "malformed alert event" in caplog.text
    assert "MRN-0042" not in caplog.text and "Jane Doe" not in caplog.text  # the payload is never logged
    assert mail.messages() == []


def test_fields_the_schema_does_not_know_are_dropped_not_sent(
    make_function: MakeFunction,
    mail: LocalMailServer,
    hooks: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fn = make_function()
    assert fn.post({**make_event(), "name": "Jane Doe"}).status_code == 200  # a newer producer, say
    [msg] = mail.wait_for(1)
    [ehr] = hooks.deliveries("/ehr")
    [slack] = hooks.deliveries("/slack")
    assert "name" not in ehr.json["alert"]
    for text in (msg.text, msg.html, ehr.body.decode(), slack.body.decode(), caplog.text):
        assert "Jane Doe" not in text
    [warning] = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert warning.fields["dropped_fields"] == ["name"]  # type: ignore[attr-defined]


def test_no_matching_route_sends_nothing(make_function: MakeFunction, mail: LocalMailServer) -> None:
    fn = make_function()
    assert fn.post(make_event(**{c.WARD: "Maternity"})).status_code == 200
    assert mail.messages() == [] and fn.dead_letters() == []


def test_a_missing_secret_keeps_the_message_for_redelivery(
    make_function: MakeFunction, mail: LocalMailServer, hooks: WebhookReceiver
) -> None:
    config = {**base_config(mail, hooks), "routes": [{"name": "r", "webhooks": ["ehr"]}]}
    fn = make_function(config=config, env={"HOOK_KEY": ""})  # read lazily: an operator can still fix it
    response = fn.post(make_event())
    assert response.status_code == 500
    [dead] = fn.dead_letters()
    assert dead["result"] == "failed" and "secret HOOK_KEY is not configured" in dead["error"]


def test_secrets_are_never_logged_stored_or_answered(
    make_function: MakeFunction,
    mail: LocalMailServer,
    hooks: WebhookReceiver,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    url_token = "T0KEN-in-the-slack-url-5d1e"
    wrong_password = "wrong-smtp-password-9f8e7d"
    config = base_config(mail, hooks)
    config["webhooks"]["slack"] = {"url_secret": "SLACK_URL", "format": "slack", "signing_secret": "HOOK_KEY"}
    fn = make_function(
        config=config, env={"SMTP_PASSWORD": wrong_password, "SLACK_URL": hooks.url(url_token)}
    )
    hooks.fail(f"/{url_token}", status=500)  # every try fails: errors get logged and dead-lettered
    hooks.fail("/ehr", status=401)
    responses = [fn.post(make_event()) for _ in range(2)]

    assert [r.status_code for r in responses] == [500, 500]
    results = {(d["destination"], d["result"]) for d in fn.dead_letters()}
    assert results == {
        ("email:icu@hospital.example", "rejected"),
        ("webhook:ehr", "rejected"),
        ("webhook:slack", "failed"),
    }
    captured = capsys.readouterr()
    everything = "\n".join(
        [
            caplog.text,
            captured.out,
            captured.err,
            *(r.get_data(as_text=True) for r in responses),
            (fn.state_dir / "dead_letters.jsonl").read_text(),
        ]
    )
    assert "delivery gave up" in everything  # the failures were logged ...
    assert mail.password is not None
    for secret in (wrong_password, url_token, SIGNING_KEY, mail.password):
        assert secret not in everything  # ... without a secret


# --- routing --------------------------------------------------------------------------------------
ROUTING = {
    "smtp": {"host": "smtp.example", "sender": "a@example.org"},
    "webhooks": {"pager": {"url": "https://pager.example/hook", "signing_secret": "K"}},
    "routes": [
        {"name": "icu", "wards": ["ICU"], "min_severity": "low-medium", "email": ["icu@h.example"]},
        {
            "name": "rrt",
            "min_severity": "high",
            "states": ["opened", "escalated"],
            "email": ["rrt@h.example", "icu@h.example"],
            "webhooks": ["pager"],
        },
        {"name": "no-ward", "wards": [None], "email": ["beds@h.example"]},
    ],
}


@pytest.mark.parametrize(
    ("ward", "severity", "state", "expected"),
    [
        ("ICU", "low", "opened", set()),
        ("ICU", "low-medium", "opened", {"email:icu@h.example"}),
        ("icu", "medium", "resolved", {"email:icu@h.example"}),  # ward codes compare case-insensitively
        ("ICU", "high", "opened", {"email:icu@h.example", "email:rrt@h.example", "webhook:pager"}),
        ("ICU", "high", "resolved", {"email:icu@h.example"}),
        ("Ward 7", "high", "escalated", {"email:rrt@h.example", "email:icu@h.example", "webhook:pager"}),
        (None, "low", "opened", {"email:beds@h.example"}),
    ],
)
def test_routing_by_ward_severity_and_state(
    ward: str | None, severity: str, state: str, expected: set[str]
) -> None:
    config = cfg.parse_config(ROUTING)
    event = alert_event(make_event(**{c.WARD: ward, c.SEVERITY: severity, c.ALERT_STATE: state}))
    assert {d.id for d in config.destinations(event)} == expected


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(include_patient_id=True),
        lambda r: r["routes"][1].update(include_patient_id=True),
    ],
)
def test_a_route_cannot_ask_for_the_hospital_id_any_more(change: Callable[[dict[str, Any]], object]) -> None:
    """Events carry the pseudonymous key only; a config that asks for the id is refused, not ignored."""
    raw = json.loads(json.dumps(ROUTING))
    cfg.parse_config({**raw, "include_patient_id": False})  # false changes nothing: accepted
    change(raw)
    with pytest.raises(cfg.ConfigError, match="pseudonymous patient key only"):
        cfg.parse_config(raw)


def test_published_events_and_every_notification_carry_no_hospital_id() -> None:
    """The pipeline's JSON leaves the id out (the alerts table keeps it); the notifier's schema has no
    such field; no format renders one."""
    payload = make_event()
    assert c.PATIENT_ID not in payload and "MRN-0042" not in json.dumps(payload)
    assert (
        c.PATIENT_ID not in json.loads((FUNCTION_DIR / "alert_event.schema.json").read_text())["properties"]
    )
    event = alert_event(payload)
    email = render.render_email(event, subject_prefix="[VL]")
    rendered = [
        email.text,
        email.html,
        json.dumps(render.json_payload(event, "n")),
        json.dumps(render.slack_payload(event)),
    ]
    assert all("pk-7f3a9c" in text for text in rendered)  # the pseudonym is there ...
    assert not any("MRN-0042" in text for text in rendered)  # ... the hospital id nowhere


def test_the_example_config_is_valid() -> None:
    config = cfg.load_config(FUNCTION_DIR / "routing.example.yaml")
    assert {r.name for r in config.routes} == {"icu", "rapid-response", "unassigned-patients"}
    # The names Terraform's function reads (function.tf refuses a routing config that names others).
    assert set(config.secret_names()) == {"SMTP_PASSWORD", "SLACK_WEBHOOK_URL", "WEBHOOK_SIGNING_KEY"}


def test_the_readme_deploys_with_the_names_terraform_creates() -> None:
    """One set of secret and topic names: the function's README, Terraform and the code."""
    readme = (FUNCTION_DIR / "README.md").read_text()
    names = json.loads(
        (FUNCTION_DIR.parents[1] / "infra" / "terraform" / "generated" / "names.json").read_text()
    )
    for key in ("smtp_password", "webhook_signing_key", "slack_webhook_url"):
        assert names["secrets"][key] in readme, key
    assert f"--dead-letter-topic={names['pubsub']['alerts_dead_letter_topic']}" in readme
    for stale in ("secrets create smtp-password", "vitals-alerts-dlq", "EHR_KEY", "ICU_SLACK_WEBHOOK_URL"):
        assert stale not in readme, stale


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["routes"][0].update(min_severty="high"), "unknown keys ['min_severty']"),
        (lambda d: d["routes"][0].update(min_severity="critical"), "min_severity must be one of"),
        (lambda d: d["routes"][0].update(states=["closed"]), "states must be a list"),
        (lambda d: d["routes"][1].update(webhooks=["nope"]), "unknown webhook 'nope'"),
        (lambda d: d["routes"][0].update(email=["not-an-address"]), "not an email address"),
        (lambda d: d.pop("smtp"), "there is no smtp section"),
        (lambda d: d["webhooks"]["pager"].pop("signing_secret"), "needs signing_secret"),
        (lambda d: d["webhooks"]["pager"].update(url_secret="U"), "exactly one of url and url_secret"),
        (
            lambda d: d.update(
                smtp={**d["smtp"], "username": "u", "password_secret": "P", "security": "none"}
            ),
            "clear",
        ),
        (lambda d: d.update(routes=[]), "non-empty list"),
        # Transport: https and TLS, except to a loopback receiver with local_receivers.
        (lambda d: d["webhooks"]["pager"].update(url="http://pager.example/hook"), "must be an https URL"),
        (lambda d: d["webhooks"]["pager"].update(url="http://127.0.0.1:9/hook"), "must be an https URL"),
        (
            lambda d: (
                d.update(local_receivers=True) or d["webhooks"]["pager"].update(url="http://10.0.0.9/h")
            ),
            "must be an https URL",
        ),
        (lambda d: d["webhooks"]["pager"].update(url="ftp://pager.example/hook"), "must be an https URL"),
        (lambda d: d.update(smtp={**d["smtp"], "security": "none"}), "use TLS"),
        (
            lambda d: d.update(local_receivers=True, smtp={**d["smtp"], "security": "none"}),
            "use TLS",  # smtp.example is not a loopback host
        ),
    ],
)
def test_config_errors_name_the_key(change: Callable[[dict[str, Any]], object], message: str) -> None:
    raw = json.loads(json.dumps(ROUTING))
    change(raw)
    with pytest.raises(cfg.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cfg.parse_config(raw)


# --- rendering ------------------------------------------------------------------------------------
def test_both_email_bodies_carry_the_minimum_and_escape_html() -> None:
    event = alert_event(
        make_event(**{c.WARD: "<b>ICU</b>", c.BED: None, c.SYSTOLIC: None, c.DIASTOLIC: None})
    )
    content = render.render_email(event, subject_prefix="[VL]")
    assert content.subject == "[VL] HIGH alert opened: ward <b>ICU</b>"
    assert "&lt;b&gt;ICU&lt;/b&gt;" in content.html and "<b>ICU</b>" not in content.html
    assert re.search(r"^Blood pressure +-$", content.text, re.MULTILINE)
    assert re.search(r"^Why +NEWS2 emergency \(7 or more\), anomaly model$", content.text, re.MULTILINE)
    assert re.search(r"^Anomaly score +0\.873 \(model iforest-3\)$", content.text, re.MULTILINE)
    assert re.search(r"^Reading time +2026-11-22 08:57:05 UTC$", content.text, re.MULTILINE)
    assert "MRN-0042" not in content.text + content.html


def test_json_and_slack_payloads() -> None:
    event = alert_event(make_event(**{c.WARD: "A&E <2>"}))
    payload = render.json_payload(event, "n-1")
    assert payload["type"] == "vitals-lake.alert" and payload["notification_id"] == "n-1"
    assert payload["alert"] == dict(event.fields) and c.PATIENT_ID not in payload["alert"]
    slack = render.slack_payload(event)
    assert "A&amp;E &lt;2&gt;" in slack["text"]
    assert all(len(b.get("fields", [])) <= 10 for b in slack["blocks"])
    assert "MRN-0042" not in json.dumps(slack)


def test_an_email_message_has_a_plain_and_an_html_part_and_a_stable_message_id() -> None:
    event = alert_event(make_event())
    settings = cfg.SmtpSettings(host="h", sender="Vitals <a@example.org>")
    content = render.render_email(event, "[VL]")
    one = notifier_smtp.build_message(settings, "x@h.example", content, event.notification_id)
    two = notifier_smtp.build_message(settings, "x@h.example", content, event.notification_id)
    assert [p.get_content_type() for p in one.iter_parts()] == ["text/plain", "text/html"]
    assert one["Message-ID"] == two["Message-ID"]


# --- signature ------------------------------------------------------------------------------------
def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = webhooks.encode_body({"a": 1, "é": "ü"})
    signature = webhooks.sign(SIGNING_KEY, "1790000000", body)
    expected = hmac.new(SIGNING_KEY.encode(), b"1790000000." + body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    now = str(int(datetime.now(UTC).timestamp()))
    good = webhooks.sign(SIGNING_KEY, now, body)
    assert verify_signature(SIGNING_KEY, now, body, good, tolerance=300)
    assert not verify_signature(SIGNING_KEY, now, body + b" ", good, tolerance=300)
    assert not verify_signature("another-key-entirely", now, body, good, tolerance=300)
    assert not verify_signature(SIGNING_KEY, "1790000000", body, signature, tolerance=300)  # too old


# --- retries --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        *[(200, None), (204, None), (500, "transient"), (502, "transient"), (503, "transient")],
        *[(429, "transient"), (400, "permanent"), (401, "permanent"), (404, "permanent")],
        *[(410, "permanent"), (301, "permanent")],
    ],
)
def test_http_status_classification(status: int, kind: str | None) -> None:
    error = retry.http_status_error(status)
    assert (None if error is None else ("transient" if error.transient else "permanent")) == kind


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError("timed out"), True),
        (smtplib.SMTPServerDisconnected("gone"), True),
        (smtplib.SMTPConnectError(421, b"busy"), True),
        (smtplib.SMTPDataError(451, b"try later"), True),
        (smtplib.SMTPAuthenticationError(535, b"bad credentials"), False),
        (smtplib.SMTPDataError(554, b"rejected"), False),
        (smtplib.SMTPRecipientsRefused({"a@b.c": (550, b"no such user")}), False),
        (smtplib.SMTPRecipientsRefused({"a@b.c": (450, b"mailbox busy")}), True),
        (smtplib.SMTPNotSupportedError("no STARTTLS"), False),
    ],
)
def test_smtp_error_classification(exc: Exception, transient: bool) -> None:
    assert notifier_smtp.classify_smtp_error(exc).transient is transient


def test_webhook_timeouts_and_refused_connections_are_transient(hooks: WebhookReceiver) -> None:
    session = requests.Session()
    closed = WebhookReceiver().start()
    closed.stop()  # nothing listens on its port any more
    with pytest.raises(retry.TransientError, match="ConnectionError"):
        webhooks.post_webhook(session, closed.url(), b"{}", idempotency_key="k", signing_key=None, timeout=1)
    hooks.slow("/slow", seconds=0.5, times=1)
    with pytest.raises(retry.TransientError, match="Timeout"):
        webhooks.post_webhook(
            session, hooks.url("/slow"), b"{}", idempotency_key="k", signing_key=SIGNING_KEY, timeout=0.1
        )


def test_backoff_grows_exponentially_is_capped_and_honours_retry_after() -> None:
    policy = retry.RetryPolicy(attempts=6, base_delay=0.5, max_delay=4.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=60.0) == 4.0  # never beyond the cap
    jittered = retry.RetryPolicy(base_delay=1.0)
    assert jittered.delay(3, rand=lambda: 0.25) == 1.0


def test_call_with_retries_stops_on_a_permanent_error_and_gives_up_after_the_last_try() -> None:
    waits: list[float] = []
    policy = retry.RetryPolicy(attempts=3, base_delay=0.1, jitter=False)
    calls: list[int] = []

    def transient() -> None:
        calls.append(1)
        raise retry.TransientError("HTTP 503")

    with pytest.raises(retry.TransientError):
        retry.call_with_retries(transient, policy, sleep=waits.append)
    assert len(calls) == 3 and waits == [0.1, 0.2]

    def permanent() -> None:
        calls.append(2)
        raise retry.PermanentError("HTTP 400")

    with pytest.raises(retry.PermanentError):
        retry.call_with_retries(permanent, policy, sleep=waits.append)
    assert calls.count(2) == 1 and waits == [0.1, 0.2]


# --- idempotency store ----------------------------------------------------------------------------
def test_local_idempotency_store_claims(tmp_path: Path) -> None:
    store = state.LocalState(tmp_path, lease_seconds=0.2)
    assert store.claim("n1", "email:a") is state.Claim.ACQUIRED
    assert store.claim("n1", "email:a") is state.Claim.BUSY  # another delivery is sending it
    assert store.claim("n1", "email:b") is state.Claim.ACQUIRED  # destinations are independent
    store.release("n1", "email:a")  # transient failure: the redelivery may try again
    assert store.claim("n1", "email:a") is state.Claim.ACQUIRED
    store.finish("n1", "email:a", "sent")
    assert store.claim("n1", "email:a") is state.Claim.DONE
    store.release("n1", "email:a")  # a release never undoes a success
    assert store.status("n1", "email:a") == "sent"
    store.finish("n1", "email:b", "rejected", "HTTP 400")
    assert store.claim("n1", "email:b") is state.Claim.DONE
    assert store.claim("n2", "email:a") is state.Claim.ACQUIRED
    time.sleep(0.25)  # the claimer died mid-send: after the lease the claim is taken over
    assert store.claim("n2", "email:a") is state.Claim.ACQUIRED
    assert state.LocalState(tmp_path).claim("n1", "email:a") is state.Claim.DONE  # it is on disk


# --- secrets --------------------------------------------------------------------------------------
def test_secrets_come_from_the_environment_or_secret_manager_and_are_redacted() -> None:
    fetched: list[str] = []

    def fetch(resource: str) -> str:
        fetched.append(resource)
        return "from-secret-manager-123"

    env = {
        "LOCAL_KEY": "local-value-456",
        "CLOUD_KEY_SECRET": "projects/p/secrets/cloud-key",
        "PINNED_SECRET": "projects/p/secrets/pinned/versions/3",
        "BAD_SECRET": "cloud-key",
        "SHORT": "abc",
    }
    store = secrets.Secrets(env, fetch=fetch)
    assert store.get("LOCAL_KEY") == "local-value-456"
    assert store.get("CLOUD_KEY") == "from-secret-manager-123"
    assert store.get("CLOUD_KEY") == "from-secret-manager-123"  # cached
    assert store.get("PINNED") == "from-secret-manager-123"
    assert fetched == ["projects/p/secrets/cloud-key/versions/latest", "projects/p/secrets/pinned/versions/3"]
    for name, message in (
        ("MISSING", "not configured"),
        ("BAD", "not a Secret Manager"),
        ("SHORT", "shorter"),
    ):
        with pytest.raises(secrets.SecretUnavailable, match=message):
            store.get(name)
    assert store.redact("x local-value-456 y from-secret-manager-123") == "x *** y ***"


def test_a_secret_manager_error_names_the_secret_not_the_error_text() -> None:
    def fetch(resource: str) -> str:
        raise PermissionError("denied for token ya29.SECRET-TOKEN")

    with pytest.raises(secrets.SecretUnavailable) as info:
        secrets.Secrets({"K_SECRET": "projects/p/secrets/k"}, fetch=fetch).get("K")
    assert "K could not be read (PermissionError)" in str(info.value) and "ya29" not in str(info.value)


def test_field_names_come_from_the_generated_schema() -> None:
    schema = json.loads((FUNCTION_DIR / "alert_event.schema.json").read_text())
    assert ev.SEVERITIES == tuple(schema["properties"][c.SEVERITY]["enum"]) == c.NEWS2_RESPONSES
    assert ev.STATES == c.ALERT_STATES
    for name in (ev.ALERT_ID, ev.WARD, ev.BED, ev.PATIENT_KEY, ev.EVENT_TIME, ev.HEART_RATE):
        assert name in schema["properties"]


def test_messages_show_what_triggered_the_alert_news2_parameters_and_flags():
    event = ev.AlertEvent(
        fields=ev.validate(make_event()), message_id="1", delivery_attempt=1, dropped_fields=()
    )
    rows = dict(render.summary(event))
    assert rows["NEWS2 score"] == "9 (respiration rate 3, heart rate 3)"
    assert rows["Flags"] == "tachycardia, fever"


# --- bad input never stops a stream, never silences an alert (issue #13) ---------------------------------
ANY_WARD_CONFIG_ROUTE = {"name": "all", "email": ["icu@hospital.example"], "webhooks": ["ehr", "slack"]}


def any_ward_config(mail: LocalMailServer, hooks: WebhookReceiver) -> dict[str, Any]:
    return {**base_config(mail, hooks), "routes": [ANY_WARD_CONFIG_ROUTE]}


def test_a_ward_with_a_line_break_renders_a_valid_one_line_subject() -> None:
    event = alert_event(make_event(**{c.WARD: "ICU\r\nEast\u2028Wing\x00", c.BED: "\t12\n"}))
    content = render.render_email(event, subject_prefix="[VL]\n")
    assert content.subject == "[VL] HIGH alert opened: ward ICU East Wing, bed 12"
    assert content.text.splitlines()[0] == "HIGH alert opened: ward ICU East Wing, bed 12"
    assert re.search(r"^Ward +ICU East Wing$", content.text, re.MULTILINE)
    settings = cfg.SmtpSettings(host="h", sender="Vitals <a@example.org>")
    message = notifier_smtp.build_message(settings, "x@h.example", content, event.notification_id)
    parsed = BytesParser(policy=email_policy.default).parsebytes(message.as_bytes())
    assert parsed["Subject"] == content.subject
    slack = render.slack_payload(event)
    assert "\n" not in slack["blocks"][0]["text"]["text"]
    long_ward = alert_event(make_event(**{c.WARD: "W" * 5000}))
    assert len(render.render_email(long_ward, "[VL]").subject) <= render.SUBJECT_LIMIT


def test_an_id_that_no_header_can_carry_is_percent_encoded_and_still_delivered(
    make_function: MakeFunction, mail: LocalMailServer, hooks: WebhookReceiver
) -> None:
    fn = make_function(config=any_ward_config(mail, hooks))
    payload = make_event(**{c.ALERT_ID: "a€\r\nb c"})
    assert fn.post(payload).status_code == 200
    token = f"a%E2%82%AC%0D%0Ab%20c:opened:{payload[c.EVENT_TIME]}"
    [msg] = mail.wait_for(1)
    assert str(msg.message["X-Vitals-Notification-Id"]).strip() == token  # folded: long
    for path in ("/ehr", "/slack"):
        [delivery] = hooks.deliveries(path)
        assert delivery.idempotency_key == token and delivery.signature_valid
    assert hooks.deliveries("/ehr")[0].json["alert"][c.ALERT_ID] == "a€\r\nb c"  # the body keeps it
    pipeline_id = "4f1c2b9a0d3e5f6a7b8c9d0e:escalated:2026-11-22T08:57:05.123456+00:00"
    assert render.header_token(pipeline_id) == pipeline_id  # the pipeline's ids are unchanged


def test_one_destination_raising_anything_does_not_stop_the_others(
    make_function: MakeFunction,
    mail: LocalMailServer,
    hooks: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_slack(event: ev.AlertEvent) -> dict[str, Any]:
        raise KeyError(f"a bug quoting {event.get(c.PATIENT_KEY)}")

    monkeypatch.setattr(service, "slack_payload", broken_slack)
    fn = make_function(config=any_ward_config(mail, hooks))
    payload = make_event(**{c.WARD: "ICU\nEast"})  # the email's subject raised ValueError before #13
    response = fn.post(payload, "m-iso")
    assert response.status_code == 200  # acknowledged: the broken destination is given up for good
    [msg] = mail.wait_for(1)
    assert msg.subject == "[Vitals Lake] HIGH alert opened: ward ICU East, bed 12"
    assert len(hooks.deliveries("/ehr")) == 1 and hooks.deliveries("/slack", accepted=None) == []
    [dead] = fn.dead_letters()
    assert (dead["destination"], dead["result"], dead["attempts"]) == ("webhook:slack", "rejected", 1)
    assert dead["error"] == "unexpected KeyError" and dead["exception_type"] == "KeyError"
    assert "pk-7f3a9c" in dead["exception_detail"]  # kept in the access-controlled store ...
    assert dead["exception_at"].startswith("test_alert_notifier.py:")
    assert "pk-7f3a9c" not in caplog.text  # ... never logged
    assert "delivery gave up" in caplog.text

    assert fn.post(payload, "m-iso").status_code == 200  # a redelivery sends nothing again
    assert len(mail.messages()) == 1 and len(hooks.deliveries("/ehr")) == 1
    assert len(fn.dead_letters()) == 1


def test_an_unexpected_error_is_permanent_while_a_transient_one_still_asks_for_redelivery(
    make_function: MakeFunction,
    mail: LocalMailServer,
    hooks: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_json(event: ev.AlertEvent, notification_id: str) -> dict[str, Any]:
        raise ValueError("unencodable")

    monkeypatch.setattr(service, "json_payload", broken_json)
    hooks.fail("/slack", status=503)  # every try: transient
    fn = make_function(config=any_ward_config(mail, hooks))
    payload = make_event()
    assert fn.post(payload).status_code == 500  # slack asks for a redelivery
    results = {d["destination"]: d["result"] for d in fn.dead_letters()}
    assert results == {"webhook:ehr": "rejected", "webhook:slack": "failed"}
    assert len(mail.messages()) == 1
    hooks.reset("/slack")
    assert fn.post(payload).status_code == 200  # the redelivery sends only slack
    assert len(hooks.deliveries("/slack")) == 1 and len(mail.messages()) == 1
    assert len(fn.dead_letters()) == 2  # the broken ehr was given up for good: not tried again


MALFORMED_DATA = {
    "deep JSON": ("[" * 100_000 + "]" * 100_000).encode(),
    "deep JSON in a field": json.dumps({**make_event(), c.WARD: None})
    .replace('"ward": null', '"ward": ' + "[" * 5000 + "]" * 5000)
    .encode(),
    "NaN": json.dumps({**make_event(), c.HEART_RATE: float("nan")}).encode(),
    "Infinity": json.dumps({**make_event(), c.SPO2: float("inf")}).encode(),
    "1e400": json.dumps(make_event()).replace('"spo2": 89.0', '"spo2": 1e400').encode(),
    "a huge integer": json.dumps({**make_event(), c.NEWS2_SCORE: 10**20}).encode(),
    "an integer past Python's digit limit": json.dumps(make_event())
    .replace('"news2_score": 9', '"news2_score": ' + "9" * 5000)
    .encode(),
    "a string for a number": json.dumps({**make_event(), c.HEART_RATE: "132"}).encode(),
    "a list for a string": json.dumps({**make_event(), c.WARD: ["ICU"]}).encode(),
    "empty": b"",
}


@pytest.mark.parametrize("data", MALFORMED_DATA.values(), ids=MALFORMED_DATA.keys())
def test_malformed_data_is_acknowledged_and_dead_lettered_once_per_message(
    make_function: MakeFunction, mail: LocalMailServer, data: bytes
) -> None:
    fn = make_function()
    assert fn.post(data, "bad-1").status_code == 200
    assert fn.post(data, "bad-1").status_code == 200  # Pub/Sub redelivers the same message
    [dead] = fn.dead_letters()
    assert dead["kind"] == "malformed" and dead["message_id"] == "bad-1"
    assert dead["data_size"] == len(base64.b64encode(data))
    assert fn.post(data, "bad-2").status_code == 200  # another message with the same data
    assert [d["message_id"] for d in fn.dead_letters()] == ["bad-1", "bad-2"]
    assert mail.messages() == []


def test_a_large_malformed_payload_is_recorded_by_size_and_digest_only(make_function: MakeFunction) -> None:
    fn = make_function()
    data = b"x" * 200_000
    assert fn.post(data, "big-1").status_code == 200
    [dead] = fn.dead_letters()
    assert dead["data_size"] == len(base64.b64encode(data))
    assert dead["data_sha256"] == hashlib.sha256(data).hexdigest()
    assert not any(isinstance(v, str) and "xxxx" in v for v in dead.values())


def notifier_for(tmp_path: Path) -> service.Notifier:
    config = cfg.parse_config(
        {
            "webhooks": {"h": {"url": "http://127.0.0.1:9/h", "signing_secret": "K"}},
            "local_receivers": True,  # the test receivers listen on loopback, plain HTTP
            "routes": [{"webhooks": ["h"]}],
        }
    )
    return service.Notifier(config, state.LocalState(tmp_path), secrets.Secrets({}))


@pytest.mark.parametrize(
    "data",
    [
        None,
        [1, 2],
        "text",
        {"message": "not a mapping"},
        {"message": {"data": 12, "messageId": "bad-1"}},
        {"message": {"data": ["x"], "messageId": "bad-1"}},
        {"message": {"data": "!!not base64!!", "messageId": "bad-1"}},
        {"message": {"data": "é", "messageId": "bad-1"}},
        {"message": {"data": base64.b64encode(b"\xff\xfe\xfd").decode(), "messageId": "bad-1"}},
        {"message": {"data": "\ud800", "messageId": "bad-1"}},
        {
            "message": {
                "data": base64.b64encode(b"{}").decode(),
                "messageId": ["a"],
                "deliveryAttempt": "9" * 5000,
            }
        },
        {"message": {"data": base64.b64encode(b"[]").decode(), "messageId": 10**5000}},
    ],
)
def test_handle_acknowledges_any_envelope_with_one_dead_letter(tmp_path: Path, data: Any) -> None:
    notifier = notifier_for(tmp_path)
    assert notifier.handle(data) == []
    assert notifier.handle(data) == []  # a redelivery
    assert isinstance(notifier.state, state.LocalState)
    letters = notifier.state.dead_letters()
    keyed = (
        isinstance(data, dict)
        and isinstance(data.get("message"), dict)
        and data["message"].get("messageId") == "bad-1"
    )
    assert len(letters) == (1 if keyed else 2)  # without a usable message id, each delivery is recorded
    assert all(d["kind"] == "malformed" for d in letters)


def test_the_parser_only_ever_raises_malformed_event() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ev.MalformedEvent):
        ev.parse_pubsub_data({"message": {"data": base64.b64encode(b"[" * 3000 + b"]" * 3000).decode()}})
    with pytest.raises(ev.MalformedEvent):
        ev.parse_pubsub_data(deep)
    assert ev.message_id({"message": {"messageId": 10**5000}}) == ""
    event = alert_event(json.loads(json.dumps(make_event()).replace('"ward": "ICU"', '"ward": "I\\ud800CU"')))
    assert event.ward == "I\ufffdCU"  # a lone surrogate cannot be encoded anywhere downstream


def test_a_keyed_dead_letter_is_written_once(tmp_path: Path) -> None:
    store = state.LocalState(tmp_path)
    assert store.dead_letter({"kind": "malformed", "n": 1}, key="malformed:m1") is True
    assert store.dead_letter({"kind": "malformed", "n": 2}, key="malformed:m1") is False
    assert state.LocalState(tmp_path).dead_letter({"n": 3}, key="malformed:m1") is False  # on disk
    assert store.dead_letter({"n": 4}, key="malformed:m2") is True
    assert store.dead_letter({"n": 5}) and store.dead_letter({"n": 5})  # without a key: every time
    assert [d["n"] for d in store.dead_letters()] == [1, 4, 5, 5]


def test_local_receivers_allow_plain_transport_to_loopback_only():
    raw = json.loads(json.dumps(ROUTING))
    local_smtp = {"host": "127.0.0.1", "sender": "a@example.org", "security": "none"}
    raw.update(local_receivers=True, smtp=local_smtp)
    raw["webhooks"]["pager"]["url"] = "http://[::1]:8080/hook"
    config = cfg.parse_config(raw)
    assert config.local_receivers and config.smtp is not None and config.smtp.security == "none"
    assert cfg.plain_transport_allowed("LOCALHOST", local_receivers=True)
    assert not cfg.plain_transport_allowed("127.0.0.1", local_receivers=False)
    assert not cfg.plain_transport_allowed("vitals.example", local_receivers=True)
