"""Issue #13 end to end: one destination's failure stays its own, and bad input never repeats a delivery.

The function runs as deployed code under functions-framework (``create_app(...).test_client()``: the
CloudEvent conversion, ``main.notify``, the routing config read from YAML) and delivers to the real local
SMTP server (aiosmtpd, STARTTLS + AUTH) and the real webhook receiver, both in threads of this process.
A destination the config loader would refuse is injected into the running function's notifier: a
webhook whose timeout is text, so ``requests`` raises ``ValueError`` for it, which is not a
``DeliveryError``. Before #13 that, or the ward's line break in the email subject, aborted the whole
alert.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import functions_framework
import pytest
import yaml

from harness.stack.function import FUNCTION_DIR, FUNCTION_SOURCE
from harness.stack.mail import LocalMailServer
from harness.stack.webhook import WebhookReceiver
from tests.unit.test_alert_notifier import T0, make_event, push_envelope
from vitals_lake import contract as c

if str(FUNCTION_DIR) not in sys.path:
    sys.path.insert(0, str(FUNCTION_DIR))
from notifier import state

KEY = "isolation-signing-key-7d2e91"
TO = "ward-east@h.example"
LATER = T0 + timedelta(minutes=30)  # when a different, later alert changes state


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMailServer]:
    with LocalMailServer(tmp_path_factory.mktemp("mail")) as server:
        yield server


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=KEY) as receiver:
        yield receiver


class Function:
    """The deployed function in this process, with a broken ``pager`` destination injected."""

    def __init__(self, client: Any, state_dir: Path) -> None:
        self.client = client
        self.state_dir = state_dir

    def post(self, event: dict[str, Any], message_id: str) -> int:
        envelope = push_envelope(json.dumps(event).encode(), message_id)
        return int(self.client.post("/", json=envelope).status_code)

    def dead_letters(self) -> list[dict[str, Any]]:
        return state.LocalState(self.state_dir).dead_letters()


@pytest.fixture
def function(
    mail: LocalMailServer, hooks: WebhookReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Function:
    signed = {"format": "json", "signing_secret": "HOOK_KEY"}
    config = {
        "smtp": mail.smtp_config(),
        "retry": {"attempts": 3, "base_delay_seconds": 0.01, "max_delay_seconds": 0.02},
        "webhooks": {
            "ehr": {**signed, "url": hooks.url("/iso/ehr")},
            "slack": {**signed, "url": hooks.url("/iso/slack"), "format": "slack"},
            "pager": {**signed, "url": hooks.url("/iso/pager")},
        },
        "local_receivers": True,  # the test receivers listen on loopback, plain HTTP
        "routes": [{"name": "all-wards", "email": [TO], "webhooks": ["ehr", "slack", "pager"]}],
    }
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {
        "NOTIFIER_CONFIG": str(path),
        "NOTIFIER_STATE": "local",
        "NOTIFIER_STATE_DIR": str(tmp_path / "state"),
        "HOOK_KEY": KEY,
        **mail.env(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = functions_framework.create_app("notify", str(FUNCTION_SOURCE), "cloudevent")
    notifier = sys.modules[FUNCTION_SOURCE.stem]._notifier  # what main.notify hands every event to
    pager = dataclasses.replace(notifier.config.webhooks["pager"], timeout_seconds="soon")
    notifier.config = dataclasses.replace(
        notifier.config, webhooks={**notifier.config.webhooks, "pager": pager}
    )
    mail.clear()
    hooks.clear()
    hooks.reset()
    return Function(app.test_client(), tmp_path / "state")


def notification_id(event: dict[str, Any]) -> str:
    return f"{event[c.ALERT_ID]}:{event[c.ALERT_STATE]}:{event[c.EVENT_TIME]}"


def test_a_raising_destination_and_a_line_break_ward_stop_nothing_and_repeat_nothing(
    function: Function, mail: LocalMailServer, hooks: WebhookReceiver
) -> None:
    first = make_event(**{c.WARD: "ICU\nEast", c.BED: "12\r\n"})
    assert function.post(first, "iso-1") == 200  # acknowledged: the pager's failure is permanent

    [email] = mail.wait_for(1, to=TO)
    assert email.subject == "[Vitals Lake] HIGH alert opened: ward ICU East, bed 12"
    assert email.tls and email.auth_user == mail.username
    [ehr] = hooks.wait_for(1, path="/iso/ehr")
    [slack] = hooks.wait_for(1, path="/iso/slack")
    for delivery in (ehr, slack):
        assert delivery.signature_valid is True and delivery.idempotency_key == notification_id(first)
    assert ehr.json["alert"][c.WARD] == "ICU\nEast"  # the JSON body carries the value as sent
    assert "ward ICU East, bed 12" in slack.json["blocks"][0]["text"]["text"]
    assert hooks.deliveries("/iso/pager", accepted=None) == []  # it raised before sending
    [dead] = function.dead_letters()
    assert (dead["destination"], dead["result"], dead["attempts"]) == ("webhook:pager", "rejected", 1)
    assert (dead["error"], dead["exception_type"]) == ("unexpected ValueError", "ValueError")
    assert dead["notification_id"] == notification_id(first)

    # Pub/Sub redelivers the same message, then a later alert arrives. Messages are handled in order,
    # so once the later alert has reached every destination, a second copy of the first would be there.
    assert function.post(first, "iso-1") == 200
    later = make_event(**{c.WARD: "ICU", c.ALERT_STATE: "escalated", c.EVENT_TIME: LATER})
    assert function.post(later, "iso-2") == 200
    emails = mail.wait_for(2, to=TO)
    by_path = {path: hooks.wait_for(2, path=path) for path in ("/iso/ehr", "/iso/slack")}

    def copies(event: dict[str, Any]) -> list[int]:
        nid = notification_id(event)
        in_mail = [str(m.message["X-Vitals-Notification-Id"]).strip() for m in emails].count(nid)
        return [in_mail, *([d.idempotency_key for d in by_path[p]].count(nid) for p in sorted(by_path))]

    assert copies(later) == [1, 1, 1]  # the later alert arrived everywhere ...
    assert copies(first) == [1, 1, 1]  # ... and the first still has exactly one copy everywhere
    assert len(mail.messages(to=TO)) == 2
    assert len(hooks.deliveries("/iso/ehr", accepted=None)) == 2
    assert len(hooks.deliveries("/iso/slack", accepted=None)) == 2
    assert hooks.deliveries("/iso/pager", accepted=None) == []
    # The pager is dead-lettered once per notification: the redelivery did not record it again.
    pager = [d["notification_id"] for d in function.dead_letters() if d["destination"] == "webhook:pager"]
    assert pager == [notification_id(first), notification_id(later)]
    assert len(function.dead_letters()) == 2


def test_a_malformed_message_redelivered_is_recorded_once(
    function: Function, mail: LocalMailServer, hooks: WebhookReceiver
) -> None:
    nested = json.dumps(make_event()).replace('"ward": "ICU"', '"ward": ' + "[" * 3000 + "]" * 3000)
    envelope = push_envelope(nested.encode(), "iso-bad")
    for _ in range(3):  # the first delivery and two redeliveries of the same message
        assert function.client.post("/", json=envelope).status_code == 200
    later = make_event(**{c.WARD: "ICU"})
    assert function.post(later, "iso-3") == 200  # handled after the redeliveries
    mail.wait_for(1, to=TO)
    [dead, pager] = function.dead_letters()
    assert (dead["kind"], dead["message_id"]) == ("malformed", "iso-bad")
    assert pager["destination"] == "webhook:pager"
    assert len(mail.messages()) == 1 and len(hooks.deliveries("/iso/ehr")) == 1
