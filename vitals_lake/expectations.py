"""Data-quality expectations for readings, declared once by name (like Delta Live Tables' expect).

Each expectation is a vectorised check over a whole parsed batch: it returns a boolean mask of the
rows that FAIL it, so a batch of any size costs a handful of Arrow kernels, not a Python call per row.
``drop`` sends the row to quarantine with the rule's name; ``warn`` keeps it and only counts; a
``fail`` rule (checked per batch) stops nothing in a stream but raises an alert metric and an error log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.byte_search import IDENTIFIER_FIRST, IDENTIFIER_REST, identifiers

Action = Literal["drop", "warn", "fail"]

# ISO 8601 date-time with a mandatory UTC offset (Z or ±HH:MM / ±HHMM): a bare local time is ambiguous.
ISO_TIMESTAMP_RE: Final = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?"
    r"(Z|[+-]([01]\d|2[0-3]):?[0-5]\d)$"
)
ID_RE: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
ID_MAX_BYTES: Final = 128  # ID_RE's length bound (its characters are all one byte)
BLOOD_PRESSURE_RE: Final = r"^(?P<systolic>\d{2,3})/(?P<diastolic>\d{2,3})$"
CELSIUS_UNITS: Final = ("Cel", "C", "cel", "°C", "celsius", "Celsius")
FAHRENHEIT_UNITS: Final = ("[degF]", "F", "degF", "°F", "fahrenheit", "Fahrenheit")
ACVPU: Final = ("A", "C", "V", "P", "U")


@dataclass(frozen=True)
class Expectation:
    name: str
    action: Action
    description: str
    column: str | None  # the column whose value a quarantine row quotes as its detail
    fails: Callable[[pa.Table], pa.ChunkedArray | pa.Array]


def _is_null_or_empty(col: str) -> Callable[[pa.Table], pa.ChunkedArray]:
    return lambda t: pc.or_kleene(pc.is_null(t[col]), pc.equal(pc.utf8_length(t[col]), 0))


def _present_and_not_matching(col: str, pattern: str) -> Callable[[pa.Table], pa.ChunkedArray]:
    return lambda t: pc.and_kleene(pc.is_valid(t[col]), pc.invert(pc.match_substring_regex(t[col], pattern)))


def _present_and_not_identifier(col: str) -> Callable[[pa.Table], pa.Array]:
    """``_present_and_not_matching(col, ID_RE)`` without a regex per value: byte masks over the column's
    data (:func:`vitals_lake.byte_search.identifiers`)."""

    def fails(t: pa.Table) -> pa.Array:
        values = t[col]
        values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        ok = identifiers(values, first=IDENTIFIER_FIRST, rest=IDENTIFIER_REST, max_bytes=ID_MAX_BYTES)
        present = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        return pa.array(present & ~ok)

    return fails


def _not_finite(col: str) -> Callable[[pa.Table], pa.ChunkedArray]:
    return lambda t: pc.and_kleene(pc.is_valid(t[col]), pc.invert(pc.is_finite(t[col])))


def _outside(col: str, lo: float, hi: float) -> Callable[[pa.Table], pa.ChunkedArray]:
    def fails(t: pa.Table) -> pa.ChunkedArray:
        v = t[col]
        return pc.and_kleene(pc.is_finite(v), pc.or_(pc.less(v, lo), pc.greater(v, hi)))

    return fails


def _one_of(col: str, codes: tuple[float, ...]) -> Callable[[pa.Table], pa.ChunkedArray]:
    def fails(t: pa.Table) -> pa.ChunkedArray:
        values = pc.cast(t[col], pa.float64())
        return pc.fill_null(pc.is_in(values, value_set=pa.array(codes, pa.float64())), False)

    return fails


def _no_vital(t: pa.Table) -> pa.ChunkedArray:
    present = [pc.is_valid(t[v]) for v in c.VITAL_NAMES if v in t.column_names]
    present.append(pc.is_valid(t[c.BLOOD_PRESSURE]))
    any_present = present[0]
    for p in present[1:]:
        any_present = pc.or_(any_present, p)
    return pc.invert(any_present)


def _not_in(col: str, allowed: tuple[str, ...]) -> Callable[[pa.Table], pa.ChunkedArray]:
    values = pa.array(allowed, pa.string())
    return lambda t: pc.and_kleene(pc.is_valid(t[col]), pc.invert(pc.is_in(t[col], value_set=values)))


def _clinically_abnormal(col: str, lo: float, hi: float) -> Callable[[pa.Table], pa.ChunkedArray]:
    return _outside(col, lo, hi)


def _systolic_not_above_diastolic(t: pa.Table) -> pa.ChunkedArray:
    return pc.and_kleene(
        pc.and_(pc.is_valid(t[c.SYSTOLIC]), pc.is_valid(t[c.DIASTOLIC])),  # detail quotes systolic
        pc.less_equal(t[c.SYSTOLIC], t[c.DIASTOLIC]),
    )


# Applied to the "normalised" batch: blood pressure already split into systolic/diastolic.
SILVER_EXPECTATIONS: Final[tuple[Expectation, ...]] = (
    Expectation(
        "patient_id_required", "drop", "patient_id is present", c.PATIENT_ID, _is_null_or_empty(c.PATIENT_ID)
    ),
    Expectation(
        "patient_id_format",
        "drop",
        "patient_id is 1-128 letters, digits, '_', '.', ':' or '-' (no control characters)",
        c.PATIENT_ID,
        _present_and_not_identifier(c.PATIENT_ID),
    ),
    Expectation(
        "device_id_format",
        "drop",
        "device_id, when present, is a plain identifier",
        c.DEVICE_ID,
        _present_and_not_identifier(c.DEVICE_ID),
    ),
    Expectation(
        "event_id_format",
        "drop",
        "event_id, when present, is a plain identifier",
        c.EVENT_ID,
        _present_and_not_identifier(c.EVENT_ID),
    ),
    Expectation(
        "supersedes_format",
        "drop",
        "supersedes, when present, is the plain event_id of the reading it corrects",
        c.SUPERSEDES,
        _present_and_not_identifier(c.SUPERSEDES),
    ),
    Expectation(
        "timestamp_required", "drop", "timestamp is present", c.TIMESTAMP, _is_null_or_empty(c.TIMESTAMP)
    ),
    Expectation(
        "timestamp_iso8601_with_offset",
        "drop",
        "timestamp is ISO 8601 with a UTC offset",
        c.TIMESTAMP,
        _present_and_not_matching(c.TIMESTAMP, ISO_TIMESTAMP_RE),
    ),
    Expectation(
        "blood_pressure_format",
        "drop",
        "blood_pressure, when sent as text, is 'systolic/diastolic'",
        c.BLOOD_PRESSURE,
        _present_and_not_matching(c.BLOOD_PRESSURE, BLOOD_PRESSURE_RE),
    ),
    Expectation("vital_required", "drop", "at least one vital sign is present", None, _no_vital),
    Expectation(
        "temperature_unit_known",
        "drop",
        "temperature_unit, when present, is Celsius (Cel) or Fahrenheit ([degF])",
        c.TEMPERATURE_UNIT,
        _not_in(c.TEMPERATURE_UNIT, CELSIUS_UNITS + FAHRENHEIT_UNITS),
    ),
    Expectation(
        "consciousness_acvpu",
        "drop",
        "consciousness, when present, is one ACVPU letter",
        c.CONSCIOUSNESS,
        _not_in(c.CONSCIOUSNESS, ACVPU + tuple(x.lower() for x in ACVPU)),
    ),
    *(
        Expectation(f"{v.name}_finite", "drop", f"{v.name} is a finite number", v.name, _not_finite(v.name))
        for v in c.VITAL_SIGNS
    ),
    *(
        Expectation(
            f"{v.name}_possible_range",
            "drop",
            f"{v.name} is physiologically possible: {v.possible[0]}-{v.possible[1]} {v.unit}",
            v.name,
            _outside(v.name, *v.possible),
        )
        for v in c.VITAL_SIGNS
    ),
    *(
        Expectation(
            f"{v.name}_device_code",
            "drop",
            f"{v.name} is not a device's no-reading code ({', '.join(f'{x:g}' for x in v.no_reading_codes)})",
            v.name,
            _one_of(v.name, v.no_reading_codes),
        )
        for v in c.VITAL_SIGNS
        if v.no_reading_codes
    ),
    Expectation(
        "systolic_above_diastolic", "drop", "systolic > diastolic", c.SYSTOLIC, _systolic_not_above_diastolic
    ),
    # Real but abnormal: kept in Silver (and flagged there), counted here.
    *(
        Expectation(
            f"{v.name}_clinically_normal",
            "warn",
            f"{v.name} within the adult reference range {v.normal[0]}-{v.normal[1]} {v.unit}",
            v.name,
            _clinically_abnormal(v.name, *v.normal),
        )
        for v in c.VITAL_SIGNS
    ),
)
EXPECTATIONS_BY_NAME: Final = {e.name: e for e in SILVER_EXPECTATIONS}

# Parser-level failures: the record never became a row to check.
RULE_MALFORMED_JSON: Final = "malformed_json"
RULE_NOT_UTF8: Final = "not_utf8"
RULE_WRONG_TYPE: Final = "wrong_type"
RULE_NOT_AN_OBJECT: Final = "not_a_json_object"
RULE_TOO_LARGE: Final = "record_too_large"  # over c.MAX_RECORD_BYTES: no reading is that large
RULE_BAD_ENVELOPE: Final = "bad_envelope"  # a Pub/Sub message shaped like an envelope that cannot be unpacked
RULE_UNREADABLE: Final = "unreadable_record"  # the gate raised on this record alone (a bug): named, isolated
PARSER_RULES: Final = (
    RULE_MALFORMED_JSON,
    RULE_NOT_UTF8,
    RULE_WRONG_TYPE,
    RULE_NOT_AN_OBJECT,
    RULE_TOO_LARGE,
    RULE_BAD_ENVELOPE,
    RULE_UNREADABLE,
)

# A device whose clock was never set reports its epoch (1970 Unix, 1980 GPS, 2000 RTC): a reading
# before c.PLAUSIBLE_AFTER is quarantined in every mode, streaming, replay and training alike.
RULE_TIMESTAMP_IMPLAUSIBLE: Final = "timestamp_before_plausible_floor"
# Timestamp sanity, against each record's ingest time (so a replay of Bronze judges as the stream did).
RULE_TIMESTAMP_IN_FUTURE: Final = "timestamp_in_future"  # beyond the clock-skew tolerance
RULE_TIMESTAMP_TOO_OLD: Final = "timestamp_older_than_lateness"  # Gold could no longer count it
TIME_RULES: Final = (RULE_TIMESTAMP_IN_FUTURE, RULE_TIMESTAMP_TOO_OLD)

# Batch-level "fail" rule: most of a batch rejected means something systematic (an upstream schema
# change, a broken device firmware), not bad luck. Nothing stops; the alert metric fires.
RULE_QUARANTINE_RATIO: Final = "batch_quarantine_ratio_below_half"
MAX_QUARANTINE_RATIO: Final = 0.5


@dataclass
class RuleFailures:
    """Which rows failed which expectations in one batch."""

    drop: np.ndarray  # bool per row: send to quarantine
    rules: dict[int, list[str]]  # row -> names of failed expectations (only failing rows appear)
    details: dict[int, str]  # row -> the offending value(s), e.g. "heart_rate=999.0"
    counts: dict[str, int]  # expectation -> rows failing it


def evaluate(table: pa.Table) -> RuleFailures:
    """Evaluate every expectation over a batch: one vectorised mask per rule, Python only for failures."""
    n = table.num_rows
    drop = np.zeros(n, dtype=bool)
    rules: dict[int, list[str]] = {}
    details: dict[int, str] = {}
    counts: dict[str, int] = {}
    for exp in SILVER_EXPECTATIONS:
        mask = pc.fill_null(exp.fails(table), False)
        idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        counts[exp.name] = int(idx.size)
        if idx.size == 0:
            continue
        if exp.action != "drop":
            continue  # warn: counted, the row stays
        drop[idx] = True
        values = table[exp.column].take(pa.array(idx)).to_pylist() if exp.column else [None] * idx.size
        for i, value in zip(idx.tolist(), values, strict=True):  # only the failing rows: rare by construction
            rules.setdefault(i, []).append(exp.name)
            text = f"{exp.column}={value!r}" if exp.column else exp.description
            details[i] = f"{details[i]}; {text}" if i in details else text
    return RuleFailures(drop=drop, rules=rules, details=details, counts=counts)


def action_of(rule: str) -> Action:
    if rule == RULE_QUARANTINE_RATIO:
        return "fail"
    exp = EXPECTATIONS_BY_NAME.get(rule)
    return exp.action if exp else "drop"  # parser and timestamp rules reject the record


def dq_metrics(
    *,
    batch_id: str,
    window_start_us: int,
    failed: dict[str, int],
    checked: dict[str, int],
    layer: str = "silver",
) -> pa.Table:
    """One ``c.DQ_METRICS_SCHEMA`` row per rule evaluated on a batch."""
    rules = sorted(checked)
    n_checked = [checked[r] for r in rules]
    n_failed = [failed.get(r, 0) for r in rules]
    window = pa.array([window_start_us] * len(rules), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            c.BATCH_ID: [batch_id] * len(rules),
            c.WINDOW_START: window,
            c.LAYER: [layer] * len(rules),
            c.RULE: rules,
            c.ACTION: [action_of(r) for r in rules],
            c.CHECKED_ROWS: pa.array(n_checked, pa.int64()),
            c.PASSED_ROWS: pa.array([k - f for k, f in zip(n_checked, n_failed, strict=True)], pa.int64()),
            c.FAILED_ROWS: pa.array(n_failed, pa.int64()),
            c.EVENT_DATE: window.cast(pa.date32()),
        },
        schema=c.DQ_METRICS_SCHEMA,
    )
