"""pipelines.arrow_pickling: a table pickles as the rows it holds, not the buffers it shares."""

from __future__ import annotations

import pickle

import pyarrow as pa

import pipelines  # noqa: F401  (registers the reducer)


def test_a_slice_pickles_small_and_round_trips_with_its_schema():
    big = pa.table({"raw": pa.array([b"x" * 200] * 50_000, pa.binary()), "n": pa.array(range(50_000))})
    big = big.replace_schema_metadata({b"k": b"v"})
    part = big.slice(1_000, 10)
    data = pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(data) < 20_000  # the parent holds 10 MB
    back = pickle.loads(data)
    assert back.equals(part) and back.schema.metadata == {b"k": b"v"}


def test_empty_and_chunked_tables_round_trip():
    empty = pa.table({"a": pa.array([], pa.int64())})
    chunked = pa.concat_tables([pa.table({"a": [1, 2]}), pa.table({"a": [3]})])
    for table in (empty, chunked):
        assert pickle.loads(pickle.dumps(table, protocol=5)).equals(table)
