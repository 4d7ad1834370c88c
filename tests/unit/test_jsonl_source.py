"""pipelines.sources.ReadJsonlFn: a JSONL file read in blocks into Bronze tables, line for line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pipelines.sources import ReadJsonlFn
from vitals_lake import contract as c
from vitals_lake.envelope import split_lines


def _lines_as_python_reads_them(data: bytes) -> list[bytes]:
    return [line.rstrip(b"\r\n") for line in io.BytesIO(data)]


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_every_line_once_in_order_with_its_line_number(tmp_path: Path, block_bytes: int, batch_size: int):
    data = b'{"a":1}\r\n\n{"b":2}\r\r\n  x \n\xff\xfe\n{"c":3}'  # CRLF, empty, not UTF-8, no final break
    path = tmp_path / "r.jsonl"
    path.write_bytes(data)
    tables = list(ReadJsonlFn(batch_size, block_bytes=block_bytes).process(str(path)))
    assert all(t.num_rows <= batch_size for t in tables)
    raw = [v for t in tables for v in t[c.RAW].to_pylist()]
    refs = [v for t in tables for v in t[c.RECORD_REF].to_pylist()]
    assert raw == _lines_as_python_reads_them(data)
    assert refs == [f"file:{path}:{i}" for i in range(1, len(raw) + 1)]
    assert {v for t in tables for v in t[c.SOURCE].to_pylist()} == {"file"}


def test_split_lines_keeps_an_unfinished_line_for_the_next_block():
    lines, tail = split_lines(b"a\nbc\r\nde", final=False)
    assert lines.to_pylist() == [b"a", b"bc"] and tail == b"de"
    lines, tail = split_lines(tail + b"f\r", final=True)
    assert lines.to_pylist() == [b"def"] and tail == b""
    lines, tail = split_lines(b"", final=True)
    assert lines.to_pylist() == [] and tail == b""
