"""Patient shards: the unit of parallelism and of pipeline state.

A patient's shard is the first 32 bits of their ``patient_key`` (the keyed HMAC-SHA256 pseudonym every
Silver row carries) modulo the number of shards. It is stable for as long as the pseudonym key is,
spreads patients evenly (HMAC output is uniform), and reveals nothing a plain hash of the id would
(no unkeyed digest of a patient id is ever computed). Computed for a whole batch at once: the hex
prefixes are read straight out of the Arrow string buffer, no Python loop per row or per patient.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c

LOCAL_SHARDS: Final = 2  # one per core of a small machine
DATAFLOW_SHARDS: Final = 64  # several per worker at the Flex Template's max_workers, so work can rebalance
MAX_SHARDS: Final = 4096
_PREFIX: Final = 8  # hex characters = 32 bits
_COLUMNS: Final = np.arange(_PREFIX, dtype=np.int32)


def _nibble_table() -> np.ndarray:
    table = np.full(256, 16, np.uint8)
    table[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
    table[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
    table[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
    return table


_NIBBLE: Final = _nibble_table()


def check_shards(shards: int) -> int:
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be between 1 and {MAX_SHARDS}, got {shards}")
    return shards


def shard_of_keys(patient_keys: pa.Array | pa.ChunkedArray, *, shards: int) -> np.ndarray:
    """The shard (int64) of each ``patient_key`` (hex text, at least 8 characters, never null)."""
    check_shards(shards)
    keys = patient_keys.combine_chunks() if isinstance(patient_keys, pa.ChunkedArray) else patient_keys
    keys = keys.cast(pa.string())
    n = len(keys)
    if n == 0:
        return np.zeros(0, np.int64)
    if keys.null_count or pc.min(pc.utf8_length(keys)).as_py() < _PREFIX:
        raise ValueError("patient_key must be non-null hex text of at least 8 characters")
    offsets = np.frombuffer(keys.buffers()[1], np.int32)[keys.offset : keys.offset + n]
    data = np.frombuffer(keys.buffers()[2], np.uint8)
    # One table lookup per character ('0'-'9' -> 0-9, 'a'-'f' / 'A'-'F' -> 10-15, anything else -> 16),
    # then the 8 nibbles are packed column by column: a few passes over n values, not over n x 8.
    nibbles = _NIBBLE[data[offsets[:, None] + _COLUMNS]]
    if (nibbles > 15).any():
        raise ValueError("patient_key must be hex text")
    value = np.zeros(n, np.uint32)
    for column in range(_PREFIX):  # 8 passes, whatever n is
        value = (value << np.uint32(4)) | nibbles[:, column]
    return (value % np.uint32(shards)).astype(np.int64)


def split_by_shard(rows: pa.Table, *, shards: int) -> list[tuple[int, pa.Table]]:
    """``rows`` (with ``patient_key``) -> (shard, its rows) for each shard present, rows in input order."""
    if rows.num_rows == 0:
        return []
    shard = shard_of_keys(rows[c.PATIENT_KEY], shards=shards)
    order = np.argsort(shard, kind="stable")
    sorted_shards = shard[order]
    bounds = np.flatnonzero(np.diff(sorted_shards)) + 1
    starts = np.r_[0, bounds]
    ends = np.r_[bounds, len(order)]
    taken = rows.take(pa.array(order))
    return [(int(sorted_shards[lo]), taken.slice(lo, hi - lo)) for lo, hi in zip(starts, ends, strict=True)]


def in_shard(rows: pa.Table, *, shard: int, shards: int) -> pa.Table:
    """The rows of ``rows`` (with ``patient_key``) that belong to ``shard``."""
    if rows.num_rows == 0:
        return rows
    return rows.filter(pa.array(shard_of_keys(rows[c.PATIENT_KEY], shards=shards) == shard))
