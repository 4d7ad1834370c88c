"""One alert event in, its notifications out: parse, route, claim, send with retries, record.

Outcome of a message for Pub/Sub: the function returns (the message is acknowledged) when every
destination was sent, had been sent before, or refused it for good (dead-lettered); it raises
:class:`RedeliverLater` (HTTP 500: Pub/Sub redelivers with backoff, then moves the message to the
subscription's dead-letter topic) when a delivery failed transiently after its last try, or another
delivery of the same message is still sending it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from notifier import event as ev
from notifier.config import Config, Destination, load_config
from notifier.render import json_payload, render_email, slack_payload
from notifier.retry import DeliveryError, PermanentError, TransientError, call_with_retries
from notifier.secrets import Secrets, SecretUnavailable
from notifier.smtp import build_message, send_email
from notifier.state import Claim, StateStore, state_from_env
from notifier.webhooks import encode_body, post_webhook

log = logging.getLogger("alert_notifier")


class RedeliverLater(RuntimeError):
    """Some deliveries must be tried again: the HTTP 500 makes Pub/Sub redeliver the message."""


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
        log.info(
            "alert handled",
            extra={"fields": {**event.log_fields(), "outcomes": {o.destination: o.result for o in outcomes}}},
        )
        if retry:
            raise RedeliverLater(
                f"alert {event.alert_id} ({event.state}): {len(retry)} of {len(outcomes)} "
                "deliveries to try again"
            )
        return outcomes

    def _malformed(self, data: Any, reason: str) -> None:
        message = data.get("message") if isinstance(data, Mapping) else None
        message = message if isinstance(message, Mapping) else {}
        fields = {"message_id": message.get("messageId"), "reason": reason}
        # Acknowledged (not redelivered forever). The payload is kept in the dead-letter store, which is
        # access-controlled like the alerts themselves, and never logged.
        log.error("malformed alert event acknowledged", extra={"fields": fields})
        raw = message.get("data")
        self.state.dead_letter(
            {"kind": "malformed", **fields, "data": raw[:65536] if isinstance(raw, str) else None}
        )

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
        except BaseException:
            self.state.release(nid, dest.id)
            raise
        self.state.finish(nid, dest.id, "sent")
        return Outcome(dest.id, "sent", attempts)

    def _dead_letter(
        self, event: ev.AlertEvent, dest: Destination, result: str, attempts: int, detail: str
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
        log.error("delivery gave up", extra={"fields": record})
        self.state.dead_letter(record)

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
        content = render_email(event, dest.include_patient_id, self.config.subject_prefix)
        message = build_message(smtp, dest.target, content, event.notification_id)
        password = self.secrets.get(smtp.password_secret) if smtp.password_secret else None
        send_email(smtp, password, message)

    def _send_webhook(self, event: ev.AlertEvent, dest: Destination) -> None:
        hook = self.config.webhooks[dest.target]
        if hook.format == "slack":
            payload = slack_payload(event, dest.include_patient_id)
        else:
            payload = json_payload(event, event.notification_id, dest.include_patient_id)
        url = hook.url or self.secrets.get(hook.url_secret or "")
        key = self.secrets.get(hook.signing_secret) if hook.signing_secret else None
        post_webhook(
            self.session,
            url,
            encode_body(payload),
            idempotency_key=event.notification_id,
            signing_key=key,
            timeout=hook.timeout_seconds,
        )
