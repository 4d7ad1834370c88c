"""Property (issue #13): whatever a Pub/Sub message holds, ``Notifier.handle`` never raises (but
RedeliverLater) and accounts for it: a valid event goes to every destination of its route, anything else
leaves exactly one malformed dead letter, and a redelivery of that message leaves no second one.

Inputs are mutations of valid alert events built the project's way (``make_event``: a row serialised by
``vitals_lake.alert_events.to_json``), at the field level (deletions, wrong types, huge numbers, NaN,
nested and deeply nested structures, strings with control characters and lone surrogates) and at the
encoding level (truncated or flipped bytes, invalid base64 and UTF-8, broken envelopes), plus arbitrary
JSON. Rendering and serialisation run for real; only the network is replaced, by fakes that apply the
checks the real clients apply (requests' header validation, http.client's Latin-1 headers, the email
package's serialisation), and record what they refused instead of raising, so a refusal cannot hide
behind the notifier's own isolation of failures.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_alert_notifier import make_event
from vitals_lake import contract as c

FUNCTION_DIR = Path(__file__).resolve().parents[2] / "functions" / "alert_notifier"
if str(FUNCTION_DIR) not in sys.path:
    sys.path.insert(0, str(FUNCTION_DIR))

from notifier import config as cfg  # noqa: E402
from notifier import event as ev  # noqa: E402
from notifier import service  # noqa: E402
from notifier.secrets import Secrets  # noqa: E402
from notifier.state import FINAL_STATUSES, Claim  # noqa: E402

EXAMPLES = 200
BATCH = 50  # inputs per example: 200 x 50 = 10,000 inputs
MIN_INPUTS = 10_000
HOOK_KEY = "property-signing-key-0123456789"
DESTINATIONS = frozenset({"email:ward@h.example", "webhook:ehr", "webhook:slack"})
_HEADER_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


# --- the store and the network, in memory -----------------------------------------------------------
class MemoryState:
    """The StateStore protocol with LocalState's rules (no lease expiry: nothing dies mid-send)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], str] = {}
        self.letters: list[dict[str, Any]] = []
        self.keys: set[str] = set()

    def claim(self, notification_id: str, destination_id: str) -> Claim:
        status = self.records.get((notification_id, destination_id))
        if status in FINAL_STATUSES:
            return Claim.DONE
        if status is not None:
            return Claim.BUSY
        self.records[(notification_id, destination_id)] = "pending"
        return Claim.ACQUIRED

    def finish(self, notification_id: str, destination_id: str, status: str, detail: str = "") -> None:
        self.records[(notification_id, destination_id)] = status

    def release(self, notification_id: str, destination_id: str) -> None:
        if self.records.get((notification_id, destination_id)) == "pending":
            del self.records[(notification_id, destination_id)]

    def dead_letter(self, record: Mapping[str, Any], key: str | None = None) -> bool:
        json.dumps(record)  # what LocalState does with it: must not raise
        if key is not None:
            if key in self.keys:
                return False
            self.keys.add(key)
        self.letters.append(dict(record))
        return True


class _Response:
    status_code = 200
    headers: Mapping[str, str] = {}

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class Network:
    """Stands in for the SMTP server and the webhook receivers; counts sends, records refusals."""

    def __init__(self) -> None:
        self.sent = 0
        self.refusals: list[str] = []

    def send_email(self, settings: cfg.SmtpSettings, password: str | None, message: EmailMessage) -> None:
        try:
            message.as_bytes()  # what smtplib's send_message serialises
        except Exception as exc:  # noqa: BLE001 - a message smtplib could not send
            self.refusals.append(f"email: {type(exc).__name__}")
            return
        subject = str(message["Subject"])
        if _HEADER_CONTROL.search(subject) or not subject.startswith("[Vitals Lake] "):
            self.refusals.append(f"email subject {subject!r}")
        self.sent += 1

    def post(self, url: str, *, data: bytes, headers: dict[str, str], **kwargs: Any) -> _Response:
        try:
            requests.Request("POST", url, headers=headers, data=data).prepare()  # header validation
            for value in headers.values():
                value.encode("latin-1")  # how http.client sends header values
            json.loads(data, parse_constant=_refuse)  # strict JSON: no NaN
        except Exception as exc:  # noqa: BLE001 - a request the receiver could not take
            self.refusals.append(f"webhook {url}: {type(exc).__name__}")
        else:
            self.sent += 1
        return _Response()


