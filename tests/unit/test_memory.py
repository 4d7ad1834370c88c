"""Freed memory is kept for reuse (vitals_lake.memory). Run in a child process: the settings are
process-wide and must not leak into the other tests."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from typing import Any

import pytest

_PROBE = """
import ctypes, json, sys
import numpy as np
import pyarrow as pa
from vitals_lake.memory import retain_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
size = 48 << 20  # above glibc's largest dynamic mmap threshold (32 MB): its own mapping by default
block = np.ones(size // 8)
held = mallinfo2()
del block
freed = mallinfo2()
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({"applied": applied, "pool": pa.default_memory_pool().backend_name,
                  "huge_pages": status.get("THP_enabled", "").strip(),
                  "mapped_while_held": held.hblkhd, "kept_after_free": freed.fordblks, "size": size}))
"""


def _probe(mode: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's (Linux)")
def test_a_freed_block_is_reused_not_faulted_in_again() -> None:
    default, retained = _probe("default"), _probe("retain")
    size = default["size"]
    # By default a 48 MB block is a mapping of its own, unmapped on free: the next one is faulted in
    # (and zeroed by the kernel) page by page again.
    assert default["mapped_while_held"] >= size
    assert default["kept_after_free"] < size
    # Retained: it comes from the heap and stays there, free for the next batch.
    assert retained["applied"] is True
    assert retained["pool"] == "system"
    assert retained["mapped_while_held"] < size  # what import mapped before; not the block
    assert retained["kept_after_free"] >= size
    # And no transparent huge pages: a page handed back and faulted in again costs 4 KB, not 2 MB.
    # (Only the retaining process is checked: the setting is inherited, and the test process may
    # have made it already.) "": a kernel older than 5.0 does not report it.
    assert retained["huge_pages"] in ("0", "")
