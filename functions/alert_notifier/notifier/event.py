"""The alert event: field names and allowed values from the generated schema, and its parsing.

``alert_event.schema.json`` is generated from the project's contract (``python -m vitals_lake.alert_events
--write-schema``). This module names the fields the notifier relies on and checks each name against that
file when it is imported, so a renamed field fails the deploy and the tests instead of reading ``None``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator

SCHEMA_PATH: Final = Path(__file__).resolve().parents[1] / "alert_event.schema.json"
SCHEMA: Final[dict[str, Any]] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
_PROPERTIES: Final[dict[str, Any]] = SCHEMA["properties"]
# Fields the schema does not know are dropped, not refused: a producer deployed with a newer contract
# must not have its alerts thrown away, and an unknown field (a name?) must not reach a message either.
_VALIDATOR: Final = Draft202012Validator(
    {k: v for k, v in SCHEMA.items() if k != "additionalProperties"},
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)


class SchemaDrift(RuntimeError):
    """The generated schema no longer has a field or value list the notifier relies on."""


def _field(name: str) -> str:
    if name not in _PROPERTIES:
        raise SchemaDrift(f"{SCHEMA_PATH.name} has no field {name!r}: update the notifier")
    return name


def _enum(name: str) -> tuple[str, ...]:
    spec = _PROPERTIES[name]
    values = spec.get("enum") or spec.get("items", {}).get("enum")
    if not values:
        raise SchemaDrift(f"{SCHEMA_PATH.name} lists no allowed values for {name!r}")
    return tuple(values)


ALERT_ID: Final = _field("alert_id")
STATE: Final = _field("state")
PATIENT_KEY: Final = _field("patient_key")  # pseudonym
WARD: Final = _field("ward")
BED: Final = _field("bed")
SEVERITY: Final = _field("severity")
REASONS: Final = _field("reasons")
NEWS2_SCORE: Final = _field("news2_score")
# The per-parameter NEWS2 sub-scores: every "news2_<parameter>" field besides the aggregate.
NEWS2_SUBSCORES: Final = tuple(n for n in _PROPERTIES if n.startswith("news2_") and n != NEWS2_SCORE)
FLAGS: Final = _field("flags")
ANOMALY_SCORE: Final = _field("anomaly_score")
MODEL_VERSION: Final = _field("model_version")
HEART_RATE: Final = _field("heart_rate")
TEMPERATURE: Final = _field("temperature")
SPO2: Final = _field("spo2")
RESPIRATION_RATE: Final = _field("respiration_rate")
SYSTOLIC: Final = _field("systolic")
DIASTOLIC: Final = _field("diastolic")
WINDOW_START: Final = _field("window_start")
WINDOW_END: Final = _field("window_end")
EVENT_TIME: Final = _field("event_time")

STATES: Final = _enum(STATE)
SEVERITIES: Final = _enum(SEVERITY)  # in rising order: routing compares positions
REASON_VALUES: Final = _enum(REASONS)
# Larger numbers are garbage, not readings: beyond every vital sign and score, and beyond the integers
# a float64 holds exactly.
MAX_NUMBER: Final = 1e15
MAX_MESSAGE_ID: Final = 256  # Pub/Sub's ids are about 16 digits
_MAX_ATTEMPT: Final = 10**9
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# The format checker only checks date-time when an optional package is installed: parse them here.
_TIMESTAMPS: Final = tuple(n for n, p in _PROPERTIES.items() if p.get("format") == "date-time")


class MalformedEvent(ValueError):
    """The message is not a valid alert event. The message names the problem, never the payload."""


@dataclass(frozen=True)
class AlertEvent:
    """One validated alert event plus the Pub/Sub message it came in."""

    fields: Mapping[str, Any]
    message_id: str
    delivery_attempt: int | None = None
    dropped_fields: tuple[str, ...] = ()  # names the schema does not know (their values are gone)

    def get(self, name: str) -> Any:
        return self.fields.get(name)

    @property
    def alert_id(self) -> str:
        return str(self.fields[ALERT_ID])

    @property
    def state(self) -> str:
        return str(self.fields[STATE])

    @property
    def severity(self) -> str:
        return str(self.fields[SEVERITY])

    @property
    def ward(self) -> str | None:
        ward = self.fields.get(WARD)
        return None if ward is None else str(ward)

    @property
    def notification_id(self) -> str:
        """One per state change. ``alert_id`` alone is shared by an alert's opened, escalated and
        resolved events, so it cannot key their notifications; the state change's time tells them apart
        and stays the same when the pipeline re-derives the alert."""
        return f"{self.alert_id}:{self.state}:{self.fields[EVENT_TIME]}"

    @property
    def reading_time(self) -> datetime:
        """When the reading that changed the alert's state was taken (validated as a date-time)."""
        return datetime.fromisoformat(str(self.fields[EVENT_TIME]).replace("Z", "+00:00"))

    def log_fields(self) -> dict[str, Any]:
        """What may go into logs: no patient identifiers, no vitals."""
        return {
            "alert_id": self.alert_id,
            "state": self.state,
            "alert_severity": self.severity,  # "severity" is the log entry's own level in Cloud Logging
            "ward": self.ward,
            "message_id": self.message_id,
        }


