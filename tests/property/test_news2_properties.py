"""NEWS2 scoring properties (tests/unit/test_news2.py has the band edges): the vectorised score equals
the reference implementation on generated rows, and no input makes it raise."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_news2 import FLOATS, TYPES, table_of
from vitals_lake import contract as c
from vitals_lake.news2 import OUTPUT_SCHEMA, news2_reference, score_news2


def grid(lo, hi, step):
    """Values on a grid (0.05 covers the published tenths and the in-between hundredths)."""
    return st.integers(round(lo / step), round(hi / step)).map(lambda i: round(i * step, 2))


def maybe(strategy):
    return st.none() | strategy


VALID_ROW = st.fixed_dictionaries(
    {
        c.RESPIRATION_RATE: maybe(grid(2, 80, 0.5)),
        c.SPO2: maybe(grid(50, 100, 0.5)),
        c.SUPPLEMENTAL_OXYGEN: maybe(st.booleans()),
        c.SYSTOLIC: maybe(grid(40, 300, 0.5)),
        c.HEART_RATE: maybe(grid(20, 300, 0.5)),
        c.CONSCIOUSNESS: maybe(st.sampled_from(["A", "C", "V", "P", "U", "a", "c", "v", "p", "u", "X", ""])),
        c.TEMPERATURE: maybe(grid(25, 45, 0.05)),
        c.SPO2_SCALE: maybe(st.sampled_from([1, 2])),
    }
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.lists(VALID_ROW, min_size=1, max_size=40))
def test_vectorised_score_equals_reference(rows):
    out = score_news2(table_of(rows, {**TYPES, **FLOATS})).to_pylist()
    for row, result in zip(rows, out, strict=True):
        assert result[c.NEWS2_SCORE] == news2_reference(**row), row
        measured = (c.RESPIRATION_RATE, c.SPO2, c.SYSTOLIC, c.HEART_RATE, c.TEMPERATURE)
        letter = row[c.CONSCIOUSNESS]
        unknown_letter = letter is not None and letter.upper() not in ("A", "C", "V", "P", "U")
        assert result[c.NEWS2_MISSING] == sum(row[m] is None for m in measured) + unknown_letter


ANY_FLOAT = maybe(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6).map(float))


@FAST
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                **dict.fromkeys(FLOATS, ANY_FLOAT),
                c.SUPPLEMENTAL_OXYGEN: maybe(st.booleans()),
                c.CONSCIOUSNESS: maybe(st.text(max_size=4)),
            }
        ),
        max_size=20,
    )
)
def test_no_input_raises(rows):
    out = score_news2(table_of(rows, {**TYPES, **FLOATS}))
    assert out.num_rows == len(rows)
    assert out.schema == OUTPUT_SCHEMA
    for result in out.to_pylist():
        assert 0 <= result[c.NEWS2_SCORE] <= 20
        assert 0 <= result[c.NEWS2_MISSING] <= 7
        assert result[c.NEWS2_RESPONSE] in c.NEWS2_RESPONSES
