"""Arrow tables across Beam's stage boundaries: as Arrow IPC streams, sized without encoding.

Two costs, both measured on 716,132 readings (173 MB of payloads) in ``pipeline_core``:

* pyarrow pickles an array's whole buffers even when the array is a slice of a larger one: a
  5,000-row slice of a file block carried the block, and the pipeline pickled 9.9 GB (4.9 CPU-s in
  ``pickle.dumps``). An IPC stream writes only the rows a table holds. The reducer is registered with
  ``copyreg`` when ``pipelines`` is imported, so every pickle of a table (Beam's fallback coder, keyed
  state) uses it.
* Beam samples the size of the elements of every PCollection for its metrics, by encoding them: with a
  few large elements it samples all of them, so each table was encoded three to six times (2.9 GB). A
  PCollection typed ``pa.Table`` (or a tuple holding one) gets :class:`ArrowTableCoder`, whose size
  estimate is the table's ``nbytes``: no encoding.

Streams of large tables are LZ4-compressed (below): the runner copies each one several times between
stages, and on the same file compression halved the page faults of the whole run (660,000 to 300,000
with ZSTD, about 400,000 with LZ4).
"""

from __future__ import annotations

import copyreg
from collections.abc import Callable

import apache_beam as beam
import pyarrow as pa

# Large tables LZ4-compressed: a table crossing a stage boundary is copied five or six times on its way
# (coder stream, the runner's protobuf messages, the grouping buffers), and on Dataflow it is shuffle
# bytes. The gate's valid rows (50 columns) at 100,000 rows: 275 bytes a row as a plain stream, 101
# with LZ4 (22 ms to compress, 7 to decompress), 56 with ZSTD (31 and 15 ms). Compressing costs about
# 1 ms a table whatever its size (a call per buffer), so a stream's small tables (120 rows: 29 KB) stay
# plain: only a replay's tables are compressed, and the bytes ZSTD would save there (a Dataflow batch
# shuffle bills $0.011 a GB) are worth less than the CPU (the coders of `make bench`'s 716,132
# readings: 0.42 CPU-s with LZ4 against 0.70 with ZSTD).
_COMPRESSED = pa.ipc.IpcWriteOptions(compression="lz4")
COMPRESS_FROM_BYTES = 1 << 20


def table_to_ipc(table: pa.Table) -> pa.Buffer:
    # A Buffer, not bytes: pickle (protocol 5) writes its memory directly, one copy fewer (measured on
    # 700,000 rows: 0.09 s pickled as a Buffer, 0.23 s through bytes).
    sink = pa.BufferOutputStream()
    options = _COMPRESSED if table.nbytes >= COMPRESS_FROM_BYTES else None
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue()


def table_from_ipc(data: pa.Buffer | bytes) -> pa.Table:
    return pa.ipc.open_stream(data if isinstance(data, pa.Buffer) else pa.py_buffer(data)).read_all()


def _reduce(table: pa.Table) -> tuple[Callable[[pa.Buffer | bytes], pa.Table], tuple[pa.Buffer]]:
    return table_from_ipc, (table_to_ipc(table),)


class ArrowTableCoder(beam.coders.Coder):
    """A ``pa.Table`` as an Arrow IPC stream; its estimated size is its ``nbytes``."""

    def encode(self, value: pa.Table) -> bytes:
        return bytes(table_to_ipc(value))

    def decode(self, encoded: bytes) -> pa.Table:
        return table_from_ipc(encoded)

    def estimate_size(self, value: pa.Table) -> int:
        return int(value.nbytes)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return pa.Table


def register() -> None:
    copyreg.pickle(pa.Table, _reduce)
    beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)
