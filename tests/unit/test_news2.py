"""NEWS2 scoring: every published band edge on both sides, responses and nulls (the oracle property
over generated rows is in tests/property/test_news2_properties.py)."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from vitals_lake import contract as c
from vitals_lake.news2 import OUTPUT_SCHEMA, news2_reference, score_news2

# A healthy adult on room air, alert: NEWS2 0. Each test changes only what it is about.
NORMAL = {
    c.RESPIRATION_RATE: 16,
    c.SPO2: 98.0,
    c.SUPPLEMENTAL_OXYGEN: False,
    c.SYSTOLIC: 120,
    c.HEART_RATE: 70,
    c.CONSCIOUSNESS: "A",
    c.TEMPERATURE: 37.0,
    c.SPO2_SCALE: 1,
}
# The Arrow types Silver holds (integral vitals narrowed to int16, SpO2 scale int8).
TYPES = {
    c.RESPIRATION_RATE: pa.int16(),
    c.SPO2: pa.float64(),
    c.SUPPLEMENTAL_OXYGEN: pa.bool_(),
    c.SYSTOLIC: pa.int16(),
    c.HEART_RATE: pa.int16(),
    c.CONSCIOUSNESS: pa.string(),
    c.TEMPERATURE: pa.float64(),
    c.SPO2_SCALE: pa.int8(),
}
FLOATS = {name: pa.float64() for name in TYPES if name not in (c.CONSCIOUSNESS, c.SUPPLEMENTAL_OXYGEN)}


def table_of(rows, types=TYPES):
    return pa.table({name: pa.array([r[name] for r in rows], type=types[name]) for name in types})


def reading(**changes):
    return {**NORMAL, **changes}


def score_one(**changes):
    return score_news2(table_of([reading(**changes)])).to_pylist()[0]


# (parameter, value, expected sub-score): both sides of every edge in the RCP chart.
EDGES = [
    (c.RESPIRATION_RATE, 8, 3),
    (c.RESPIRATION_RATE, 9, 1),
    (c.RESPIRATION_RATE, 11, 1),
    (c.RESPIRATION_RATE, 12, 0),
    (c.RESPIRATION_RATE, 20, 0),
    (c.RESPIRATION_RATE, 21, 2),
    (c.RESPIRATION_RATE, 24, 2),
    (c.RESPIRATION_RATE, 25, 3),
    (c.SPO2, 91.0, 3),
    (c.SPO2, 92.0, 2),
    (c.SPO2, 93.0, 2),
    (c.SPO2, 94.0, 1),
    (c.SPO2, 95.0, 1),
    (c.SPO2, 96.0, 0),
    (c.SYSTOLIC, 90, 3),
    (c.SYSTOLIC, 91, 2),
    (c.SYSTOLIC, 100, 2),
    (c.SYSTOLIC, 101, 1),
    (c.SYSTOLIC, 110, 1),
    (c.SYSTOLIC, 111, 0),
    (c.SYSTOLIC, 219, 0),
    (c.SYSTOLIC, 220, 3),
    (c.HEART_RATE, 40, 3),
    (c.HEART_RATE, 41, 1),
    (c.HEART_RATE, 50, 1),
    (c.HEART_RATE, 51, 0),
    (c.HEART_RATE, 90, 0),
    (c.HEART_RATE, 91, 1),
    (c.HEART_RATE, 110, 1),
    (c.HEART_RATE, 111, 2),
    (c.HEART_RATE, 130, 2),
    (c.HEART_RATE, 131, 3),
    (c.TEMPERATURE, 35.0, 3),
    (c.TEMPERATURE, 35.1, 1),
    (c.TEMPERATURE, 36.0, 1),
    (c.TEMPERATURE, 36.1, 0),
    (c.TEMPERATURE, 38.0, 0),
    (c.TEMPERATURE, 38.1, 1),
    (c.TEMPERATURE, 39.0, 1),
    (c.TEMPERATURE, 39.1, 2),
    (c.SUPPLEMENTAL_OXYGEN, False, 0),
    (c.SUPPLEMENTAL_OXYGEN, True, 2),
    (c.SUPPLEMENTAL_OXYGEN, None, 0),  # documented default: room air
    (c.CONSCIOUSNESS, "A", 0),
    (c.CONSCIOUSNESS, "C", 3),
    (c.CONSCIOUSNESS, "V", 3),
    (c.CONSCIOUSNESS, "P", 3),
    (c.CONSCIOUSNESS, "U", 3),
    (c.CONSCIOUSNESS, "a", 0),  # case-insensitive
    (c.CONSCIOUSNESS, "c", 3),
    (c.CONSCIOUSNESS, "v", 3),
    (c.CONSCIOUSNESS, "p", 3),
    (c.CONSCIOUSNESS, "u", 3),
    (c.CONSCIOUSNESS, " P ", 3),  # surrounding blanks ignored
    (c.CONSCIOUSNESS, None, 0),  # documented default: alert
]


@pytest.mark.parametrize(("parameter", "value", "expected"), EDGES, ids=repr)
def test_band_edges(parameter, value, expected):
    row = score_one(**{parameter: value})
    assert row[c.news2_subscore_column(parameter)] == expected
    assert row[c.NEWS2_SCORE] == expected  # every other parameter of NORMAL scores 0
    assert news2_reference(**reading(**{parameter: value})) == expected


# SpO2 scale 2 (hypercapnic respiratory failure): (SpO2, on oxygen, expected SpO2 sub-score).
SCALE_2_EDGES = [
    *((spo2, o2, 3) for spo2 in (80.0, 83.0) for o2 in (False, True)),
    *((spo2, o2, 2) for spo2 in (84.0, 85.0) for o2 in (False, True)),
    *((spo2, o2, 1) for spo2 in (86.0, 87.0) for o2 in (False, True)),
    *((spo2, o2, 0) for spo2 in (88.0, 92.0) for o2 in (False, True)),  # target range: 0 either way
    *((spo2, False, 0) for spo2 in (93.0, 94.0, 95.0, 96.0, 97.0, 100.0)),  # ≥ 93 on air: 0
    (93.0, True, 1),
    (94.0, True, 1),
    (95.0, True, 2),
    (96.0, True, 2),
    (97.0, True, 3),
    (100.0, True, 3),
]


@pytest.mark.parametrize(("spo2", "oxygen", "expected"), SCALE_2_EDGES, ids=repr)
def test_spo2_scale_2_edges(spo2, oxygen, expected):
    changes = {c.SPO2: spo2, c.SUPPLEMENTAL_OXYGEN: oxygen, c.SPO2_SCALE: 2}
    row = score_one(**changes)
    assert row[c.news2_subscore_column(c.SPO2)] == expected
    oxygen_points = 2 if oxygen else 0
    assert row[c.news2_subscore_column(c.SUPPLEMENTAL_OXYGEN)] == oxygen_points
    assert row[c.NEWS2_SCORE] == expected + oxygen_points
    assert news2_reference(**reading(**changes)) == expected + oxygen_points


@pytest.mark.parametrize(("spo2", "expected"), [(91.0, 3), (93.0, 2), (97.0, 0)])
def test_scale_1_ignores_oxygen_for_the_spo2_band(spo2, expected):
    row = score_one(**{c.SPO2: spo2, c.SUPPLEMENTAL_OXYGEN: True})
    assert row[c.news2_subscore_column(c.SPO2)] == expected
    assert row[c.NEWS2_SCORE] == expected + 2


# Values between published bands score by the upper edge (like the next published value up).
IN_BETWEEN = [
    (c.RESPIRATION_RATE, 8.5, 1),
    (c.RESPIRATION_RATE, 11.5, 0),
    (c.RESPIRATION_RATE, 20.5, 2),
    (c.RESPIRATION_RATE, 24.5, 3),
    (c.SPO2, 91.5, 2),
    (c.SPO2, 93.5, 1),
    (c.SPO2, 95.5, 0),
    (c.SYSTOLIC, 90.5, 2),
    (c.SYSTOLIC, 219.5, 3),
    (c.HEART_RATE, 40.5, 1),
    (c.HEART_RATE, 50.5, 0),
    (c.HEART_RATE, 130.5, 3),
    (c.TEMPERATURE, 35.05, 1),
    (c.TEMPERATURE, 36.05, 0),
    (c.TEMPERATURE, 38.05, 1),
    (c.TEMPERATURE, 39.05, 2),
    (c.TEMPERATURE, (100.58 - 32) * 5 / 9, 1),  # 38.099999999999994 from °F: rounding keeps it 38.1
    (c.TEMPERATURE, 38.0000000001, 0),  # conversion noise above 38.0 stays in the 0 band
]


@pytest.mark.parametrize(("parameter", "value", "expected"), IN_BETWEEN, ids=repr)
def test_in_between_values_use_upper_edges(parameter, value, expected):
    rows = [reading(**{parameter: value})]
    row = score_news2(table_of(rows, {**TYPES, **FLOATS})).to_pylist()[0]
    assert row[c.news2_subscore_column(parameter)] == expected
    assert news2_reference(**rows[0]) == expected


@pytest.mark.parametrize(
    ("spo2", "oxygen", "expected"), [(87.5, False, 0), (92.5, False, 0), (92.5, True, 1), (96.5, True, 3)]
)
def test_in_between_spo2_scale_2(spo2, oxygen, expected):
    row = score_one(**{c.SPO2: spo2, c.SUPPLEMENTAL_OXYGEN: oxygen, c.SPO2_SCALE: 2})
    assert row[c.news2_subscore_column(c.SPO2)] == expected


@pytest.mark.parametrize(
    ("changes", "score", "response"),
    [
        ({}, 0, "low"),
        ({c.HEART_RATE: 95, c.RESPIRATION_RATE: 22}, 3, "low"),  # 3 in aggregate, no single 3
        ({c.HEART_RATE: 131}, 3, "low-medium"),  # a single 3
        ({c.CONSCIOUSNESS: "C"}, 3, "low-medium"),
        ({c.TEMPERATURE: 35.0, c.HEART_RATE: 91}, 4, "low-medium"),
        ({c.HEART_RATE: 131, c.RESPIRATION_RATE: 22}, 5, "medium"),  # single 3 but aggregate 5
        ({c.SUPPLEMENTAL_OXYGEN: True, c.HEART_RATE: 111, c.RESPIRATION_RATE: 10}, 5, "medium"),
        ({c.SUPPLEMENTAL_OXYGEN: True, c.HEART_RATE: 111, c.RESPIRATION_RATE: 22}, 6, "medium"),
        ({c.SUPPLEMENTAL_OXYGEN: True, c.HEART_RATE: 111, c.RESPIRATION_RATE: 25}, 7, "high"),
        ({c.SUPPLEMENTAL_OXYGEN: True, c.HEART_RATE: 111, c.TEMPERATURE: 39.1, c.SPO2: 94.0}, 7, "high"),
    ],
)
def test_response_levels(changes, score, response):
    assert set(c.NEWS2_RESPONSES) == {"low", "low-medium", "medium", "high"}
    row = score_one(**changes)
    assert (row[c.NEWS2_SCORE], row[c.NEWS2_RESPONSE]) == (score, response)
    assert news2_reference(**reading(**changes)) == score


def test_maximum_score_is_20():
    worst = {
        c.RESPIRATION_RATE: 30,
        c.SPO2: 85.0,
        c.SUPPLEMENTAL_OXYGEN: True,
        c.SYSTOLIC: 80,
        c.HEART_RATE: 150,
        c.CONSCIOUSNESS: "U",
        c.TEMPERATURE: 34.0,
    }
    row = score_one(**worst)
    assert (row[c.NEWS2_SCORE], row[c.NEWS2_RESPONSE], row[c.NEWS2_MISSING]) == (20, "high", 0)
    assert news2_reference(**reading(**worst)) == 20


@pytest.mark.parametrize(
    "measured", [c.RESPIRATION_RATE, c.SPO2, c.SYSTOLIC, c.HEART_RATE, c.TEMPERATURE], ids=str
)
def test_null_measured_value_is_unscored_and_counted(measured):
    changes = {measured: None, c.CONSCIOUSNESS: "V"}  # V: 3 points that are still there
    row = score_one(**changes)
    assert row[c.news2_subscore_column(measured)] is None
    assert row[c.NEWS2_MISSING] == 1
    assert row[c.NEWS2_SCORE] == 3  # the sum of what is there: a floor
    assert row[c.NEWS2_RESPONSE] == "low-medium"
    assert news2_reference(**reading(**changes)) == 3


def test_all_measured_null_counts_five():
    nulls = dict.fromkeys((c.RESPIRATION_RATE, c.SPO2, c.SYSTOLIC, c.HEART_RATE, c.TEMPERATURE))
    row = score_one(**nulls, **{c.SUPPLEMENTAL_OXYGEN: True})
    assert (row[c.NEWS2_MISSING], row[c.NEWS2_SCORE], row[c.NEWS2_RESPONSE]) == (5, 2, "low")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_measurements_count_as_missing(value):
    rows = [reading(**{c.SPO2: value, c.TEMPERATURE: value})]
    row = score_news2(table_of(rows)).to_pylist()[0]
    assert row[c.news2_subscore_column(c.SPO2)] is None
    assert row[c.news2_subscore_column(c.TEMPERATURE)] is None
    assert (row[c.NEWS2_MISSING], row[c.NEWS2_SCORE]) == (2, 0)


@pytest.mark.parametrize("letter", ["X", "", "alert", "AC", "1"])
def test_unknown_consciousness_is_unscored_and_counted(letter):
    row = score_one(**{c.CONSCIOUSNESS: letter})
    assert row[c.news2_subscore_column(c.CONSCIOUSNESS)] is None
    assert (row[c.NEWS2_MISSING], row[c.NEWS2_SCORE]) == (1, 0)
    assert news2_reference(**reading(**{c.CONSCIOUSNESS: letter})) == 0


@pytest.mark.parametrize(("scale", "expected"), [(None, 3), (1, 3), (2, 0), (3, None), (0, None)])
def test_spo2_scale_default_and_invalid(scale, expected):
    row = score_one(**{c.SPO2: 88.0, c.SPO2_SCALE: scale})  # scale 1: 3 points; scale 2: target range
    assert row[c.news2_subscore_column(c.SPO2)] == expected
    assert row[c.NEWS2_MISSING] == (1 if expected is None else 0)


def test_optional_columns_may_be_absent():
    t = table_of([reading(**{c.SPO2: 93.0})]).drop_columns(
        [c.SPO2_SCALE, c.SUPPLEMENTAL_OXYGEN, c.CONSCIOUSNESS]
    )
    row = score_news2(t).to_pylist()[0]
    assert row[c.news2_subscore_column(c.SPO2)] == 2  # scale 1
    assert row[c.news2_subscore_column(c.SUPPLEMENTAL_OXYGEN)] == 0  # air
    assert row[c.news2_subscore_column(c.CONSCIOUSNESS)] == 0  # alert
    assert (row[c.NEWS2_SCORE], row[c.NEWS2_MISSING]) == (2, 0)


def test_a_missing_measured_column_is_an_error():
    with pytest.raises(KeyError, match=c.SYSTOLIC):
        score_news2(table_of([NORMAL]).drop_columns([c.SYSTOLIC]))


def test_output_schema_is_the_contracts():
    fields = {f.name: f for f in c.CLINICAL_FIELDS}
    expected_names = [
        *(c.news2_subscore_column(p) for p in c.NEWS2_PARAMETERS),
        c.NEWS2_SCORE,
        c.NEWS2_MISSING,
        c.NEWS2_RESPONSE,
    ]
    out = score_news2(table_of([NORMAL, reading(**{c.HEART_RATE: None})]))
    assert out.column_names == expected_names
    assert out.schema == OUTPUT_SCHEMA
    for name in expected_names:
        assert out.schema.field(name).type == fields[name].type


def test_empty_and_multi_chunk_batches():
    assert score_news2(table_of([])).num_rows == 0
    rows = [reading(**{c.HEART_RATE: hr}) for hr in (40, 70, 131)]
    chunked = pa.concat_tables([table_of(rows[:1]), table_of(rows[1:])])
    assert chunked.column(c.HEART_RATE).num_chunks == 2
    assert score_news2(chunked)[c.NEWS2_SCORE].to_pylist() == [3, 0, 3]


def test_reference_rejects_unknown_fields():
    with pytest.raises(TypeError):
        news2_reference(pulse=70)
