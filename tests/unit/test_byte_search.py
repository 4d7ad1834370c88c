"""vitals_lake.byte_search: records containing a byte string, found in one search over the batch."""

from __future__ import annotations

import pyarrow as pa

from vitals_lake.byte_search import containing


def test_hits_misses_nulls_and_a_needle_across_two_records():
    values = [b'{"a":1}', b"x\ny", None, b"ab", b"cd", b"", b"\r"]
    arr = pa.array(values, pa.binary())
    assert containing(arr, b"\n").tolist() == [False, True, False, False, False, False, False]
    assert containing(arr, b"\n", b"\r").tolist() == [False, True, False, False, False, False, True]
    # "bc" spans records 3 and 4 in the data buffer: not a hit.
    assert not containing(arr, b"bc").any()
    assert containing(arr, b"cd").tolist() == [False, False, False, False, True, False, False]


def test_a_sliced_and_a_large_array():
    values = [b"aa", b"needle", b"bb", b"xneedlex"]
    sliced = pa.array(values, pa.binary()).slice(1, 3)
    assert containing(sliced, b"needle").tolist() == [True, False, True]
    assert containing(pa.array(values, pa.large_binary()), b"needle").tolist() == [False, True, False, True]
    assert containing(pa.array([], pa.binary()), b"x").tolist() == []
