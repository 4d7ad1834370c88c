"""How a worker process's allocators treat freed memory.

Every batch allocates and frees the same few hundred megabytes of columns. By default the allocators
hand freed pages straight back to the kernel: Arrow's mimalloc purges them after 10 ms, and glibc
``mmap``\\s each block over its dynamic threshold and ``munmap``\\s it on free. The next batch then
faults the pages in again and the kernel zeroes every one of them; with transparent huge pages that
is 2 MB at a time, touched or not. On 716,132 readings run through the batch engine that was 3.8-4.7
CPU-seconds of kernel time against 7.0 of our own, and in the Beam pipeline 2-4 CPU-seconds.

:func:`retain_freed_memory` keeps freed memory for reuse: the engine's kernel time fell to 0.6-0.9
CPU-seconds (peak resident memory 1.76 -> 1.92 GB), the pipeline's to 1.0-1.3 (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import logging
import platform
from typing import Final

import pyarrow as pa

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_PR_SET_THP_DISABLE: Final = 41  # prctl(2)
# Blocks above this still get their own mapping (a rare, huge table), so an arena is not pinned by
# one; below it they come from the arenas and are reused.
MMAP_THRESHOLD_BYTES: Final = 64 << 20
# Free memory at the top of the heap is returned to the kernel only beyond this.
TRIM_THRESHOLD_BYTES: Final = 1 << 30

_applied: bool = False


def retain_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of returning it to the kernel at once:
    Arrow's Python-facing allocations go through the system allocator, glibc (where it is the C
    library) keeps freed blocks up to :data:`TRIM_THRESHOLD_BYTES`, and the process takes no
    transparent huge pages (Arrow's C++ kernels still allocate from mimalloc, which
    ``set_memory_pool`` does not reach and which purges: a purged huge page costs 2 MB of zeroing).
    Idempotent; call it from a worker's ``setup``. Returns whether the Linux/glibc settings were
    made (False elsewhere: Arrow's pool is still switched, which alone halves the kernel time)."""
    global _applied  # noqa: PLW0603 - a process-wide setting, applied once per process
    if _applied:
        return True
    pa.set_memory_pool(pa.system_memory_pool())
    _applied = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    if _applied:
        libc = ctypes.CDLL(None)
        _applied = bool(
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
            and libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
        )
    log.debug("freed memory retained for reuse (glibc thresholds set: %s)", _applied)
    return _applied
