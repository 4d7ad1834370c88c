"""The alert notifier Cloud Function, run locally under functions-framework and fed by a push subscription.

    with LocalMailServer(run_dir) as mail, WebhookReceiver(secret=key) as hooks:
        config = {"local_receivers": True, "smtp": mail.smtp_config(), "webhooks": {...}, "routes": [...]}
        with NotifierFunction(run_dir, config=config, env={**mail.env(), "HOOK_KEY": key}) as fn:
            fn.subscribe(stack.pubsub)     # push subscription on vitals-alerts -> the function
            ...
            fn.delivery_counts()           # {"email:sent": n, "webhook:sent": m, ...}
            fn.dead_letters()              # what the function gave up on

It runs ``functions-framework --target notify --source functions/alert_notifier/main.py
--signature-type cloudevent --port P`` as a managed process (own session, log file, stopped as a
group). The emulator POSTs its legacy push envelope, which functions-framework converts to the
Pub/Sub CloudEvent; an HTTP 500 makes the emulator redeliver (about every second).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import grpc
import yaml
from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

from harness.stack.process import MissingPrerequisite
from harness.stack.services import _Service
from pipelines.pubsub_clients import ensure_topic, subscriber_client
from vitals_lake import contract as c
from vitals_lake.config import PubSubSettings

# The function deploys from its own directory, never from this package: the harness runs it from a
# source checkout (check_prerequisites says so when there is none).
FUNCTION_DIR: Final = Path(__file__).resolve().parents[2] / "functions" / "alert_notifier"
FUNCTION_SOURCE: Final = FUNCTION_DIR / "main.py"
ENTRY_POINT: Final = "notify"
NOTIFIER_SUBSCRIPTION: Final = "vitals-alerts-notifier"
# Modules the function imports (its requirements.txt), checked before the process is started.
_FUNCTION_MODULES: Final = ("functions_framework", "cloudevents", "requests", "yaml", "jsonschema")
# The function's log entries about a message it acknowledges whatever else happened.
_ACKNOWLEDGED_AS_IS: Final = ("malformed alert event acknowledged", "no route for alert")


class NotifierFunction(_Service):
    """functions-framework serving ``notify`` on a free port; local state in ``<run_dir>/alert_notifier``.

    ``config`` is the routing config: a path, or a mapping written to
    ``<run_dir>/alert_notifier/routing.yaml``. ``env`` adds to the process environment (the secrets the
    config names, ``NOTIFIER_STATE=firestore`` ...).
    """

    name = "alert-notifier"
    marker = "alert_notifier/main.py"

    def __init__(
        self,
        run_dir: Path,
        *,
        config: Path | str | Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        threads: int = 4,
    ) -> None:
        super().__init__(run_dir, port=port, host=host)
        self.work_dir = self.run_dir / "alert_notifier"
        self.state_dir = self.work_dir / "state"
        if isinstance(config, Mapping):
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.config_path = self.work_dir / "routing.yaml"
            self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        else:
            self.config_path = Path(config).resolve()
        self.extra_env = dict(env or {})
        self.threads = threads

    def check_prerequisites(self) -> None:
        if not FUNCTION_SOURCE.is_file():
            raise MissingPrerequisite(
                f"the alert notifier runs from a source checkout: {FUNCTION_SOURCE} does not exist"
            )
        missing = [m for m in _FUNCTION_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise MissingPrerequisite(
                f"the alert notifier needs {', '.join(missing)}: "
                f"pip install -r {FUNCTION_DIR.relative_to(FUNCTION_DIR.parents[1])}/requirements.txt"
            )
        super().check_prerequisites()

    def _argv(self, port: int) -> list[str]:
        script = Path(sys.executable).with_name("functions-framework")
        launcher = [str(script)] if script.is_file() else [sys.executable, "-m", "functions_framework"]
        return [
            *launcher,
            "--target",
            ENTRY_POINT,
            "--source",
            str(FUNCTION_SOURCE),
            "--signature-type",
            "cloudevent",
            "--host",
            self.host,
            "--port",
            str(port),
        ]

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "NOTIFIER_CONFIG": str(self.config_path),
            "NOTIFIER_STATE": "local",
            "NOTIFIER_STATE_DIR": str(self.state_dir),
            "THREADS": str(self.threads),  # gunicorn threads of the single worker
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def _ready(self) -> bool:
        # Any HTTP answer means the function loaded (GET on a CloudEvent function is 405).
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.host_port}/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    @property
    def push_endpoint(self) -> str:
        return f"http://{self.host_port}/"

    def subscribe(
        self,
        settings: PubSubSettings,
        subscription: str = NOTIFIER_SUBSCRIPTION,
        *,
        topic: str = c.ALERTS_TOPIC,
        ordered: bool = False,
    ) -> str:
        """Create (or re-point) the push subscription on ``topic`` to this function; returns its path.

        ``ordered``: messages with one ordering key are pushed in order, each only once the one before
        it was acknowledged (publish them with :func:`ordered_publisher`)."""
        return create_push_subscription(
            settings, subscription, self.push_endpoint, topic=topic, ordered=ordered
        )

    def delivery_counts(self) -> dict[str, int]:
        """Deliveries recorded by the function (local state): ``{"email:sent": 3, "webhook:rejected": 1}``."""
        db_path = self.state_dir / "deliveries.sqlite3"
        if not db_path.exists():
            return {}
        with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
            rows = db.execute(
                "SELECT substr(destination, 1, instr(destination, ':') - 1), status, count(*)"
                " FROM deliveries GROUP BY 1, 2"
            ).fetchall()
        return {f"{kind}:{status}": int(n) for kind, status, n in rows}

    def dead_letters(self) -> list[dict[str, Any]]:
        """The records of ``<state_dir>/dead_letters.jsonl`` (local state only)."""
        path = self.state_dir / "dead_letters.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def acknowledged(self) -> dict[str, bool]:
        """Per Pub/Sub message id the function has handled: True when its latest invocation acknowledged
        it (answered 2xx: every destination final, or the message malformed or without a route), False
        when that invocation asked for a redelivery (HTTP 500). Read from the function's JSON log: its
        last entry about a message in each invocation (``main.notify``, ``Notifier.handle``)."""
        latest: dict[str, bool] = {}
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the line being written
            message_id, message = entry.get("message_id"), entry.get("message")
            if not message_id:
                continue
            if message == "alert handled":
                latest[message_id] = not {"failed", "busy"} & set(entry.get("outcomes", {}).values())
            elif message in _ACKNOWLEDGED_AS_IS:
                latest[message_id] = True
        return latest


def create_push_subscription(
    settings: PubSubSettings,
    subscription: str,
    endpoint: str,
    *,
    topic: str = c.ALERTS_TOPIC,
    ack_deadline_seconds: int = 60,
    ordered: bool = False,
) -> str:
    """A push subscription on ``topic`` delivering to ``endpoint``; an existing one is re-pointed there.

    ``ordered`` enables message ordering (when the subscription is created): a message with an ordering
    key is pushed only once every earlier one with that key was acknowledged, and a redelivery of it
    comes before any later one. So when a later message on a key has arrived, the earlier ones on it
    were acknowledged: none of them is still on its way.
    """
    ensure_topic(settings, topic)
    topic_path = f"projects/{settings.project}/topics/{topic}"
    path = f"projects/{settings.project}/subscriptions/{subscription}"
    push = pubsub_v1.types.PushConfig(push_endpoint=endpoint)
    client = subscriber_client(settings)
    try:
        client.create_subscription(
            request={
                "name": path,
                "topic": topic_path,
                "push_config": push,
                "ack_deadline_seconds": ack_deadline_seconds,
                "enable_message_ordering": ordered,
            }
        )
    except AlreadyExists:
        client.modify_push_config(subscription=path, push_config=push)
    finally:
        client.close()
    return path


def ordered_publisher(settings: PubSubSettings) -> Any:
    """A publisher that keeps the order of the messages it publishes with one ``ordering_key`` (for an
    ``ordered`` subscription); the emulator over plain gRPC. Close it with ``close_publisher``."""
    options = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    if not settings.emulator_host:
        return pubsub_v1.PublisherClient(publisher_options=options)
    # No HTTP proxy for a local emulator even if the environment names one.
    channel = grpc.insecure_channel(settings.emulator_host, options=[("grpc.enable_http_proxy", 0)])
    return pubsub_v1.PublisherClient(
        publisher_options=options, transport=PublisherGrpcTransport(channel=channel)
    )
