"""pipelines.arrow_pickling: a table pickles as the rows it holds, not the buffers it shares."""

from __future__ import annotations

import pickle

import pyarrow as pa

from pipelines import arrow_pickling  # importing pipelines registers the reducer


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


def test_the_beam_coder_round_trips_and_sizes_a_table_without_encoding_it(monkeypatch):
    table = pa.table({"raw": pa.array([b"y" * 100] * 1_000, pa.binary())}).slice(10, 100)
    coder = arrow_pickling.ArrowTableCoder()
    assert coder.decode(coder.encode(table)).equals(table)
    impl = coder.get_impl()
    monkeypatch.setattr(arrow_pickling, "table_to_ipc", lambda _t: (_ for _ in ()).throw(AssertionError))
    size, _ = impl.get_estimated_size_and_observables(table)
    assert 10_000 <= size <= 200_000  # its nbytes, measured without the IPC writer


def test_large_tables_cross_compressed_and_small_ones_plain():
    wards = pa.array([f"ward-{i % 7}" for i in range(200_000)])
    large = pa.table({"ward": wards, "n": pa.array(range(200_000))})
    small = large.slice(0, 100)
    assert large.nbytes >= arrow_pickling.COMPRESS_FROM_BYTES > small.nbytes
    coder = arrow_pickling.ArrowTableCoder()
    encoded = coder.encode(large)
    assert len(encoded) < large.nbytes / 2  # LZ4 on repetitive columns (plain: more than nbytes)
    assert coder.decode(encoded).equals(large)
    assert len(coder.encode(small)) > small.nbytes  # plain: the rows and the schema
    assert coder.decode(coder.encode(small)).equals(small)
