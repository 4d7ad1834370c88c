"""Derived haemodynamics and simple alert flags for Silver, computed for a whole batch at once.

``derive_clinical`` returns mean arterial pressure, shock index and one boolean per
``contract.ALERT_FLAGS``. All thresholds live in the constants below, each with its reason.

Nulls: a derived value is null when an input it needs is null (NaN and ±inf count as null; a shock
index over a systolic of 0 is null). A flag with two criteria (hypotension, hypertension) follows
three-valued logic: true when either known criterion is met, false when both are known and unmet,
null otherwise. Hypoxia is null for an SpO2 scale other than 1 or 2 (null scale means scale 1).
Inputs are rounded to 6 decimals first (as in ``vitals_lake.news2``), so °F → °C conversion noise
(100.58 °F → 38.099999999999994 °C) does not move a reading across a threshold.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pyarrow as pa

from vitals_lake import contract as c
from vitals_lake.news2 import SCALE_1, SCALE_2, BoolArray, FloatArray, float_column, spo2_scale_column

# --- Thresholds (the only place they are set) -------------------------------------------------------
TACHYCARDIA_ABOVE: Final = 100.0  # HR > 100/min: the adult definition of tachycardia
BRADYCARDIA_BELOW: Final = 50.0  # HR < 50/min: symptomatic-range bradycardia (below 60 is common in the fit)
HYPOXIA_BELOW_SCALE_1: Final = 92.0  # SpO2 < 92 %: below the 94–98 % target by a margin; NEWS2 3-point band
HYPOXIA_BELOW_SCALE_2: Final = 88.0  # SpO2 < 88 %: below the 88–92 % target in hypercapnic failure
FEVER_FROM: Final = 38.1  # temp ≥ 38.1 °C: NEWS2's first pyrexia band (38.1–39.0)
HYPOTHERMIA_UPTO: Final = 35.0  # temp ≤ 35.0 °C: clinical hypothermia; NEWS2 3-point band
HYPOTENSION_SYSTOLIC_UPTO: Final = 90.0  # systolic ≤ 90: NEWS2 3-point band, sepsis hypotension criterion
HYPOTENSION_MAP_BELOW: Final = 65.0  # MAP < 65: the organ-perfusion target (Surviving Sepsis Campaign)
HYPERTENSION_SYSTOLIC_FROM: Final = 180.0  # systolic ≥ 180: grade 3 (severe) hypertension, ESC/ESH
HYPERTENSION_DIASTOLIC_FROM: Final = 110.0  # diastolic ≥ 110: grade 3 (severe) hypertension, ESC/ESH
TACHYPNOEA_FROM: Final = 25.0  # RR ≥ 25/min: NEWS2 3-point band

_FIELDS: Final = {f.name: f for f in c.CLINICAL_FIELDS}
OUTPUT_SCHEMA: Final = pa.schema(
    [
        _FIELDS[c.MEAN_ARTERIAL_PRESSURE],
        _FIELDS[c.SHOCK_INDEX],
        *(_FIELDS[c.flag_column(f)] for f in c.ALERT_FLAGS),
    ]
)
_REQUIRED: Final = (c.HEART_RATE, c.SYSTOLIC, c.DIASTOLIC, c.SPO2, c.TEMPERATURE, c.RESPIRATION_RATE)

# A flag before it becomes Arrow: its value and where it is unknown.
_Flag = tuple[BoolArray, BoolArray]


def _flag(values: FloatArray, criterion: BoolArray) -> _Flag:
    unknown = np.isnan(values)
    return criterion & ~unknown, unknown


def _either(a: _Flag, b: _Flag) -> _Flag:
    # Kleene OR: one known true decides; otherwise any unknown leaves the answer unknown.
    true = a[0] | b[0]
    return true, ~true & (a[1] | b[1])


def derive_clinical(table: pa.Table) -> pa.Table:
    """MAP, shock index and the alert flags for every row of ``table``, typed as in the contract.

    Reads HEART_RATE, SYSTOLIC, DIASTOLIC, SPO2, TEMPERATURE (°C), RESPIRATION_RATE and, when
    present, SPO2_SCALE. Returns a table with the same number of rows and ``OUTPUT_SCHEMA``.
    """
    missing_columns = [name for name in _REQUIRED if name not in table.column_names]
    if missing_columns:
        raise KeyError(f"derive_clinical needs the columns {missing_columns}")
    hr = float_column(table, c.HEART_RATE)
    systolic = float_column(table, c.SYSTOLIC)
    diastolic = float_column(table, c.DIASTOLIC)
    spo2 = float_column(table, c.SPO2)
    temperature = float_column(table, c.TEMPERATURE)
    rr = float_column(table, c.RESPIRATION_RATE)
    scale = spo2_scale_column(table)

    # NaN in, NaN out; x / 0 and overflow from absurd inputs are nulled below.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mean_arterial = (systolic + 2.0 * diastolic) / 3.0
        shock_index = hr / systolic
    shock_index[~np.isfinite(shock_index)] = np.nan
    mean_arterial[~np.isfinite(mean_arterial)] = np.nan

    # Comparisons with NaN are False; _flag masks those rows as unknown anyway.
    with np.errstate(invalid="ignore"):
        hypoxia_value = np.where(scale == SCALE_2, spo2 < HYPOXIA_BELOW_SCALE_2, spo2 < HYPOXIA_BELOW_SCALE_1)
        hypoxia_unknown = np.isnan(spo2) | ~((scale == SCALE_1) | (scale == SCALE_2))
        flags: dict[str, _Flag] = {
            "tachycardia": _flag(hr, hr > TACHYCARDIA_ABOVE),
            "bradycardia": _flag(hr, hr < BRADYCARDIA_BELOW),
            "hypoxia": (hypoxia_value & ~hypoxia_unknown, hypoxia_unknown),
            "fever": _flag(temperature, temperature >= FEVER_FROM),
            "hypothermia": _flag(temperature, temperature <= HYPOTHERMIA_UPTO),
            "hypotension": _either(
                _flag(systolic, systolic <= HYPOTENSION_SYSTOLIC_UPTO),
                _flag(mean_arterial, mean_arterial < HYPOTENSION_MAP_BELOW),
            ),
            "hypertension": _either(
                _flag(systolic, systolic >= HYPERTENSION_SYSTOLIC_FROM),
                _flag(diastolic, diastolic >= HYPERTENSION_DIASTOLIC_FROM),
            ),
            "tachypnoea": _flag(rr, rr >= TACHYPNOEA_FROM),
        }
    if set(flags) != set(c.ALERT_FLAGS):  # the contract grew or renamed a flag: fail loudly
        raise RuntimeError(
            f"derive_clinical computes {sorted(flags)}, contract wants {sorted(c.ALERT_FLAGS)}"
        )

    columns = [
        pa.array(mean_arterial, type=pa.float64(), from_pandas=True),  # from_pandas: NaN → null
        pa.array(shock_index, type=pa.float64(), from_pandas=True),
        *(pa.array(flags[f][0], type=pa.bool_(), mask=flags[f][1]) for f in c.ALERT_FLAGS),
    ]
    return pa.Table.from_arrays(columns, schema=OUTPUT_SCHEMA)
