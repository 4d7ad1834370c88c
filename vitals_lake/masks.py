"""Arrow boolean columns as NumPy masks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def true_where(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A NumPy bool mask of an Arrow boolean column, null counted as False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def first_appearances(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Mask of the values no earlier value equals (null equals null). A dictionary encoding numbers
    the values in order of first appearance, so a value is new exactly when its number exceeds every
    number before it: one hash pass and a running maximum, no sort."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()  # one dictionary for all the rows
    codes = np.asarray(pc.dictionary_encode(values, null_encoding="encode").indices, dtype=np.int64)
    first = np.ones(len(codes), dtype=bool)
    np.greater(codes[1:], np.maximum.accumulate(codes)[:-1], out=first[1:])
    return first
