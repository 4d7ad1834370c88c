"""How a worker process's allocators treat freed memory.

Every batch allocates and frees the same few hundred megabytes of columns. By default both
allocators hand freed pages straight back to the kernel: Arrow's mimalloc purges them after 10 ms,
and glibc ``mmap``\\s each block over its dynamic threshold and ``munmap``\\s it on free. The next
batch then faults the pages in again and the kernel zeroes every one of them. On 716,132 readings
run through the batch engine that was 3.8-4.7 CPU-seconds of kernel time against 7.0 of our own.
Keeping freed memory for reuse took the kernel time to 0.6-0.9 CPU-seconds (page faults 235,000 ->
125,000) and the peak resident memory from 1.76 to 1.92 GB (docs/benchmarks.md).
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
# Blocks above this still get their own mapping (a rare, huge table), so an arena is not pinned by
# one; below it they come from the arenas and are reused.
MMAP_THRESHOLD_BYTES: Final = 64 << 20
# Free memory at the top of the heap is returned to the kernel only beyond this.
TRIM_THRESHOLD_BYTES: Final = 1 << 30

_applied: bool = False


def retain_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of returning it to the kernel at once:
    Arrow allocates through the system allocator, and glibc (where it is the C library) keeps freed
    blocks up to :data:`TRIM_THRESHOLD_BYTES`. Idempotent; call it from a worker's ``setup``.
    Returns whether glibc's thresholds were set (False on other C libraries: Arrow's pool is still
    switched, which alone halves the kernel time)."""
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
        )
    log.debug("freed memory retained for reuse (glibc thresholds set: %s)", _applied)
    return _applied
