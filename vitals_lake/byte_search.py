"""Which records of a batch contain a byte string: one search over all of them back to back.

Arrow's ``match_substring`` runs per value (about 800 MB/s on a batch of readings); the needles the
gate looks for (a raw line break, ``"resourceType"``, ``"values"``) are in almost no record, so one
``bytes.find`` over the batch's contiguous data (memchr speed) and a look-up of the few hits is far
cheaper. A hit that straddles two records does not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pyarrow as pa


def value_offsets(records: pa.Array) -> np.ndarray:
    """The ``len + 1`` value offsets of a binary or string array into its data buffer (a slice's own)."""
    n = len(records)
    wide = pa.types.is_large_binary(records.type) or pa.types.is_large_string(records.type)
    width = 8 if wide else 4
    return np.frombuffer(
        records.buffers()[1], dtype=np.int64 if wide else np.int32, count=n + 1, offset=records.offset * width
    )


def framed_by(records: pa.Array, first: bytes, last: bytes) -> np.ndarray:
    """Bool mask of the records (binary or string; null or empty: False) whose first byte is ``first``
    and last byte is ``last``: two gathers from the data buffer, where Arrow's ``starts_with`` and
    ``ends_with`` visit every value (0.3 CPU-s each on 716,000 readings)."""
    n = len(records)
    data = records.buffers()[2] if n else None
    if data is None or data.size == 0:
        return np.zeros(n, dtype=bool)
    offsets = value_offsets(records)
    size = np.diff(offsets)
    nonempty = size > 0
    bytes_ = np.frombuffer(data, np.uint8)
    head = bytes_[np.where(nonempty, offsets[:-1], 0)]
    tail = bytes_[np.where(nonempty, offsets[1:] - 1, 0)]
    mask = nonempty & (head == ord(first)) & (tail == ord(last))
    if records.null_count:
        mask &= np.asarray(records.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return mask


_WINDOW: Final = 8 << 20  # bytes compared at once: bounds the temporary mask


def _bytes(records: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """(the data buffer's bytes, the value offsets) of a binary or string array; None: no data."""
    data = records.buffers()[2] if len(records) else None
    return None if data is None else (np.frombuffer(data, np.uint8), value_offsets(records))


def non_ascii(records: pa.Array) -> np.ndarray:
    """Bool mask of the records (binary or string; null: False) holding a byte above 0x7F: the only
    ones that can be invalid UTF-8 (pure ASCII always is valid). One comparison over the data buffer,
    then a look-up of the few records hit."""
    mask = np.zeros(len(records), dtype=bool)
    if (found := _bytes(records)) is None:
        return mask
    bytes_, offsets = found
    lo, hi = int(offsets[0]), int(offsets[-1])
    for start in range(lo, hi, _WINDOW):
        hits = np.flatnonzero(bytes_[start : min(start + _WINDOW, hi)] > 0x7F) + start
        if hits.size:
            mask[np.searchsorted(offsets, hits, side="right") - 1] = True
    if records.null_count:
        mask &= np.asarray(records.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return mask


_DAYS_IN_MONTH: Final = np.array([31, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])  # [0]: unused
_DATE_DIGITS: Final = np.array([0, 1, 2, 3, 5, 6, 8, 9])  # YYYY-MM-DD: where the digits are


def impossible_dates(text: pa.Array) -> np.ndarray:
    """Mask of the strings (null, or laid out as ``ISO_TIMESTAMP_RE`` requires: ``YYYY-MM-DD`` first,
    month 01-12, day 01-31) whose day does not exist in its month and year (2026-02-29, 2026-04-31).
    Arrow's cast rejects exactly these among such strings; read from the bytes, no parse per value."""
    impossible = np.zeros(len(text), dtype=bool)
    if (found := _bytes(text)) is None:
        return impossible
    data, offsets = found
    dated = (offsets[1:] - offsets[:-1]) >= 10
    if text.null_count:
        dated &= np.asarray(text.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    rows = np.flatnonzero(dated)
    digits = data[offsets[rows][:, None] + _DATE_DIGITS].astype(np.int64) - ord("0")
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month = np.clip(digits[:, 4] * 10 + digits[:, 5], 0, 12)
    day = digits[:, 6] * 10 + digits[:, 7]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    impossible[rows] = day > _DAYS_IN_MONTH[month] + ((month == 2) & leap)
    return impossible


def containing(records: pa.Array, *needles: bytes) -> np.ndarray:
    """Bool mask of the records (binary or string; null: False) whose bytes contain any of ``needles``."""
    return containing_each(records, [needles])[0]


def containing_each(records: pa.Array, searches: Sequence[Sequence[bytes]]) -> list[np.ndarray]:
    """:func:`containing` for several searches (each a set of needles) over one copy of the records'
    bytes: the copy costs as much as a search (about 11 ms for 100,000 readings), and the gate makes
    three searches per batch."""
    n = len(records)
    masks = [np.zeros(n, dtype=bool) for _ in searches]
    data = records.buffers()[2] if n else None
    if data is None:
        return masks
    offsets = value_offsets(records)
    lo, hi = int(offsets[0]), int(offsets[-1])
    blob = memoryview(data)[lo:hi].tobytes()
    relative = offsets - lo
    valid = records.is_valid().to_numpy(zero_copy_only=False) if records.null_count else None
    for mask, needles in zip(masks, searches, strict=True):
        if not all(needles):
            continue
        for needle in needles:
            pos = blob.find(needle)
            while pos >= 0:
                record = int(np.searchsorted(relative, pos, side="right")) - 1
                end = int(relative[record + 1])
                if pos + len(needle) <= end:
                    mask[record] = True
                    pos = blob.find(needle, end)  # the next record
                else:
                    pos = blob.find(needle, pos + 1)  # straddles a boundary: not a hit
        if valid is not None:
            np.logical_and(mask, valid, out=mask)
    return masks


def _byte_set(characters: str) -> np.ndarray:
    allowed = np.zeros(256, dtype=bool)
    allowed[np.frombuffer(characters.encode("ascii"), np.uint8)] = True
    return allowed


_ALNUM: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
IDENTIFIER_FIRST: Final = _byte_set(_ALNUM)
IDENTIFIER_REST: Final = _byte_set(_ALNUM + "_.:-")


def identifiers(records: pa.Array, *, first: np.ndarray, rest: np.ndarray, max_bytes: int) -> np.ndarray:
    """Bool mask of the records (binary or string; null: False) of 1 to ``max_bytes`` bytes whose first
    byte is in ``first`` and every other byte in ``rest`` (256-entry masks): the regex
    ``^[first][rest]{0,max_bytes-1}$`` as two gathers and one look-up over the data buffer, where a
    regex runs per value (0.18 CPU-s for four identifier columns of 716,000 readings)."""
    n = len(records)
    offsets = value_offsets(records) if n else np.zeros(1, np.int64)
    size = np.diff(offsets)
    ok = (size >= 1) & (size <= max_bytes)
    data = records.buffers()[2] if n else None
    if data is not None and data.size:
        bytes_ = np.frombuffer(data, np.uint8)
        lo, hi = int(offsets[0]), int(offsets[-1])
        ok &= first[bytes_[np.where(ok, offsets[:-1], 0)]]
        # A record fails where it holds a byte outside ``rest`` after its first.
        for start in range(lo, hi, _WINDOW):
            outside = np.flatnonzero(~rest[bytes_[start : min(start + _WINDOW, hi)]]) + start
            if outside.size:
                record = np.searchsorted(offsets, outside, side="right") - 1
                ok[record[outside != offsets[record]]] = False
    else:
        ok[:] = False
    if records.null_count:
        ok &= np.asarray(records.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return ok


# One odd 64-bit multiplier per 8-byte word position (modulo the table): hash64's weights.
_HASH_WEIGHTS: Final = np.random.default_rng(0x5EEDBEEF).integers(1, 2**62, size=32, dtype=np.uint64) * 2 + 1


def hash64(records: pa.Array) -> np.ndarray:
    """A 64-bit hash of each record's bytes (binary or string; null: as empty), for look-ups that
    confirm a match by comparing the values themselves: two different values may share a hash.

    The records of each length are gathered into a matrix (a plain reshape when they lie back to back,
    as a batch of UUIDs does), read as little-endian 8-byte words (zero-padded), each word times a
    weight for its position, summed (wrapping), mixed with the length and finished by splitmix64:
    array operations per distinct length, no call per value."""
    n = len(records)
    out = np.zeros(n, dtype=np.uint64)
    offsets = value_offsets(records).astype(np.int64) if n else np.zeros(1, np.int64)
    size = np.diff(offsets)
    data = records.buffers()[2] if n else None
    with np.errstate(over="ignore"):
        if data is not None and data.size:
            bytes_ = np.frombuffer(data, np.uint8)
            lengths = np.unique(size)
            for length in lengths[lengths > 0].tolist():
                rows = np.flatnonzero(size == length) if len(lengths) > 1 else np.arange(n)
                starts = offsets[:-1][rows]
                if starts[-1] - starts[0] == length * (len(rows) - 1):  # back to back
                    matrix = bytes_[starts[0] : starts[0] + length * len(rows)].reshape(len(rows), length)
                else:
                    matrix = bytes_[starts[:, None] + np.arange(length)]
                width = (length + 7) // 8
                padded = np.zeros((len(rows), width * 8), dtype=np.uint8)
                padded[:, :length] = matrix
                words = padded.view("<u8")
                out[rows] = (words * _HASH_WEIGHTS[np.arange(width) % len(_HASH_WEIGHTS)]).sum(
                    axis=1, dtype=np.uint64
                )
        mixed = out ^ (size.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return mixed ^ (mixed >> np.uint64(31))
