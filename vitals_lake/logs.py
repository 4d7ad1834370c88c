"""Logging for the project's jobs: readable text locally, one JSON object per line in the cloud.

Cloud Logging reads a JSON line's ``severity`` and ``message`` and keeps every other key as a field
an operator can filter on (``jsonPayload.table="silver_patient_vitals"``). Jobs pass those fields with
``log.info("...", extra={"fields": {"table": ..., "rows": ...}})``. JSON is chosen by
``VITALS_LOG_FORMAT=json``, or by running in a Cloud Run job or service, a Cloud Function or a Dataflow
worker (:func:`vitals_lake.keys.cloud_runtime`); ``VITALS_LOG_FORMAT=text`` forces text.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from vitals_lake.keys import cloud_runtime

LOG_FORMAT_ENV: Final = "VITALS_LOG_FORMAT"
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["json", "text"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``severity``, ``message``, ``logger``, ``time`` and the record's
    ``fields`` (``extra={"fields": {...}}``); an exception as ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            **getattr(record, "fields", {}),
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_format(env: Mapping[str, str] | None = None) -> LogFormat:
    e = os.environ if env is None else env
    chosen = (e.get(LOG_FORMAT_ENV) or "").lower()
    if chosen in ("json", "text"):
        return "json" if chosen == "json" else "text"
    return "json" if cloud_runtime(e) else "text"


def configure(level: int | str, *, fmt: str = TEXT_FORMAT, env: Mapping[str, str] | None = None) -> None:
    """Set up the root logger once (nothing changes when it has handlers already, as under pytest)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format(env) == "json" else logging.Formatter(fmt))
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, handlers=[handler])