def parse_pubsub_data(data: Any) -> AlertEvent:
    """Parse the CloudEvent data of a Pub/Sub trigger (``{"message": {"data": base64, ...}}``).

    Eventarc's messagePublished events and the Pub/Sub emulator's push envelope (which
    functions-framework converts) have this same shape. Whatever ``data`` holds, the only exception
    raised is :class:`MalformedEvent`: a bad message must be acknowledged, never crash the handler.
    """
    try:
        return _parse(data)
    except MalformedEvent:
        raise
    except Exception as exc:  # noqa: BLE001 - deep nesting, a parser edge case: still just a bad message
        raise MalformedEvent(f"message could not be parsed ({type(exc).__name__})") from None


def message_id(data: Any) -> str:
    """The Pub/Sub message id, or "" when the envelope has none usable (it keys a malformed message's
    dead letter, so a redelivery of the same message is recorded once)."""
    message = data.get("message") if isinstance(data, Mapping) else None
    if not isinstance(message, Mapping):
        return ""
    value = message.get("messageId") or message.get("message_id")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() <= 64:
        return str(value)
    if isinstance(value, str) and len(value) <= MAX_MESSAGE_ID:
        return storable(value)
    return ""


def storable(text: str) -> str:
    """``text`` with lone surrogates (JSON escapes such as ``\\ud800`` make them) replaced by U+FFFD, so
    that it encodes as UTF-8 in logs, the dead-letter store, headers and request bodies."""
    return text if _SURROGATE.search(text) is None else _SURROGATE.sub("\ufffd", text)


def _parse(data: Any) -> AlertEvent:
    if not isinstance(data, Mapping) or not isinstance(data.get("message"), Mapping):
        raise MalformedEvent("CloudEvent data has no Pub/Sub message")
    message = data["message"]
    attempt = data.get("deliveryAttempt", message.get("deliveryAttempt"))
    try:
        raw = base64.b64decode(message.get("data") or "", validate=True)
        payload = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
    except MalformedEvent:
        raise
    # binascii.Error, UnicodeDecodeError, JSONDecodeError and an over-long integer are ValueErrors.
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedEvent(f"message data is not base64 JSON in UTF-8 ({type(exc).__name__})") from None
    fields = validate(payload)
    return AlertEvent(
        fields=fields,
        message_id=message_id(data),
        delivery_attempt=_delivery_attempt(attempt),
        dropped_fields=tuple(sorted(storable(name) for name in set(payload) - set(fields))),
    )


def _no_constant(name: str) -> Any:
    raise MalformedEvent(f"message data holds {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf
        raise MalformedEvent("message data holds a number beyond the float range")
    return value


def _delivery_attempt(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= _MAX_ATTEMPT else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return None


def validate(payload: Any) -> dict[str, Any]:
    """Check a decoded event against the schema and keep the fields it knows.

    The error names the field and the rule, never the value (which may identify a patient).
    """
    error = next(iter(sorted(_VALIDATOR.iter_errors(payload), key=lambda e: e.json_path)), None)
    if error is not None:
        raise MalformedEvent(f"event does not match the schema at {error.json_path}: {error.validator}")
    for name in _TIMESTAMPS:
        value = payload.get(name)
        if value is not None:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise MalformedEvent(f"event field {name} is not an ISO-8601 timestamp") from None
    fields = {name: value for name, value in payload.items() if name in _PROPERTIES}
    for name, value in fields.items():
        _check_number(name, value)
    return {name: _storable_value(value) for name, value in fields.items()}


def _check_number(name: str, value: Any) -> None:
    """The schema's "number" admits any magnitude; no vital sign or score comes near MAX_NUMBER."""
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
        raise MalformedEvent(f"event field {name} is out of range")


def _storable_value(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):  # the schema allows only flat lists of strings
        return [storable(v) if isinstance(v, str) else v for v in value]
    return value