def _refuse(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


@pytest.fixture
def notifier(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[service.Notifier, MemoryState, Network]]:
    config = cfg.parse_config(
        {
            "smtp": {"host": "smtp.invalid", "sender": "Vitals Lake <alerts@h.example>"},
            "retry": {"attempts": 2, "base_delay_seconds": 0, "max_delay_seconds": 0},
            "webhooks": {
                "ehr": {"url": "https://ehr.invalid/alerts", "signing_secret": "HOOK_KEY"},
                "slack": {
                    "url": "https://slack.invalid/hook",
                    "format": "slack",
                    "signing_secret": "HOOK_KEY",
                },
            },
            # Every valid event matches: any ward, every severity and state.
            "local_receivers": True,  # the test receivers listen on loopback, plain HTTP
            "routes": [{"name": "all", "email": ["ward@h.example"], "webhooks": ["ehr", "slack"]}],
        }
    )
    store, network = MemoryState(), Network()
    monkeypatch.setattr(service, "send_email", network.send_email)
    notifier = service.Notifier(config, store, Secrets({"HOOK_KEY": HOOK_KEY}), sleep=lambda s: None)
    notifier._local.session = network  # the real post_webhook, this transport
    logger = logging.getLogger("alert_notifier")
    disabled, logger.disabled = logger.disabled, True  # 10,000 log lines help nobody
    try:
        yield notifier, store, network
    finally:
        logger.disabled = disabled


# --- inputs --------------------------------------------------------------------------------------------
BASES = (
    make_event(),
    make_event(
        **{
            c.ALERT_STATE: "resolved",
            c.SEVERITY: "low",
            c.WARD: None,
            c.BED: None,
            c.ALERT_REASONS: [],
            c.ALERT_FLAGS_RAISED: [],
            c.ANOMALY_SCORE: None,
            c.MODEL_VERSION: None,
            c.SYSTOLIC: None,
            c.DIASTOLIC: None,
        }
    ),
    make_event(**{c.WARD: "ICU\nEast", c.BED: "12\r\n", c.SEVERITY: "medium"}),  # the ward
)
# Every field of the event, and names it does not have (a newer producer's, or junk).
FIELDS = (*sorted(set().union(*BASES)), "name", "", " ward", "ward\n", "__proto__", "é")
NASTY = "\r\n\t\x00\x0b\x1b\x7f\x85\u2028\u2029\ud800\udfff\ufeff\u202e<>&\"'\\%é€😀 "
DEEP = "__deep_{}__"  # replaced by that many nested arrays after serialising (json.dumps would recurse)

nasty_text = st.text(alphabet=st.one_of(st.sampled_from(NASTY), st.characters()), max_size=24)
numbers = st.one_of(
    st.integers(),
    st.floats(),  # NaN and the infinities included
    st.sampled_from([10**15, 10**16, -(10**20), 2**63, 2**64 + 1, 1e15, 1e16, 1e300, -1e308, 5e-324, 0.1]),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, nasty_text)
# Nested two levels at most (st.recursive costs three times as much to draw); deeper nesting is DEEP's.
json_values = st.one_of(
    leaves,
    st.lists(leaves, max_size=3),
    st.dictionaries(st.text(max_size=6), leaves, max_size=3),
    st.lists(st.lists(leaves, max_size=2), max_size=2),
)
deep = st.integers(min_value=2, max_value=5000).map(DEEP.format)


@st.composite
def field_mutations(draw: st.DrawFn) -> Callable[[dict[str, Any]], None]:
    name = draw(st.sampled_from(FIELDS))
    kind = draw(st.sampled_from(["delete", "value", "text", "number", "deep", "list"]))
    if kind == "delete":
        return lambda doc: doc.pop(name, None)
    value = draw(
        {
            "value": json_values,
            "text": nasty_text,
            "number": numbers,
            "deep": deep,
            "list": st.lists(st.one_of(nasty_text, st.sampled_from(["model", "fever", "ICU"])), max_size=3),
        }[kind]
    )
    return lambda doc: doc.__setitem__(name, value)


def _serialise(doc: Any, ascii_only: bool) -> bytes:
    text = json.dumps(doc, ensure_ascii=ascii_only)  # NaN and Infinity come out as bare words
    text = re.sub(r'"__deep_(\d+)__"', lambda m: "[" * int(m[1]) + "]" * int(m[1]), text)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8


ENCODINGS = (
    *["plain"] * 8,
    *("truncate", "flip", "not base64", "bad utf-8", "data type", "no data", "message type"),
    *("envelope type", "message id", "attempt"),
)


@st.composite
def message_inputs(draw: st.DrawFn) -> Callable[[int], Any]:
    """A function of a unique number: the CloudEvent data of one Pub/Sub message. Only what the chosen
    encoding needs is drawn: 10,000 inputs must stay cheap to generate."""
    arbitrary = draw(st.integers(0, 19)) == 0  # about 1 in 20: any JSON at all, not an event
    doc_value = draw(json_values) if arbitrary else None
    base = draw(st.sampled_from(BASES))
    mutations = [] if arbitrary else draw(st.lists(field_mutations(), max_size=3))
    ascii_only = draw(st.booleans())
    encoding = draw(st.sampled_from(ENCODINGS))
    extra: Any = None
    if encoding in ("truncate", "flip"):
        extra = (draw(st.integers(0, 4000)), draw(st.integers(0, 255)))
    elif encoding == "not base64":
        extra = draw(nasty_text) + "!"
    elif encoding in ("data type", "message id", "attempt", "message type", "envelope type"):
        extra = draw(json_values)

    def build(n: int) -> Any:
        doc: Any = doc_value if arbitrary else {**base, c.ALERT_ID: f"a-{n}"}
        for mutate in mutations:
            mutate(doc)
        return _envelope(_encode(_serialise(doc, ascii_only), encoding, extra), f"m-{n}", encoding, extra)

    return build


def _encode(raw: bytes, encoding: str, extra: Any) -> bytes:
    if encoding == "truncate":
        return raw[: extra[0] % max(len(raw), 1)]
    if encoding == "flip" and raw:
        at = extra[0] % len(raw)
        return raw[:at] + bytes([extra[1]]) + raw[at + 1 :]
    if encoding == "bad utf-8":
        return b"\xff" + raw
    return raw


def _envelope(raw: bytes, message_id: str, encoding: str, extra: Any) -> Any:
    message: dict[str, Any] = {"data": base64.b64encode(raw).decode(), "messageId": message_id}
    if encoding == "not base64":
        message["data"] = extra
    elif encoding == "data type":
        message["data"] = extra if not isinstance(extra, str) else [extra]
    elif encoding == "no data":
        del message["data"]
    elif encoding == "message id":  # none usable: every delivery is recorded
        message["messageId"] = extra if not isinstance(extra, str | int) else None
    elif encoding == "attempt":
        message["deliveryAttempt"] = extra if extra is not None else "9" * 5000
    envelope: Any = {"message": message, "subscription": "projects/p/subscriptions/s"}
    if encoding == "message type":
        envelope["message"] = extra if not isinstance(extra, dict) else [extra]
    elif encoding == "envelope type":
        envelope = extra if not isinstance(extra, dict) else [extra]
    return envelope


# --- the property ----------------------------------------------------------------------------------------
def _usable_message_id(data: Any) -> bool:
    message = data.get("message") if isinstance(data, dict) else None
    return isinstance(message, dict) and isinstance(message.get("messageId"), str)


def account_for(
    notifier: service.Notifier, store: MemoryState, network: Network, data: Any, counts: Counter[str]
) -> None:
    letters, sent = len(store.letters), network.sent
    try:
        outcomes: list[service.Outcome] | None = notifier.handle(data)
    except service.RedeliverLater:  # allowed; then a delivery must have failed and been dead-lettered
        outcomes = None
    new = store.letters[letters:]
    if outcomes is None:
        assert new and all(d["kind"] == "delivery" and d["result"] == "failed" for d in new)
        counts["redeliver"] += 1
    elif outcomes:  # a valid event: routed to every destination, sent once each
        assert {o.destination for o in outcomes} == DESTINATIONS
        assert all(o.result in ("sent", "duplicate") for o in outcomes), outcomes
        assert network.sent - sent == sum(o.result == "sent" for o in outcomes)
        assert new == []
        counts["valid"] += 1
    else:  # malformed: exactly one record, and none for a redelivery of the same message
        assert [d["kind"] for d in new] == ["malformed"] and network.sent == sent
        assert "data" not in new[0]  # the payload is never stored, only its size and digest
        assert notifier.handle(data) == []
        assert len(store.letters) - letters == (1 if _usable_message_id(data) else 2)
        counts["malformed"] += 1
    counts["inputs"] += 1


def test_every_message_is_delivered_or_dead_lettered_once_and_nothing_else_escapes(
    notifier: tuple[service.Notifier, MemoryState, Network],
) -> None:
    handler, store, network = notifier
    counts: Counter[str] = Counter()
    numbering = iter(range(10**9))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(message_inputs(), min_size=BATCH, max_size=BATCH))
    def run(batch: list[Callable[[int], Any]]) -> None:
        for build in batch:
            account_for(handler, store, network, build(next(numbering)), counts)

    run()
    assert network.refusals == []  # nothing was rendered that a real client would have refused
    assert counts["inputs"] >= MIN_INPUTS, counts
    # Both sides of the property were really exercised.
    assert counts["valid"] >= MIN_INPUTS // 10 and counts["malformed"] >= MIN_INPUTS // 10, counts


def test_a_valid_event_with_control_characters_everywhere_is_delivered(
    notifier: tuple[service.Notifier, MemoryState, Network],
) -> None:
    handler, store, network = notifier
    doc = {**BASES[0]}
    for name in (c.WARD, c.BED, c.MODEL_VERSION, c.PATIENT_KEY, c.ALERT_ID):
        doc[name] = f"x{NASTY}y"
    data = {"message": {"data": base64.b64encode(_serialise(doc, True)).decode(), "messageId": "ok-1"}}
    counts: Counter[str] = Counter()
    account_for(handler, store, network, data, counts)
    assert counts == Counter(valid=1, inputs=1) and network.refusals == []
    assert isinstance(ev.parse_pubsub_data(data), ev.AlertEvent)
