"""vitals_lake.byte_search agrees with Arrow's per-value ``match_substring`` on any records."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given
from hypothesis import strategies as st

from vitals_lake.byte_search import containing


@given(
    st.lists(st.one_of(st.none(), st.binary(max_size=12)), max_size=30),
    st.lists(st.binary(min_size=1, max_size=3), min_size=1, max_size=2),
    st.integers(0, 5),
)
def test_the_same_as_arrow_per_value(values, needles, start):
    arr = pa.array(values, pa.binary()).slice(min(start, len(values)))
    got = containing(arr, *needles)
    expected = np.zeros(len(arr), bool)
    for needle in needles:
        expected |= np.asarray(
            pc.fill_null(pc.match_substring(arr, needle), False).to_numpy(zero_copy_only=False)
        )
    assert got.tolist() == expected.tolist()
    assert got.tolist() == [v is not None and any(n in v for n in needles) for v in arr.to_pylist()]
