"""The alert notifier end to end: Pub/Sub emulator topic -> push subscription -> functions-framework process
-> a local SMTP server (STARTTLS + AUTH) and a webhook receiver that verifies signatures; with failures
injected on the way. Plus the Firestore idempotency backend against the Firestore emulator.

Each test uses its own ward, which the routing config sends to its own recipients and webhook paths.
The push subscription is ordered, and each ward's messages share an ordering key: "nothing was
delivered twice" is proven by a later message on the key (:meth:`Rig.drain`), never by sleeping.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
import pytest
import yaml

from harness.stack import LocalStack, MissingPrerequisite
from harness.stack.firestore import FirestoreEmulator
from harness.stack.function import FUNCTION_DIR, FUNCTION_SOURCE, NotifierFunction, ordered_publisher
from harness.stack.mail import LocalMailServer
from harness.stack.webhook import WebhookReceiver
from harness.waiting import wait_until
from pipelines.pubsub_clients import close_publisher
from tests.unit.test_alert_notifier import make_event, push_envelope
from vitals_lake import contract as c
from vitals_lake.config import PubSubSettings

if str(FUNCTION_DIR) not in sys.path:
    sys.path.insert(0, str(FUNCTION_DIR))
from notifier import state

KEY = "integration-signing-key-4c0ffee"
# The function's last log entry about a message: one per invocation.
_HANDLED = ("alert handled", "malformed alert event acknowledged", "no route for alert")
RETRY = {"attempts": 3, "base_delay_seconds": 0.05, "max_delay_seconds": 0.2}
MALFORMED_KEY = "malformed"  # the ordering key of messages that are not alert events
MARKER_WARD = "W-MARKER"  # no route: a marker is handled and sends nothing


@dataclass
class Rig:
    mail: LocalMailServer
    hooks: WebhookReceiver
    fn: NotifierFunction
    pubsub: PubSubSettings
    publisher: Any

    def publish(self, data: dict[str, Any] | bytes, *, key: str | None = None) -> str:
        """Publish on ordering key ``key`` (by default the event's ward); returns the message id."""
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        attributes = {} if isinstance(data, bytes) else {"alert_id": data[c.ALERT_ID], "ward": data[c.WARD]}
        key = key or (MALFORMED_KEY if isinstance(data, bytes) else data[c.WARD])
        future = self.publisher.publish(self.pubsub.topic_path, raw, ordering_key=key, **attributes)
        return str(future.result(timeout=10))

    def handled(self, message_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The function's final log entries about a message (one per invocation), once there is one."""
        return wait_until(
            lambda: self._entries(message_id),
            timeout=timeout,
            interval=0.05,
            what=f"message {message_id} handled",
        )

    def drain(self, key: str, timeout: float = 15.0) -> None:
        """Return once every message published on ordering key ``key`` so far was acknowledged.

        A marker (an alert for a ward with no route: it sends nothing) is published on the key and
        awaited. The subscription pushes it only after everything before it on the key was acknowledged,
        and would redeliver any of those before it: once it was handled, none of them will come again.
        """
        marker = self.publish(make_event(**{c.WARD: MARKER_WARD}), key=key)
        [entry] = self.handled(marker, timeout=timeout)
        assert entry["message"] == "no route for alert", entry

    def _entries(self, message_id: str) -> list[dict[str, Any]]:
        entries = []
        for line in self.fn.log_path.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("message_id") == message_id and entry["message"] in _HANDLED:
                    entries.append(entry)
        return entries

    def dead_letters(self, **match: Any) -> list[dict[str, Any]]:
        return [d for d in self.fn.dead_letters() if all(d.get(k) == v for k, v in match.items())]


def hook(path: str, url: Callable[[str], str], key_secret: str = "HOOK_KEY", **extra: Any) -> dict[str, Any]:
    return {"url": url(path), "format": "json", "signing_secret": key_secret, **extra}


def routing(mail: LocalMailServer, hooks: WebhookReceiver) -> dict[str, Any]:
    return {
        "smtp": mail.smtp_config(),
        "retry": RETRY,
        "webhooks": {
            "happy-json": hook("/happy/json", hooks.url),
            "happy-slack": {**hook("/happy/slack", hooks.url), "format": "slack"},
            "smtp-side": hook("/smtp-side", hooks.url),
            "flaky": hook("/flaky", hooks.url),
            "rejecting": hook("/rejecting", hooks.url),
            "wrong-key": hook("/wrong-key", hooks.url, key_secret="WRONG_KEY"),
            "dup": hook("/dup", hooks.url),
            "slow": hook("/slow", hooks.url, timeout_seconds=0.5),
        },
        "local_receivers": True,  # the test receivers listen on loopback, plain HTTP
        "routes": [
            {"wards": ["W-HAPPY"], "email": ["happy@h.example"], "webhooks": ["happy-json", "happy-slack"]},
            {"wards": ["W-SMTP"], "email": ["smtp@h.example"], "webhooks": ["smtp-side"]},
            {"wards": ["W-500"], "webhooks": ["flaky"]},
            {"wards": ["W-400"], "webhooks": ["rejecting"]},
            {"wards": ["W-SIG"], "webhooks": ["wrong-key"]},
            {"wards": ["W-DUP"], "email": ["dup@h.example"], "webhooks": ["dup"]},
            {"wards": ["W-SLOW"], "webhooks": ["slow"]},
        ],
    }


@pytest.fixture(scope="module")
def rig(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    run_dir = tmp_path_factory.mktemp("notifier")
    suffix = uuid.uuid4().hex[:8]
    topic = f"{c.ALERTS_TOPIC}-{suffix}"  # its own topic: other tests may publish real alerts meanwhile
    with LocalMailServer(run_dir) as mail, WebhookReceiver(secret=KEY) as hooks:
        env = {**mail.env(), "HOOK_KEY": KEY, "WRONG_KEY": "not-the-receivers-key"}
        fn = NotifierFunction(run_dir, config=routing(mail, hooks), env=env)
        try:
            fn.start()
        except MissingPrerequisite as exc:
            pytest.fail(f"alert notifier prerequisite missing: {exc}", pytrace=False)
        try:
            settings = PubSubSettings(
                project=local_stack.project, topic=topic, emulator_host=local_stack.emulator.host_port
            )
            fn.subscribe(settings, f"{topic}-notifier", topic=topic, ordered=True)
            publisher = ordered_publisher(settings)
            try:
                yield Rig(mail, hooks, fn, settings, publisher)
            finally:
                close_publisher(publisher)
        finally:
            fn.stop()


def test_an_alert_reaches_email_and_both_webhooks(rig: Rig) -> None:
    event = make_event(**{c.WARD: "W-HAPPY"})
    message_id = rig.publish(event)
    [mail] = rig.mail.wait_for(1, to="happy@h.example")
    assert mail.tls and mail.auth_user == rig.mail.username
    assert "HIGH alert opened: ward W-HAPPY, bed 12" in mail.subject
    assert "pk-7f3a9c" in mail.text and "pk-7f3a9c" in mail.html and "MRN-0042" not in mail.text
    [json_hook] = rig.hooks.wait_for(1, path="/happy/json")
    [slack_hook] = rig.hooks.wait_for(1, path="/happy/slack")
    expected_key = f"{event[c.ALERT_ID]}:opened:{event[c.EVENT_TIME]}"
    for delivery in (json_hook, slack_hook):
        assert delivery.signature_valid is True and delivery.idempotency_key == expected_key
    assert json_hook.json["alert"][c.ALERT_ID] == event[c.ALERT_ID]
    assert slack_hook.json["blocks"]
    rig.handled(message_id)  # the function records a delivery after the receiver answered
    counts = rig.fn.delivery_counts()
    assert counts["email:sent"] >= 1 and counts["webhook:sent"] >= 2


def test_smtp_down_then_up(rig: Rig) -> None:
    event = make_event(**{c.WARD: "W-SMTP"})
    rig.mail.stop()
    try:
        rig.publish(event)
        # Every try of the first delivery is refused: dead-lettered, and the function answers 500.
        wait_until(
            lambda: rig.dead_letters(destination="email:smtp@h.example"), timeout=10, what="a dead letter"
        )
        [dead, *_] = rig.dead_letters(destination="email:smtp@h.example")
        assert dead["result"] == "failed" and dead["attempts"] == RETRY["attempts"]
        assert "ConnectionRefusedError" in dead["error"]
    finally:
        rig.mail.start()  # same port: the redelivered message now gets through
    rig.mail.wait_for(1, to="smtp@h.example", timeout=15)
    rig.drain("W-SMTP")  # the message was acknowledged: no redelivery of it is still to come
    assert len(rig.mail.messages(to="smtp@h.example")) == 1
    assert len(rig.hooks.deliveries("/smtp-side", accepted=None)) == 1  # the webhook was not re-sent


def test_webhook_500_then_200(rig: Rig) -> None:
    # Four 500s: the first invocation's three tries all fail, the emulator redelivers, the fourth
    # fails and the fifth is accepted, on the second invocation.
    rig.hooks.fail("/flaky", status=500, times=4)
    rig.publish(make_event(**{c.WARD: "W-500"}))
    rig.hooks.wait_for(1, path="/flaky", timeout=15)
    rig.drain("W-500")  # acknowledged: every try there will be is in
    attempts = rig.hooks.deliveries("/flaky", accepted=None)
    assert [d.status for d in attempts] == [500, 500, 500, 500, 200]
    assert len({d.idempotency_key for d in attempts}) == 1  # one key for all tries of one notification
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(attempts)]
    assert max(gaps) > 0.5  # the pause between the two invocations: Pub/Sub's redelivery
    [dead] = rig.dead_letters(destination="webhook:flaky")
    assert (dead["result"], dead["error"]) == ("failed", "HTTP 500")


def test_webhook_400_is_dead_lettered_and_not_retried(rig: Rig) -> None:
    rig.hooks.fail("/rejecting", status=400)
    message_id = rig.publish(make_event(**{c.WARD: "W-400"}))
    rig.handled(message_id)
    rig.drain("W-400")  # acknowledged: a 500 would have brought a redelivery before the marker
    assert len(rig.hooks.deliveries("/rejecting", accepted=None)) == 1
    [entry] = rig.handled(message_id)
    assert entry["outcomes"] == {"webhook:rejecting": "rejected"}
    [dead] = rig.dead_letters(destination="webhook:rejecting")
    assert (dead["result"], dead["attempts"], dead["error"]) == ("rejected", 1, "HTTP 400")


def test_the_receiver_refuses_a_wrong_signature(rig: Rig) -> None:
    message_id = rig.publish(make_event(**{c.WARD: "W-SIG"}))
    rig.handled(message_id)
    [delivery] = rig.hooks.deliveries("/wrong-key", accepted=None)
    assert delivery.signature_valid is False and delivery.status == 401
    assert rig.dead_letters(destination="webhook:wrong-key")[0]["result"] == "rejected"


def test_a_redelivered_alert_is_not_sent_twice(rig: Rig) -> None:
    event = make_event(**{c.WARD: "W-DUP"})
    first = rig.publish(event)
    rig.handled(first)
    second = rig.publish(event)  # the same state change published again (a pipeline restart)
    [entry] = rig.handled(second)
    assert entry["outcomes"] == {"email:dup@h.example": "duplicate", "webhook:dup": "duplicate"}
    assert len(rig.mail.messages(to="dup@h.example")) == 1
    assert len(rig.hooks.deliveries("/dup", accepted=None)) == 1
    escalated = rig.publish(
        {**event, c.ALERT_STATE: "escalated", c.EVENT_TIME: "2026-11-22T09:00:00.000000Z"}
    )
    [entry] = rig.handled(escalated)
    assert set(entry["outcomes"].values()) == {"sent"}  # the next state change is a new notification


def test_a_slow_webhook_times_out_and_is_retried(rig: Rig) -> None:
    rig.hooks.slow("/slow", seconds=1.0, times=1)
    message_id = rig.publish(make_event(**{c.WARD: "W-SLOW"}))
    [entry] = rig.handled(message_id)
    assert entry["outcomes"] == {"webhook:slow": "sent"}
    deliveries = rig.hooks.wait_for(2, path="/slow")
    # The receiver got (and accepted) both tries: the Idempotency-Key lets it drop the second.
    assert len({d.idempotency_key for d in deliveries}) == 1


def test_a_malformed_event_is_acknowledged_not_redelivered(rig: Rig) -> None:
    message_id = rig.publish(b'{"alert_id": "no other fields"}')
    [entry] = rig.handled(message_id)
    assert entry["message"] == "malformed alert event acknowledged"
    rig.drain(MALFORMED_KEY)  # acknowledged: a redelivery would have come before the marker
    assert len(rig.dead_letters(message_id=message_id)) == 1
    assert len(rig.handled(message_id)) == 1


# --- Firestore: the cloud backend, against the emulator -----------------------------------------------
@pytest.fixture(scope="module")
def firestore_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    emulator = FirestoreEmulator(tmp_path_factory.mktemp("firestore"))
    try:
        emulator.start()
    except MissingPrerequisite as exc:
        pytest.fail(f"Firestore emulator prerequisite missing: {exc}", pytrace=False)
    try:
        yield {**emulator.env(), "GOOGLE_CLOUD_PROJECT": "vitals-lake-local"}
    finally:
        emulator.stop()


def _firestore_store(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> state.FirestoreState:
    """A store on the emulator, under collections of its own (a fresh prefix per test)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return state.FirestoreState.from_env({**env, "NOTIFIER_FIRESTORE_PREFIX": f"t{uuid.uuid4().hex[:6]}_"})


def test_firestore_state_claims_and_dead_letters(
    firestore_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _firestore_store(firestore_env, monkeypatch)
    prefix = store.deliveries.id.removesuffix(state.FIRESTORE_DELIVERIES)
    assert store.claim("n1", "email:a") is state.Claim.ACQUIRED
    assert store.claim("n1", "email:a") is state.Claim.BUSY
    store.release("n1", "email:a")
    assert store.claim("n1", "email:a") is state.Claim.ACQUIRED
    store.finish("n1", "email:a", "sent")
    assert store.claim("n1", "email:a") is state.Claim.DONE
    store.release("n1", "email:a")
    assert store.status("n1", "email:a") == "sent"
    doc = store.deliveries.document(state.record_key("n1", "email:a")).get().to_dict()
    assert doc["destination"] == "email:a" and doc["expire_at"] > doc["claimed_at"]

    stale = state.FirestoreState(store.client, prefix=prefix, lease_seconds=0.2)
    assert stale.claim("n2", "webhook:x") is state.Claim.ACQUIRED
    time.sleep(0.3)
    assert stale.claim("n2", "webhook:x") is state.Claim.ACQUIRED  # taken over after the lease

    store.dead_letter({"kind": "delivery", "destination": "webhook:x", "error": "HTTP 500"})
    [letter] = [d.to_dict() for d in store.dead_letters.stream()]
    assert letter["error"] == "HTTP 500" and "recorded_at" in letter


def test_firestore_keyed_dead_letters_are_written_once(
    firestore_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _firestore_store(firestore_env, monkeypatch)
    assert store.dead_letter({"kind": "malformed", "n": 1}, key="malformed:m/1") is True
    assert store.dead_letter({"kind": "malformed", "n": 2}, key="malformed:m/1") is False  # a redelivery
    assert store.dead_letter({"kind": "malformed", "n": 3}, key="malformed:m/2") is True
    assert sorted(d.to_dict()["n"] for d in store.dead_letters.stream()) == [1, 3]


def test_the_function_on_firestore_state_does_not_send_twice(
    firestore_env: dict[str, str], rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = tmp_path / "routing.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "local_receivers": True,
                "smtp": rig.mail.smtp_config(),
                "routes": [{"wards": ["W-FS"], "email": ["fs@h.example"]}],
            }
        )
    )
    prefix = f"f{uuid.uuid4().hex[:6]}_"
    env = {
        **firestore_env,
        **rig.mail.env(),
        "NOTIFIER_CONFIG": str(config_path),
        "NOTIFIER_STATE": "firestore",
        "NOTIFIER_FIRESTORE_PREFIX": prefix,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = functions_framework.create_app("notify", str(FUNCTION_SOURCE), "cloudevent").test_client()
    data = json.dumps(make_event(**{c.WARD: "W-FS"})).encode()
    assert client.post("/", json=push_envelope(data, "fs-1")).status_code == 200
    assert client.post("/", json=push_envelope(data, "fs-1")).status_code == 200
    assert len(rig.mail.wait_for(1, to="fs@h.example")) == 1
    assert client.post("/", json=push_envelope(b"junk", "fs-2")).status_code == 200
    redelivered = client.post("/", json=push_envelope(b"junk", "fs-2"))  # recorded once, below
    assert redelivered.status_code == 200

    store = state.FirestoreState.from_env(env)
    [doc] = [d.to_dict() for d in store.deliveries.stream()]
    assert (doc["destination"], doc["status"]) == ("email:fs@h.example", "sent")
    [letter] = [d.to_dict() for d in store.dead_letters.stream()]
    assert (letter["kind"], letter["message_id"]) == ("malformed", "fs-2")


# --- Erasure: a patient's alerts leave both backends ----------------------------------------------------
def _fill_for_erasure(store: state.LocalState | state.FirestoreState) -> None:
    """Records of alert a1 (two state changes, two destinations, a dead letter), of a10 (whose id a1
    prefixes: its records must stay), of a2, and a malformed message's dead letter (no alert)."""
    for nid, dest in (
        ("a1:opened:t0", "email:w"),
        ("a1:opened:t0", "webhook:ehr"),
        ("a1:resolved:t9", "email:w"),
    ):
        assert store.claim(nid, dest) is state.Claim.ACQUIRED
        store.finish(nid, dest, "sent")
    for nid in ("a10:opened:t1", "a2:opened:t2"):
        assert store.claim(nid, "email:w") is state.Claim.ACQUIRED
    store.dead_letter(
        {"kind": "delivery", "alert_id": "a1", "destination": "webhook:ehr", "error": "HTTP 500"}
    )
    store.dead_letter(
        {"kind": "delivery", "alert_id": "a2", "destination": "webhook:ehr", "error": "HTTP 500"}
    )
    store.dead_letter({"kind": "malformed", "message_id": "m/1"}, key="malformed:m/1")


def _left_after_erasure(store: state.LocalState | state.FirestoreState) -> None:
    assert store.forget(["a1", ""]) == 4  # three deliveries and one dead letter
    assert store.forget(["a1"]) == 0  # nothing more
    for nid, dest in (
        ("a1:opened:t0", "email:w"),
        ("a1:opened:t0", "webhook:ehr"),
        ("a1:resolved:t9", "email:w"),
    ):
        assert store.status(nid, dest) is None
    assert store.status("a10:opened:t1", "email:w") == "pending"
    assert store.status("a2:opened:t2", "email:w") == "pending"
    with pytest.raises(ValueError, match="no ':'"):
        store.forget(["a2:opened"])  # an id with the separator would reach other alerts by prefix


def test_local_state_forgets_a_patients_alerts(tmp_path: Path) -> None:
    store = state.LocalState(tmp_path / "notifier")
    _fill_for_erasure(store)
    _left_after_erasure(store)
    letters = store.dead_letters()
    assert sorted(str(d.get("alert_id")) for d in letters) == ["None", "a2"]


def test_firestore_state_forgets_a_patients_alerts(
    firestore_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _firestore_store(firestore_env, monkeypatch)
    _fill_for_erasure(store)
    _left_after_erasure(store)
    letters = [d.to_dict() for d in store.dead_letters.stream()]
    assert sorted(str(d.get("alert_id")) for d in letters) == ["None", "a2"]
