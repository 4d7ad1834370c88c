"""NEWS2 (Royal College of Physicians, 2017), scored for a whole batch of readings at once.

``score_news2`` turns a table of readings into the NEWS2 Silver columns: one sub-score per parameter
of ``contract.NEWS2_PARAMETERS``, the aggregate, how many parameters could not be scored, and the
clinical response. Everything is vectorised (NumPy / Arrow compute): no Python loop per reading.

Band edges are those of the RCP chart (NEWS2, Royal College of Physicians, 2017), points per band:

=================  =====  =======  =========  ==================  ===========  ===========  ============
parameter          3      2        1          0                   1            2            3
=================  =====  =======  =========  ==================  ===========  ===========  ============
respiration /min   ≤8              9–11       12–20                            21–24        ≥25
SpO2 scale 1 %     ≤91    92–93    94–95      ≥96
SpO2 scale 2 %     ≤83    84–85    86–87      88–92, ≥93 on air   93–94 on O2  95–96 on O2  ≥97 on O2
air or oxygen             oxygen              air
systolic BP mmHg   ≤90    91–100   101–110    111–219                                       ≥220
pulse /min         ≤40             41–50      51–90               91–110       111–130      ≥131
consciousness                                 alert                                         new confusion,
                                                                                            V, P or U
temperature °C     ≤35.0           35.1–36.0  36.1–38.0           38.1–39.0    ≥39.1
=================  =====  =======  =========  ==================  ===========  ===========  ============

An aggregate of 5–6, or 3 in any single parameter, calls for an urgent review; 7 or more for an
emergency response. Scale 2 is for patients with hypercapnic respiratory failure (target 88–92 %).
Decisions the chart leaves open:

* **Values between published bands** (the chart's bands are whole numbers, temperature in tenths):
  every band is scored by its *upper* published edge, i.e. a band is the half-open interval
  ``(previous upper edge, upper edge]``. So RR ≤ 8 → 3, ≤ 11 → 1, ≤ 20 → 0, ≤ 24 → 2, else 3;
  SpO2 (scale 1) ≤ 91 → 3, ≤ 93 → 2, ≤ 95 → 1, else 0; temperature ≤ 35.0 → 3, ≤ 36.0 → 1,
  ≤ 38.0 → 0, ≤ 39.0 → 1, else 2. An in-between value scores like the next published value up:
  RR 20.5 → 2 (as 21), SpO2 91.5 → 2 (as 92), temperature 35.05 → 1 (as 35.1), 38.05 → 1.
  (Silver stores RR, heart rate and systolic as integers, so in practice this matters for SpO2 and
  temperature.)
* **Floating-point noise**: inputs are rounded to 6 decimals before banding, so a unit conversion
  that lands a hair off a published value (100.58 °F → 38.099999999999994 °C) scores as intended.
* **Defaults** (the device contract): a null ``supplemental_oxygen`` means room air (0 points); a
  null ``consciousness`` means alert (0 points); a null ``spo2_scale`` means scale 1. The optional
  columns ``consciousness``, ``supplemental_oxygen`` and ``spo2_scale`` may be absent altogether
  (all defaults); the five measured columns must be present.
* **What cannot be scored** gets a null sub-score and counts in ``news2_missing``: a null, NaN or
  infinite measured value (RR, SpO2, systolic, heart rate, temperature), a consciousness value that
  is not one of the ACVPU letters (case-insensitive, surrounding blanks ignored; "" is unknown,
  not alert), and SpO2 under a scale that is neither 1 nor 2. The aggregate is then the sum of the
  sub-scores that exist: a floor of the true score, never null.
* **Response**: "high" for an aggregate ≥ 7, "medium" for 5–6, "low-medium" for a 3 in any single
  parameter (aggregate < 5), else "low".
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Int8Array = npt.NDArray[np.int8]

# Rounding before banding absorbs unit-conversion noise but keeps real in-between values (35.05).
_DECIMALS: Final = 6

# (upper edges, points): a value scores points[i] for the first edge it is <= to, else points[-1].
_RR_BANDS: Final = ((8.0, 11.0, 20.0, 24.0), (3, 1, 0, 2, 3))
_SYSTOLIC_BANDS: Final = ((90.0, 100.0, 110.0, 219.0), (3, 2, 1, 0, 3))
_HEART_RATE_BANDS: Final = ((40.0, 50.0, 90.0, 110.0, 130.0), (3, 1, 0, 1, 2, 3))
_TEMPERATURE_BANDS: Final = ((35.0, 36.0, 38.0, 39.0), (3, 1, 0, 1, 2))
_SPO2_SCALE1_BANDS: Final = ((91.0, 93.0, 95.0), (3, 2, 1, 0))
# Scale 2 (hypercapnic respiratory failure, target 88–92 %): above 92 % it only scores on oxygen,
# where over-oxygenation is the danger.
_SPO2_SCALE2_AIR_BANDS: Final = ((83.0, 85.0, 87.0), (3, 2, 1, 0))
_SPO2_SCALE2_OXYGEN_BANDS: Final = ((83.0, 85.0, 87.0, 92.0, 94.0, 96.0), (3, 2, 1, 0, 1, 2, 3))
_OXYGEN_POINTS: Final = 2
_ACVPU: Final = ("A", "C", "V", "P", "U")  # alert, new confusion, voice, pain, unresponsive
_ACVPU_POINTS: Final = (0, 3, 3, 3, 3)
SCALE_1: Final = 1
SCALE_2: Final = 2

_MEDIUM_FROM: Final = 5  # aggregate 5–6: urgent review
_HIGH_FROM: Final = 7  # aggregate ≥ 7: emergency response
_RED_SCORE: Final = 3  # a 3 in any single parameter: urgent ward-based review ("low-medium")
_LOW, _LOW_MEDIUM, _MEDIUM, _HIGH = range(len(c.NEWS2_RESPONSES))  # contract order: low → high

_MEASURED: Final = (c.RESPIRATION_RATE, c.SPO2, c.SYSTOLIC, c.HEART_RATE, c.TEMPERATURE)
_FIELDS: Final = {f.name: f for f in c.CLINICAL_FIELDS}
_OUTPUT_NAMES: Final = (
    *(c.news2_subscore_column(p) for p in c.NEWS2_PARAMETERS),
    c.NEWS2_SCORE,
    c.NEWS2_MISSING,
    c.NEWS2_RESPONSE,
)
OUTPUT_SCHEMA: Final = pa.schema([_FIELDS[name] for name in _OUTPUT_NAMES])


# --- Column helpers (shared with vitals_lake.clinical) ---------------------------------------------
def float_column(table: pa.Table, name: str) -> FloatArray:
    """A numeric column as float64, rounded to 6 decimals; null, NaN and ±inf all become NaN."""
    values = np.asarray(pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # rounding 1e308 overflows: keep such values as is
        rounded = np.round(values, _DECIMALS)
    rounded = np.where(np.isfinite(rounded), rounded, values)
    rounded[~np.isfinite(rounded)] = np.nan
    return rounded


def spo2_scale_column(table: pa.Table) -> FloatArray:
    """The SpO2 scale per row (null or absent column → 1); any other value than 1 or 2 is kept as is."""
    if c.SPO2_SCALE not in table.column_names:
        return np.full(table.num_rows, float(SCALE_1))
    scale = float_column(table, c.SPO2_SCALE)
    scale[np.isnan(scale)] = SCALE_1  # the documented default
    return scale


def _banded(values: FloatArray, bands: tuple[tuple[float, ...], tuple[int, ...]]) -> Int8Array:
    edges, points = bands
    # right=True: index i means edges[i-1] < value <= edges[i], i.e. upper-edge bands.
    index = np.digitize(np.nan_to_num(values), edges, right=True)
    return np.asarray(points, dtype=np.int8)[index]


def _oxygen(table: pa.Table) -> BoolArray:
    if c.SUPPLEMENTAL_OXYGEN not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.bool_)
    on_oxygen = pc.fill_null(pc.cast(table.column(c.SUPPLEMENTAL_OXYGEN), pa.bool_()), False)  # null: air
    return np.asarray(on_oxygen.to_numpy(zero_copy_only=False), dtype=np.bool_)


def _consciousness(table: pa.Table) -> tuple[Int8Array, BoolArray]:
    """Points and an "unknown" mask; null input is alert (0 points), an unknown letter is unscored."""
    if c.CONSCIOUSNESS not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.int8), np.zeros(table.num_rows, dtype=np.bool_)
    raw = pc.cast(table.column(c.CONSCIOUSNESS), pa.string())
    letter = pc.utf8_upper(pc.utf8_trim_whitespace(raw))
    index = pc.fill_null(pc.index_in(letter, value_set=pa.array(_ACVPU)), -1).to_numpy(zero_copy_only=False)
    absent = np.asarray(pc.is_null(raw).to_numpy(zero_copy_only=False), dtype=np.bool_)
    unknown = (index < 0) & ~absent
    points = np.asarray(_ACVPU_POINTS, dtype=np.int8)[np.where(index < 0, 0, index)]
    return np.where(unknown, np.int8(0), points).astype(np.int8), unknown


def _spo2(spo2: FloatArray, scale: FloatArray, on_oxygen: BoolArray) -> tuple[Int8Array, BoolArray]:
    points = np.select(
        [scale == SCALE_1, on_oxygen],
        [_banded(spo2, _SPO2_SCALE1_BANDS), _banded(spo2, _SPO2_SCALE2_OXYGEN_BANDS)],
        default=_banded(spo2, _SPO2_SCALE2_AIR_BANDS),
    ).astype(np.int8)
    unscored = np.isnan(spo2) | ~((scale == SCALE_1) | (scale == SCALE_2))
    return points, unscored


def score_news2(table: pa.Table) -> pa.Table:
    """NEWS2 sub-scores, aggregate, missing count and response for every row of ``table``.

    Reads RESPIRATION_RATE, SPO2, SYSTOLIC, HEART_RATE, TEMPERATURE (°C) and, when present,
    SPO2_SCALE, SUPPLEMENTAL_OXYGEN and CONSCIOUSNESS. Returns a table with the same number of rows
    and the columns (and Arrow types) of ``OUTPUT_SCHEMA``, in contract order.
    """
    missing_columns = [name for name in _MEASURED if name not in table.column_names]
    if missing_columns:
        raise KeyError(f"score_news2 needs the measured columns {missing_columns}")
    n = table.num_rows
    on_oxygen = _oxygen(table)
    spo2 = float_column(table, c.SPO2)
    spo2_points, spo2_unscored = _spo2(spo2, spo2_scale_column(table), on_oxygen)
    c_points, c_unknown = _consciousness(table)
    parts: dict[str, tuple[Int8Array, BoolArray]] = {
        c.SPO2: (spo2_points, spo2_unscored),
        c.SUPPLEMENTAL_OXYGEN: (
            np.where(on_oxygen, _OXYGEN_POINTS, 0).astype(np.int8),
            np.zeros(n, np.bool_),
        ),
        c.CONSCIOUSNESS: (c_points, c_unknown),
    }
    for name, bands in (
        (c.RESPIRATION_RATE, _RR_BANDS),
        (c.SYSTOLIC, _SYSTOLIC_BANDS),
        (c.HEART_RATE, _HEART_RATE_BANDS),
        (c.TEMPERATURE, _TEMPERATURE_BANDS),
    ):
        values = float_column(table, name)
        parts[name] = (_banded(values, bands), np.isnan(values))

    points = np.stack([np.where(parts[p][1], 0, parts[p][0]) for p in c.NEWS2_PARAMETERS])
    unscored = np.stack([parts[p][1] for p in c.NEWS2_PARAMETERS])
    score = points.sum(axis=0).astype(np.int8)  # at most 20: fits int8
    missing = unscored.sum(axis=0).astype(np.int8)
    any_red = (points == _RED_SCORE).any(axis=0)  # unscored parameters hold 0 here
    response = np.select(
        [score >= _HIGH_FROM, score >= _MEDIUM_FROM, any_red], [_HIGH, _MEDIUM, _LOW_MEDIUM], default=_LOW
    )

    columns = [pa.array(parts[p][0], type=pa.int8(), mask=parts[p][1]) for p in c.NEWS2_PARAMETERS]
    columns += [
        pa.array(score, type=pa.int8()),
        pa.array(missing, type=pa.int8()),
        pc.take(pa.array(c.NEWS2_RESPONSES, type=pa.string()), pa.array(response, type=pa.int32())),
    ]
    return pa.Table.from_arrays(columns, schema=OUTPUT_SCHEMA)


# --- Test oracle ------------------------------------------------------------------------------------
def _reference_number(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return round(number, _DECIMALS) if math.isfinite(number) else None


def news2_reference(**values: object) -> int:
    """Aggregate NEWS2 of one reading, plain if/else straight from the chart; a test oracle only.

    Keyword names are the contract's field names (plus SPO2_SCALE); absent means null. Written
    independently of ``score_news2`` (descending strict thresholds instead of binned edges), with the
    same conventions: upper-edge bands, defaults for null oxygen / consciousness / scale, unscorable
    values contributing nothing.
    """
    unknown = set(values) - {*c.NEWS2_PARAMETERS, c.SPO2_SCALE}
    if unknown:
        raise TypeError(f"news2_reference got unknown fields {sorted(unknown)}")
    total = 0

    rr = _reference_number(values.get(c.RESPIRATION_RATE))
    if rr is not None:
        if rr > 24:
            total += 3
        elif rr > 20:
            total += 2
        elif rr > 11:
            total += 0
        elif rr > 8:
            total += 1
        else:
            total += 3

    oxygen = values.get(c.SUPPLEMENTAL_OXYGEN) is True
    if oxygen:
        total += 2

    scale_value = _reference_number(values.get(c.SPO2_SCALE))
    scale = 1 if scale_value is None else scale_value
    spo2 = _reference_number(values.get(c.SPO2))
    if spo2 is not None and scale == 1:
        if spo2 > 95:
            total += 0
        elif spo2 > 93:
            total += 1
        elif spo2 > 91:
            total += 2
        else:
            total += 3
    elif spo2 is not None and scale == 2:
        if spo2 > 92 and not oxygen:
            total += 0
        elif spo2 > 96:
            total += 3
        elif spo2 > 94:
            total += 2
        elif spo2 > 92:
            total += 1
        elif spo2 > 87:
            total += 0
        elif spo2 > 85:
            total += 1
        elif spo2 > 83:
            total += 2
        else:
            total += 3

    systolic = _reference_number(values.get(c.SYSTOLIC))
    if systolic is not None:
        if systolic > 219:
            total += 3
        elif systolic > 110:
            total += 0
        elif systolic > 100:
            total += 1
        elif systolic > 90:
            total += 2
        else:
            total += 3

    pulse = _reference_number(values.get(c.HEART_RATE))
    if pulse is not None:
        if pulse > 130:
            total += 3
        elif pulse > 110:
            total += 2
        elif pulse > 90:
            total += 1
        elif pulse > 50:
            total += 0
        elif pulse > 40:
            total += 1
        else:
            total += 3

    level = values.get(c.CONSCIOUSNESS)
    if isinstance(level, str) and level.strip().upper() in ("C", "V", "P", "U"):
        total += 3

    temperature = _reference_number(values.get(c.TEMPERATURE))
    if temperature is not None:
        if temperature > 39.0:
            total += 2
        elif temperature > 38.0:
            total += 1
        elif temperature > 36.0:
            total += 0
        elif temperature > 35.0:
            total += 1
        else:
            total += 3

    return total
