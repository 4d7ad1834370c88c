"""pipelines.sources: a JSONL file indexed into ranges of whole lines, each read into Bronze rows,
line for line, with the line numbers of the whole file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from pipelines.sources import IndexLinesFn, LineRange, ReadLineRangeFn
from vitals_lake import contract as c
from vitals_lake.envelope import split_lines


def _lines_as_python_reads_them(data: bytes) -> list[bytes]:
    return [line.rstrip(b"\r\n") for line in io.BytesIO(data)]


def _replay(
    path: Path, *, lines_per_range: int, block_bytes: int
) -> tuple[list[LineRange], list[tuple[str, object]]]:
    ranges = list(IndexLinesFn(lines_per_range, block_bytes=block_bytes).process(str(path)))
    reader = ReadLineRangeFn(run_id="run1", started_us=1_700_000_000_000_000)
    return ranges, [batch for span in ranges for batch in reader.process(span)]


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("lines_per_range", [1, 3, 1000])
@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1}\r\n\n{"b":2}\r\r\n  x \n\xff\xfe\n{"c":3}',  # CRLF, empty, not UTF-8, no final break
        b'{"a":1}\n{"b":2}\n',  # a final break: no empty line after it
        b"\n\n\n",  # empty lines only
        b"",
    ],
)
def test_every_line_once_in_order_with_its_line_number(
    tmp_path: Path, block_bytes: int, lines_per_range: int, data: bytes
):
    path = tmp_path / "r.jsonl"
    path.write_bytes(data)
    ranges, batches = _replay(path, lines_per_range=lines_per_range, block_bytes=block_bytes)
    tables = [t for _, t in batches]
    assert all(span.lines <= lines_per_range for span in ranges)
    assert all(t.num_rows == span.lines for t, span in zip(tables, ranges, strict=True))
    # The ranges tile the file: each starts where the one before ended.
    assert [s.start for s in ranges[1:]] == [s.end for s in ranges[:-1]]
    raw = [v for t in tables for v in t[c.RAW].to_pylist()]
    refs = [v for t in tables for v in t[c.RECORD_REF].to_pylist()]
    assert raw == _lines_as_python_reads_them(data)
    assert refs == [f"file:{path}:{i}" for i in range(1, len(raw) + 1)]
    assert {v for t in tables for v in t[c.SOURCE].to_pylist()} <= {"file"}


def test_batch_ids_name_the_range_so_a_retried_read_gives_the_same_id(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(10)))
    ranges, first = _replay(path, lines_per_range=4, block_bytes=8)
    _, again = _replay(path, lines_per_range=4, block_bytes=1 << 20)
    ids = [batch_id for batch_id, _ in first]
    assert ids == [batch_id for batch_id, _ in again]
    assert ids == ["1700000000000000-f0-run1", "1700000000000000-f4-run1", "1700000000000000-f8-run1"]
    assert [s.lines for s in ranges] == [4, 4, 2]


def test_a_file_changed_under_the_replay_is_refused_not_misnumbered(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"a\nb\nc\nd\n")
    (span,) = IndexLinesFn(10).process(str(path))
    path.write_bytes(b"a\nb\n")  # shorter now: the range holds fewer lines than indexed
    with pytest.raises(ValueError, match="expected 4 lines"):
        list(ReadLineRangeFn(run_id="r", started_us=0).process(span))


def test_split_lines_keeps_an_unfinished_line_for_the_next_block():
    lines, tail = split_lines(b"a\nbc\r\nde", final=False)
    assert lines.to_pylist() == [b"a", b"bc"] and tail == b"de"
    lines, tail = split_lines(tail + b"f\r", final=True)
    assert lines.to_pylist() == [b"def"] and tail == b""
    lines, tail = split_lines(b"", final=True)
    assert lines.to_pylist() == [] and tail == b""


@pytest.mark.parametrize("seed", range(20))
def test_split_lines_reads_what_iterating_the_file_reads(seed):
    """Random blocks of line breaks, carriage returns, blank and unfinished lines, cut anywhere."""
    rng = np.random.default_rng(seed)
    data = bytes(rng.choice(np.frombuffer(b'ab{}"\r\n\n', np.uint8), size=int(rng.integers(0, 400))))
    lines, tail = split_lines(data, final=True)
    assert lines.to_pylist() == _lines_as_python_reads_them(data) and tail == b""
    cut = int(rng.integers(0, len(data) + 1))
    head, rest = split_lines(data[:cut], final=False)
    more, _ = split_lines(rest + data[cut:], final=True)
    assert head.to_pylist() + more.to_pylist() == _lines_as_python_reads_them(data)
