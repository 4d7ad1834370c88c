"""Cloud Function (2nd gen) ``notify``: email and webhook clinicians about alert events from Pub/Sub.

Triggered by the ``vitals-alerts`` topic (Eventarc CloudEvent
``google.cloud.pubsub.topic.v1.messagePublished``; locally the Pub/Sub emulator's push, which
functions-framework converts to the same CloudEvent).
Environment: ``NOTIFIER_CONFIG`` (routing config path), ``NOTIFIER_STATE`` (``local`` or ``firestore``),
``NOTIFIER_STATE_DIR`` (local state), and the secrets the config names (see README.md).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent

from notifier.service import Notifier


class _JsonLogFormatter(logging.Formatter):
    """One JSON object per line: Cloud Logging reads ``severity`` and ``message`` and keeps the rest."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            **getattr(record, "fields", {}),
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def _setup_logging() -> None:
    # urllib3 logs request paths at DEBUG, and a Slack webhook's path is its credential.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logger = logging.getLogger("alert_notifier")
    if not logger.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(_JsonLogFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


_setup_logging()
# Built at start-up: a broken config fails the deploy (or the local start), not the first alert.
_notifier = Notifier.from_env()


@functions_framework.cloud_event
def notify(cloud_event: CloudEvent) -> None:
    _notifier.handle(cloud_event.data)
