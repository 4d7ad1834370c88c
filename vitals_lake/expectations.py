"""Data-quality expectations for readings, declared once by name (like Delta Live Tables' expect).

Each expectation is a vectorised check over a whole parsed batch: it returns a boolean mask of the
rows that FAIL it, so a batch of any size costs a handful of Arrow kernels, not a Python call per row.
``drop`` sends the row to quarantine with the rule's name; ``warn`` keeps it and only counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c

Action = Literal["drop", "warn"]

# ISO 8601 date-time with a mandatory UTC offset (Z or ±HH:MM / ±HHMM): a bare local time is ambiguous.
ISO_TIMESTAMP_RE: Final = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?"
    r"(Z|[+-]([01]\d|2[0-3]):?[0-5]\d)$"
)
ID_RE: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
BLOOD_PRESSURE_RE: Final = r"^(?P<systolic>\d{2,3})/(?P<diastolic>\d{2,3})$"


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


def _not_finite(col: str) -> Callable[[pa.Table], pa.ChunkedArray]:
    return lambda t: pc.and_kleene(pc.is_valid(t[col]), pc.invert(pc.is_finite(t[col])))


def _outside(col: str, lo: float, hi: float) -> Callable[[pa.Table], pa.ChunkedArray]:
    def fails(t: pa.Table) -> pa.ChunkedArray:
        v = t[col]
        return pc.and_kleene(pc.is_finite(v), pc.or_(pc.less(v, lo), pc.greater(v, hi)))

    return fails


def _no_vital(t: pa.Table) -> pa.ChunkedArray:
    present = [pc.is_valid(t[v]) for v in c.VITAL_NAMES if v in t.column_names]
    present.append(pc.is_valid(t[c.BLOOD_PRESSURE]))
    any_present = present[0]
    for p in present[1:]:
        any_present = pc.or_(any_present, p)
    return pc.invert(any_present)


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
        _present_and_not_matching(c.PATIENT_ID, ID_RE),
    ),
    Expectation(
        "device_id_format",
        "drop",
        "device_id, when present, is a plain identifier",
        c.DEVICE_ID,
        _present_and_not_matching(c.DEVICE_ID, ID_RE),
    ),
    Expectation(
        "event_id_format",
        "drop",
        "event_id, when present, is a plain identifier",
        c.EVENT_ID,
        _present_and_not_matching(c.EVENT_ID, ID_RE),
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
    Expectation(
        "systolic_above_diastolic", "drop", "systolic > diastolic", c.SYSTOLIC, _systolic_not_above_diastolic
    ),
)
EXPECTATIONS_BY_NAME: Final = {e.name: e for e in SILVER_EXPECTATIONS}

# Parser-level failures: the record never became a row to check.
RULE_MALFORMED_JSON: Final = "malformed_json"
RULE_NOT_UTF8: Final = "not_utf8"
RULE_WRONG_TYPE: Final = "wrong_type"
RULE_NOT_AN_OBJECT: Final = "not_a_json_object"
PARSER_RULES: Final = (RULE_MALFORMED_JSON, RULE_NOT_UTF8, RULE_WRONG_TYPE, RULE_NOT_AN_OBJECT)


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
        if exp.action == "drop":
            drop[idx] = True
        values = table[exp.column].take(pa.array(idx)).to_pylist() if exp.column else [None] * idx.size
        for i, value in zip(idx.tolist(), values, strict=True):  # only the failing rows: rare by construction
            rules.setdefault(i, []).append(exp.name)
            text = f"{exp.column}={value!r}" if exp.column else exp.description
            details[i] = f"{details[i]}; {text}" if i in details else text
    return RuleFailures(drop=drop, rules=rules, details=details, counts=counts)
