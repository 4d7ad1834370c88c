"""A progress line on stderr: rewritten in place on a terminal, one line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, *, every_seconds: float = 5.0) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        # A terminal can take ~10 redraws/s; a log file wants a line every few seconds.
        self._every = 0.1 if self._tty else every_seconds
        self._started = time.monotonic()
        self._last = float("-inf")

    def update(self, sent: int, sim_ms: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self._every:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-9)
        sim = datetime.fromtimestamp(sim_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        line = f"simulator: {sent:,} messages sent, {sent / elapsed:,.0f} msg/s, simulated time {sim}Z"
        if self._tty:
            self._stream.write("\r" + line + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
