"""Derived haemodynamics and alert flags: values by hand, both sides of every threshold, nulls."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitals_lake import contract as c
from vitals_lake.clinical import OUTPUT_SCHEMA, derive_clinical

NORMAL = {
    c.HEART_RATE: 70,
    c.SYSTOLIC: 120,
    c.DIASTOLIC: 80,
    c.SPO2: 98.0,
    c.TEMPERATURE: 37.0,
    c.RESPIRATION_RATE: 16,
    c.SPO2_SCALE: 1,
}
TYPES = {
    c.HEART_RATE: pa.int16(),
    c.SYSTOLIC: pa.int16(),
    c.DIASTOLIC: pa.int16(),
    c.SPO2: pa.float64(),
    c.TEMPERATURE: pa.float64(),
    c.RESPIRATION_RATE: pa.int16(),
    c.SPO2_SCALE: pa.int8(),
}
FLOATS = dict.fromkeys(TYPES, pa.float64())


def table_of(rows, types=TYPES):
    return pa.table({name: pa.array([r[name] for r in rows], type=types[name]) for name in types})


def derive_one(types=TYPES, **changes):
    return derive_clinical(table_of([{**NORMAL, **changes}], types)).to_pylist()[0]


def flags_of(row):
    return {f for f in c.ALERT_FLAGS if row[c.flag_column(f)]}


def test_normal_reading_raises_no_flag():
    row = derive_one()
    assert flags_of(row) == set()
    assert all(row[c.flag_column(f)] is False for f in c.ALERT_FLAGS)


def test_map_and_shock_index_by_hand():
    row = derive_one(**{c.SYSTOLIC: 120, c.DIASTOLIC: 75, c.HEART_RATE: 90})
    assert row[c.MEAN_ARTERIAL_PRESSURE] == pytest.approx(90.0)  # (120 + 150) / 3
    assert row[c.SHOCK_INDEX] == pytest.approx(0.75)  # 90 / 120
    row = derive_one(**{c.SYSTOLIC: 100, c.DIASTOLIC: 70, c.HEART_RATE: 120})
    assert row[c.MEAN_ARTERIAL_PRESSURE] == pytest.approx(80.0)
    assert row[c.SHOCK_INDEX] == pytest.approx(1.2)


# (flag, changes, expected): the threshold on both sides.
EDGES = [
    ("tachycardia", {c.HEART_RATE: 100}, False),
    ("tachycardia", {c.HEART_RATE: 101}, True),
    ("bradycardia", {c.HEART_RATE: 50}, False),
    ("bradycardia", {c.HEART_RATE: 49}, True),
    ("hypoxia", {c.SPO2: 92.0}, False),
    ("hypoxia", {c.SPO2: 91.9}, True),
    ("hypoxia", {c.SPO2: 91.9, c.SPO2_SCALE: None}, True),  # null scale: scale 1
    ("hypoxia", {c.SPO2: 88.0, c.SPO2_SCALE: 2}, False),
    ("hypoxia", {c.SPO2: 87.9, c.SPO2_SCALE: 2}, True),
    ("fever", {c.TEMPERATURE: 38.0}, False),
    ("fever", {c.TEMPERATURE: 38.1}, True),
    ("fever", {c.TEMPERATURE: (100.58 - 32) * 5 / 9}, True),  # 38.099999999999994 from °F
    ("hypothermia", {c.TEMPERATURE: 35.0}, True),
    ("hypothermia", {c.TEMPERATURE: 35.1}, False),
    ("hypotension", {c.SYSTOLIC: 90, c.DIASTOLIC: 70}, True),  # systolic ≤ 90 (MAP 76.7)
    ("hypotension", {c.SYSTOLIC: 91, c.DIASTOLIC: 70}, False),  # MAP 77
    ("hypotension", {c.SYSTOLIC: 101, c.DIASTOLIC: 46.5}, True),  # MAP 194 / 3 = 64.67 < 65
    ("hypotension", {c.SYSTOLIC: 101, c.DIASTOLIC: 47}, False),  # MAP 195 / 3 = exactly 65
    ("hypertension", {c.SYSTOLIC: 179, c.DIASTOLIC: 109}, False),
    ("hypertension", {c.SYSTOLIC: 180, c.DIASTOLIC: 80}, True),
    ("hypertension", {c.SYSTOLIC: 150, c.DIASTOLIC: 110}, True),
    ("tachypnoea", {c.RESPIRATION_RATE: 24}, False),
    ("tachypnoea", {c.RESPIRATION_RATE: 25}, True),
]


@pytest.mark.parametrize(("flag", "changes", "expected"), EDGES, ids=repr)
def test_flag_thresholds(flag, changes, expected):
    row = derive_one(FLOATS, **changes)
    assert row[c.flag_column(flag)] is expected
    # No other flag is dragged along (the edge values are chosen to be otherwise normal).
    assert flags_of(row) - {flag} == set()


def test_every_contract_flag_is_produced():
    out = derive_clinical(table_of([NORMAL]))
    assert out.column_names == [
        c.MEAN_ARTERIAL_PRESSURE,
        c.SHOCK_INDEX,
        *(c.flag_column(f) for f in c.ALERT_FLAGS),
    ]
    fields = {f.name: f for f in c.CLINICAL_FIELDS}
    assert out.schema == OUTPUT_SCHEMA
    for name in out.column_names:
        assert out.schema.field(name).type == fields[name].type


@pytest.mark.parametrize(
    ("null", "null_columns"),
    [
        (c.HEART_RATE, {c.SHOCK_INDEX, c.flag_column("tachycardia"), c.flag_column("bradycardia")}),
        (c.SPO2, {c.flag_column("hypoxia")}),
        (c.TEMPERATURE, {c.flag_column("fever"), c.flag_column("hypothermia")}),
        (c.RESPIRATION_RATE, {c.flag_column("tachypnoea")}),
        (
            c.SYSTOLIC,
            {
                c.MEAN_ARTERIAL_PRESSURE,
                c.SHOCK_INDEX,
                c.flag_column("hypotension"),
                c.flag_column("hypertension"),
            },
        ),
        (
            c.DIASTOLIC,
            {c.MEAN_ARTERIAL_PRESSURE, c.flag_column("hypotension"), c.flag_column("hypertension")},
        ),
    ],
    ids=str,
)
@pytest.mark.parametrize("missing", [None, math.nan, math.inf])
def test_null_inputs_give_null_outputs(null, null_columns, missing):
    row = derive_one(FLOATS, **{null: missing})
    assert {name for name, value in row.items() if value is None} == null_columns


def test_two_criteria_flags_use_three_valued_logic():
    # One known criterion met decides even when the other input is missing ...
    row = derive_one(**{c.SYSTOLIC: 85, c.DIASTOLIC: None})
    assert row[c.flag_column("hypotension")] is True
    assert row[c.flag_column("hypertension")] is None  # 85 < 180 but diastolic unknown
    row = derive_one(**{c.SYSTOLIC: None, c.DIASTOLIC: 115})
    assert row[c.flag_column("hypertension")] is True
    assert row[c.flag_column("hypotension")] is None


def test_invalid_scale_makes_hypoxia_unknown_and_absent_scale_means_1():
    assert derive_one(**{c.SPO2: 90.0, c.SPO2_SCALE: 3})[c.flag_column("hypoxia")] is None
    t = table_of([{**NORMAL, c.SPO2: 90.0}]).drop_columns([c.SPO2_SCALE])
    assert derive_clinical(t)[c.flag_column("hypoxia")].to_pylist() == [True]


def test_zero_systolic_gives_null_shock_index():
    assert derive_one(**{c.SYSTOLIC: 0})[c.SHOCK_INDEX] is None


def test_a_missing_column_is_an_error():
    with pytest.raises(KeyError, match=c.DIASTOLIC):
        derive_clinical(table_of([NORMAL]).drop_columns([c.DIASTOLIC]))


def test_a_batch_is_scored_row_by_row():
    rows = [NORMAL, {**NORMAL, c.HEART_RATE: 130, c.SYSTOLIC: 85}, {**NORMAL, c.TEMPERATURE: 39.0}]
    out = derive_clinical(table_of(rows))
    assert [flags_of(r) for r in out.to_pylist()] == [set(), {"tachycardia", "hypotension"}, {"fever"}]
    assert out[c.SHOCK_INDEX].to_pylist() == pytest.approx([70 / 120, 130 / 85, 70 / 120])
    assert derive_clinical(table_of([])).num_rows == 0


ANY = st.none() | st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries(dict.fromkeys(TYPES, ANY)), max_size=20))
def test_no_input_raises(rows):
    out = derive_clinical(table_of(rows, FLOATS))
    assert out.num_rows == len(rows)
    for row in out.to_pylist():
        for name in (c.MEAN_ARTERIAL_PRESSURE, c.SHOCK_INDEX):
            assert row[name] is None or math.isfinite(row[name])
