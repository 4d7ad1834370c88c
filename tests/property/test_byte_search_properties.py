"""vitals_lake.byte_search agrees with Arrow's per-value ``match_substring`` / ``starts_with`` /
``ends_with`` on any records."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given
from hypothesis import strategies as st

from vitals_lake.byte_search import (
    IDENTIFIER_FIRST,
    IDENTIFIER_REST,
    containing,
    framed_by,
    hash64,
    identifiers,
    non_ascii,
)
from vitals_lake.expectations import ID_MAX_BYTES, ID_RE
from vitals_lake.readings import _not_utf8, _parse_timestamps


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


@given(
    st.lists(
        st.one_of(st.none(), st.binary(max_size=6, min_size=0), st.just(b"{}"), st.just(b"{")), max_size=30
    ),
    st.integers(0, 5),
    st.booleans(),
)
def test_framed_by_is_arrow_starts_with_and_ends_with(values, start, large):
    arr = pa.array(values, pa.large_binary() if large else pa.binary()).slice(min(start, len(values)))
    got = framed_by(arr, b"{", b"}")
    head = pc.fill_null(pc.starts_with(arr, b"{"), False).to_numpy(zero_copy_only=False)
    tail = pc.fill_null(pc.ends_with(arr, b"}"), False).to_numpy(zero_copy_only=False)
    assert got.tolist() == (np.asarray(head) & np.asarray(tail)).tolist()


@given(
    st.lists(st.one_of(st.none(), st.binary(max_size=8), st.text(max_size=4).map(str.encode)), max_size=40),
    st.integers(0, 5),
)
def test_non_ascii_and_not_utf8_are_python_s_own_checks(values, start):
    arr = pa.array(values, pa.binary()).slice(min(start, len(values)))
    kept = arr.to_pylist()
    assert non_ascii(arr).tolist() == [v is not None and any(b > 0x7F for b in v) for v in kept]

    def invalid(v: bytes | None) -> bool:
        try:
            v is not None and v.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    assert _not_utf8(arr).tolist() == [i for i, v in enumerate(kept) if invalid(v)]


_ID_ALPHABET = "aZ09_.:-/ \n\t{é\x00"


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.text(alphabet=_ID_ALPHABET, max_size=6),
            st.builds(lambda n, c: c * n, st.integers(126, 130), st.sampled_from(["a", "-"])),
        ),
        max_size=30,
    ),
    st.integers(0, 5),
)
def test_identifiers_is_the_id_regex(values, start):
    arr = pa.array(values, pa.string()).slice(min(start, len(values)))
    got = identifiers(arr, first=IDENTIFIER_FIRST, rest=IDENTIFIER_REST, max_bytes=ID_MAX_BYTES)
    # Arrow's own regex engine (RE2), as the expectation ran before.
    expected = pc.fill_null(pc.match_substring_regex(arr, ID_RE), False).to_pylist()
    assert got.tolist() == expected


@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), min_size=1, max_size=30), st.integers(0, 5))
def test_hash64_depends_on_the_value_alone(values, start):
    """Equal values hash equally wherever they sit (alone, in a slice, among other lengths); a null
    hashes as the empty value."""
    arr = pa.array(values, pa.binary()).slice(min(start, len(values) - 1))
    together = hash64(arr)
    alone = [hash64(pa.array([v if v is not None else b""], pa.binary()))[0] for v in arr.to_pylist()]
    assert together.tolist() == [int(h) for h in alone]
    distinct = {v or b"" for v in arr.to_pylist()}
    assert len(set(together.tolist())) == len(distinct)  # 64 bits: no collision among a few values


_STAMP = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}{}".format,
    st.sampled_from([1900, 1999, 2000, 2023, 2024, 2026, 2100, 2400]) | st.integers(0, 9999),
    st.integers(1, 12),
    st.integers(1, 31),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from(["", ".5", ".123456", ".123456789"]),
    st.sampled_from(["Z", "+00:00", "-05:30", "+0930"]),
)


@given(st.lists(st.one_of(st.none(), _STAMP), max_size=40), st.integers(0, 5))
def test_timestamps_parse_as_arrow_casts_each_one(values, start):
    """Strings of the layout the timestamp rule lets through (days their month lacks included): the
    same instants and the same failures as a cast of each value alone."""
    arr = pa.array(values, pa.string()).slice(min(start, len(values)))
    assert _parsed_together(arr) == _cast_one_by_one(arr)


def test_every_month_end_of_leap_and_common_years_parses_as_arrow_casts_it():
    values = [
        f"{year:04d}-{month:02d}-{day:02d}T12:00:00Z"
        for year in (0, 1900, 2000, 2023, 2024, 2100, 2400)
        for month in range(1, 13)
        for day in (28, 29, 30, 31)
    ]
    got = _parsed_together(pa.array(values))
    assert got == _cast_one_by_one(pa.array(values))
    assert 0 < sum(failed for _, failed in got) < len(values)


def _parsed_together(arr: pa.Array) -> list[tuple[int | None, bool]]:
    """(microseconds, failed) per value, parsed as one batch (year 0 is no Python datetime)."""
    parsed, bad = _parse_timestamps(pa.chunked_array([arr]), np.ones(len(arr), bool))
    return list(zip(parsed.cast(pa.int64()).to_pylist(), bad.tolist(), strict=True))


def _cast_one_by_one(arr: pa.Array) -> list[tuple[int | None, bool]]:
    out: list[tuple[int | None, bool]] = []
    for value in arr.to_pylist():
        try:
            cast = None if value is None else pc.cast(pa.scalar(value), pa.timestamp("us", tz="UTC"))
            out.append((None if cast is None else cast.cast(pa.int64()).as_py(), False))
        except pa.ArrowInvalid:
            out.append((None, True))
    return out
