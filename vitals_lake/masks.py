"""Arrow boolean columns as NumPy masks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def true_where(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A NumPy bool mask of an Arrow boolean column, null counted as False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
