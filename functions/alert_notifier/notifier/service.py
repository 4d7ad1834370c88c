"""One alert event in, its notifications out: parse, route, claim, send with retries, record.

Outcome of a message for Pub/Sub: the function returns (the message is acknowledged) when every
destination was sent, had been sent before, or refused it for good (dead-lettered); it raises
:class:`RedeliverLater` (HTTP 500: Pub/Sub redelivers with backoff, then moves the message to the
subscription's dead-letter topic) when a delivery failed transiently after its last try, or another
delivery of the same message is still sending it.

Failures are isolated per destination: whatever one destination raises (rendering, secrets, SMTP,
HTTP, a bug) is that destination's outcome alone, and the others are still sent. An error that is not
a :class:`DeliveryError` counts as permanent for its destination. A malformed message is acknowledged
and dead-lettered once per Pub/Sub message id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import requests

from notifier import event as ev
from notifier.config import Config, ConfigError, Destination, check_webhook_url, load_config
from notifier.render import json_payload, render_email, slack_payload
from notifier.retry import DeliveryError, PermanentError, TransientError, call_with_retries
from notifier.secrets import Secrets, SecretUnavailable
from notifier.smtp import build_message, send_email
from notifier.state import Claim, StateStore, state_from_env
from notifier.webhooks import encode_body, post_webhook

log = logging.getLogger("alert_notifier")


class RedeliverLater(RuntimeError):
    """Some deliveries must be tried again: the HTTP 500 makes Pub/Sub redeliver the message."""


_DETAIL_CAP: Final = 500
# Log messages and fields that Terraform's log-based metrics select (infra/terraform/monitoring.tf, via
# generated/names.json; a test checks the two agree).
LOG_ALERT_HANDLED: Final = "alert handled"
LOG_DELIVERY_GAVE_UP: Final = "delivery gave up"
# Seconds from the reading that changed the alert's state to the end of its first successful delivery
# (the reading-to-alert latency the SLO counts); absent when nothing was sent.
LATENCY_FIELD: Final = "reading_to_sent_s"
_MALFORMED_PREFIX: Final = "malformed:"  # + the Pub/Sub message id: the key of its dead letter


@dataclass(frozen=True)
class Outcome:
    destination: str
    result: str  # sent | duplicate | busy | failed | rejected
    attempts: int = 0
    detail: str = ""


class Notifier:
    def __init__(
        self,
        config: Config,
        state: StateStore,
        secrets: Secrets,
        *,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.secrets = secrets
        self._sleep = sleep
        self._local = threading.local()  # one HTTP session per server thread: Session is not thread-safe

    @property
    def session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy from the environment between us and the receivers
            self._local.session = session
        return session

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        path = env.get("NOTIFIER_CONFIG")
        if not path:
            raise RuntimeError("NOTIFIER_CONFIG is not set: the path of the routing config (YAML or JSON)")
        return cls(load_config(path), state_from_env(env), Secrets(env))

    # --- one message -----------------------------------------------------------------------------
    def handle(self, data: Any) -> list[Outcome]:
        """Handle the CloudEvent data of one Pub/Sub message (see the module docstring)."""
        try:
            event = ev.parse_pubsub_data(data)
        except ev.MalformedEvent as exc:
            self._malformed(data, str(exc))
            return []
        if event.dropped_fields:
            log.warning(
                "event fields unknown to the notifier's schema were dropped: redeploy it with the new schema",
                extra={"fields": {**event.log_fields(), "dropped_fields": list(event.dropped_fields)}},
            )
        destinations = self.config.destinations(event)
        if not destinations:
            log.info("no route for alert", extra={"fields": event.log_fields()})
            return []
        outcomes = [self._deliver(event, d) for d in destinations]
        retry = [o for o in outcomes if o.result in ("failed", "busy")]
        results = {o.destination: o.result for o in outcomes}
        handled: dict[str, Any] = {**event.log_fields(), "outcomes": results}
        if any(o.result == "sent" for o in outcomes):
            handled[LATENCY_FIELD] = round(time.time() - event.reading_time.timestamp(), 3)
        log.info(LOG_ALERT_HANDLED, extra={"fields": handled})
        if retry:
            raise RedeliverLater(
                f"alert {event.alert_id} ({event.state}): {len(retry)} of {len(outcomes)} "
                "deliveries to try again"
            )
        return outcomes

    def _malformed(self, data: Any, reason: str) -> None:
        """Acknowledge (never redeliver forever) and dead-letter a malformed message, once per message id.

        The payload is neither stored nor logged: it may name a patient, and the dead-letter store
        (Firestore) is outside the data-access audit logs. The record keeps its size and SHA-256, which
        match it against the pipeline's ``alerts`` table or the topic's retained messages. Without a
        message id a redelivery cannot be recognised: such a message is recorded every time (real
        Pub/Sub messages always have one).
        """
        message_id = ev.message_id(data)
        fields = {"message_id": message_id or None, "reason": reason}
        record = {"kind": "malformed", **fields, **_payload_facts(data)}
        if self.state.dead_letter(record, key=_MALFORMED_PREFIX + message_id if message_id else None):
            log.error("malformed alert event acknowledged", extra={"fields": fields})
        else:
            done = {**fields, "already_recorded": True}
            log.info("malformed alert event acknowledged", extra={"fields": done})

    # --- one destination -------------------------------------------------------------------------
    def _deliver(self, event: ev.AlertEvent, dest: Destination) -> Outcome:
        nid = event.notification_id
        claim = self.state.claim(nid, dest.id)
        if claim is Claim.DONE:
            return Outcome(dest.id, "duplicate")
        if claim is Claim.BUSY:
            return Outcome(dest.id, "busy")
        attempts = 0

        def send_once() -> None:
            nonlocal attempts
            attempts += 1
            self._send(event, dest)

        def on_retry(attempt: int, exc: TransientError, wait: float) -> None:
            log.warning(
                "delivery failed, retrying",
                extra={
                    "fields": {
                        **event.log_fields(),
                        "destination": dest.id,
                        "attempt": attempt,
                        "error": self.secrets.redact(exc.detail),
                        "retry_in_s": round(wait, 3),
                    }
                },
            )

        try:
            kwargs = {} if self._sleep is None else {"sleep": self._sleep}
            call_with_retries(send_once, self.config.retry, on_retry=on_retry, **kwargs)
        except DeliveryError as exc:
            detail = self.secrets.redact(exc.detail)
            if exc.transient:
                self.state.release(nid, dest.id)
            else:
                self.state.finish(nid, dest.id, "rejected", detail)
            result = "failed" if exc.transient else "rejected"
            self._dead_letter(event, dest, result, attempts, detail)
            return Outcome(dest.id, result, attempts, detail)
        except Exception as exc:  # noqa: BLE001 - rendering, config, a bug: this destination's alone
            return self._unexpected(event, dest, attempts, exc)
        except BaseException:
            self.state.release(nid, dest.id)
            raise
        self.state.finish(nid, dest.id, "sent")
        return Outcome(dest.id, "sent", attempts)

    def _unexpected(self, event: ev.AlertEvent, dest: Destination, attempts: int, exc: Exception) -> Outcome:
        """Permanent for this destination: the same event would fail the same way on every redelivery
        (a header it cannot carry, a broken config), so the message is not held back for it."""
        detail = f"unexpected {type(exc).__name__}"
        self.state.finish(event.notification_id, dest.id, "rejected", detail)
        # The exception's text may quote event values: it goes to the access-controlled store, not the log.
        stored = {
            "exception_type": type(exc).__name__,
            "exception_detail": self.secrets.redact(_text_of(exc))[:_DETAIL_CAP],
            "exception_at": _where(exc),
        }
        self._dead_letter(event, dest, "rejected", attempts, detail, stored=stored)
        return Outcome(dest.id, "rejected", attempts, detail)

    def _dead_letter(
        self,
        event: ev.AlertEvent,
        dest: Destination,
        result: str,
        attempts: int,
        detail: str,
        *,
        stored: Mapping[str, Any] | None = None,
    ) -> None:
        record = {
            "kind": "delivery",
            **event.log_fields(),
            "notification_id": event.notification_id,
            "destination": dest.id,
            "result": result,  # failed: Pub/Sub redelivers; rejected: given up for good
            "attempts": attempts,
            "delivery_attempt": event.delivery_attempt,
            "error": detail,
        }
        log.error(LOG_DELIVERY_GAVE_UP, extra={"fields": record})
        self.state.dead_letter({**record, **(stored or {})})

    def _send(self, event: ev.AlertEvent, dest: Destination) -> None:
        try:
            if dest.kind == "email":
                self._send_email(event, dest)
            else:
                self._send_webhook(event, dest)
        except SecretUnavailable as exc:  # fixable by an operator: keep the message for redelivery
            raise TransientError(str(exc)) from None

    def _send_email(self, event: ev.AlertEvent, dest: Destination) -> None:
        smtp = self.config.smtp
        if smtp is None:  # the config loader refuses email routes without smtp
            raise PermanentError("no smtp settings")
        content = render_email(event, self.config.subject_prefix)
        message = build_message(smtp, dest.target, content, event.notification_id)
        password = self.secrets.get(smtp.password_secret) if smtp.password_secret else None
        send_email(smtp, password, message)

    def _send_webhook(self, event: ev.AlertEvent, dest: Destination) -> None:
        hook = self.config.webhooks[dest.target]
        if hook.format == "slack":
            payload = slack_payload(event)
        else:
            payload = json_payload(event, event.notification_id)
        url = hook.url or self.secrets.get(hook.url_secret or "")
        if hook.url is None:  # a URL from a secret meets the config's rule when it is used
            try:
                local = self.config.local_receivers
                check_webhook_url(url, local_receivers=local, where=str(hook.url_secret))
            except ConfigError as exc:
                raise PermanentError(str(exc)) from None
        key = self.secrets.get(hook.signing_secret) if hook.signing_secret else None
        post_webhook(
            self.session,
            url,
            encode_body(payload),
            idempotency_key=event.notification_id,
            signing_key=key,
            timeout=hook.timeout_seconds,
        )


def _payload_facts(data: Any) -> dict[str, Any]:
    """The message's size (base64 characters as received) and the SHA-256 of its decoded bytes, never
    the bytes themselves."""
    message = data.get("message") if isinstance(data, Mapping) else None
    raw = message.get("data") if isinstance(message, Mapping) else None
    if not isinstance(raw, str):
        return {"data_size": None, "data_sha256": None}
    try:
        payload = base64.b64decode(raw, validate=False)
    except (binascii.Error, ValueError):
        payload = raw.encode("utf-8", "replace")
    return {"data_size": len(raw), "data_sha256": hashlib.sha256(payload).hexdigest()}


def _text_of(exc: BaseException) -> str:
    try:
        return ev.storable(str(exc))
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails is still recorded by its type
        return ""


def _where(exc: BaseException) -> str:
    """Where it was raised (file:line in function): enough to find the bug, no values."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"
