"""The demo's alert delivery: a local SMTP server, a webhook receiver and the notifier function,
subscribed to the alerts topic the pipeline publishes to; and what they delivered."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.stack.function import NotifierFunction
from harness.stack.mail import LocalMailServer
from harness.stack.webhook import WebhookReceiver
from harness.waiting import WaitTimeout, wait_until
from vitals_lake import contract as c
from vitals_lake.config import PubSubSettings
from vitals_lake.lake import Lake

WARD_INBOX = "ward-team@hospital.example"
EHR_PATH = "/ehr"  # every alert's webhook
HOOK_KEY_ENV = "DEMO_WEBHOOK_SIGNING_KEY"


@dataclass
class Notifier:
    mail: LocalMailServer
    hooks: WebhookReceiver
    function: NotifierFunction

    def settle(self, lake: Lake, *, timeout: float = 60.0) -> bool:
        """Wait until every alert event in the lake reached the EHR webhook (the route of every alert) and
        the function acknowledged every message it was pushed (its last invocation answered 200): then
        no push is in flight and none will be redelivered, so what was delivered is final. False when
        that did not happen within ``timeout`` (the summary's counts then show what is missing)."""
        events = lake.count("alerts") if lake.exists("alerts") else 0

        def settled() -> bool:
            acknowledged = self.function.acknowledged()
            return len(self.hooks.deliveries(EHR_PATH)) >= events and all(acknowledged.values())

        try:
            wait_until(
                settled, timeout=timeout, interval=0.2, what=f"{events} alerts delivered and acknowledged"
            )
        except WaitTimeout:
            return False
        return True


@contextmanager
def notifier(run_dir: Path, pubsub: PubSubSettings) -> Iterator[Notifier]:
    """Everything started, the push subscription created (before anything is published)."""
    key = secrets.token_hex(16)
    with ExitStack() as stack:
        mail = stack.enter_context(LocalMailServer(run_dir))
        hooks = stack.enter_context(WebhookReceiver(secret=key))
        config: dict[str, Any] = {
            "smtp": mail.smtp_config(),
            "webhooks": {
                "ehr": {"url": hooks.url(EHR_PATH), "format": "json", "signing_secret": HOOK_KEY_ENV},
                "chat": {"url": hooks.url("/slack"), "format": "slack", "signing_secret": HOOK_KEY_ENV},
            },
            "local_receivers": True,  # the test receivers listen on loopback, plain HTTP
            "routes": [
                # Every alert to the EHR integration; the ward team's inbox and chat from "medium" up.
                {"name": "ehr", "webhooks": ["ehr"]},
                {"name": "ward-team", "min_severity": "medium", "email": [WARD_INBOX], "webhooks": ["chat"]},
            ],
        }
        fn = stack.enter_context(
            NotifierFunction(run_dir, config=config, env={**mail.env(), HOOK_KEY_ENV: key})
        )
        fn.subscribe(pubsub)
        yield Notifier(mail, hooks, fn)


def alert_summary(lake: Lake, delivered: Notifier) -> dict[str, Any]:
    """Alerts the pipeline raised (by state) and what reached an inbox or a webhook."""
    events = lake.read("alerts", columns=[c.ALERT_STATE, c.SEVERITY])
    return {
        "events": dict(Counter(events[c.ALERT_STATE].to_pylist())),
        "opened_by_severity": dict(
            Counter(
                s
                for s, st in zip(
                    events[c.SEVERITY].to_pylist(), events[c.ALERT_STATE].to_pylist(), strict=True
                )
                if st == "opened"
            )
        ),
        "emails_delivered": len(delivered.mail.messages()),
        "webhooks_delivered": len(delivered.hooks.deliveries()),
        "function_deliveries": delivered.function.delivery_counts(),
        "dead_letters": len(delivered.function.dead_letters()),
    }


def keep_deliveries(run_dir: Path, delivered: Notifier) -> Path:
    """Write what left the platform, as the receivers got it, to ``<run_dir>/delivered``: each e-mail
    as ``mail-NNN.eml`` and every webhook request (path, headers, body) as a line of
    ``webhooks.jsonl``. What a patient's alert reveals outside is then on disk to read (and scan)."""
    out = run_dir / "delivered"
    out.mkdir(parents=True, exist_ok=True)
    for i, mail in enumerate(delivered.mail.messages()):
        (out / f"mail-{i:03d}.eml").write_bytes(mail.message.as_bytes())
    with (out / "webhooks.jsonl").open("w", encoding="utf-8") as f:
        for hook in delivered.hooks.deliveries(accepted=None):
            record = {"path": hook.path, "headers": hook.headers, "body": hook.body.decode(errors="replace")}
            f.write(json.dumps(record) + "\n")
    return out
