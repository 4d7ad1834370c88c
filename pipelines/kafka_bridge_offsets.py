"""Which Kafka offsets the bridge may commit: only those below which every record was acknowledged.

Envelopes are acknowledged by Pub/Sub out of order and one can fail, so the committable position of a
partition is the offset of its oldest record not yet acknowledged (or one past the last record when all
are). A failed record blocks its partition for good: nothing at or after it is ever committed, so a
restart re-reads it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class _Partition:
    pending: deque[int] = field(default_factory=deque)  # consumed, not yet released, ascending
    acked: set[int] = field(default_factory=set)  # acknowledged but behind an older pending offset
    failed: set[int] = field(default_factory=set)
    last_added: int | None = None
    released_to: int | None = None  # one past the newest offset released (all before it acknowledged)
    committed: int | None = None


class OffsetTracker:
    """Per partition, the offsets consumed but not yet acknowledged. Pure: no Kafka, no clock, no threads."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def add(self, partition: int, offset: int) -> bool:
        """Record a consumed offset. Returns False (and ignores it) if it is not newer than the last one."""
        p = self._parts.setdefault(partition, _Partition())
        if p.last_added is not None and offset <= p.last_added:
            return False
        p.pending.append(offset)
        p.last_added = offset
        return True

    def ack(self, partition: int, offset: int) -> None:
        """Pub/Sub acknowledged the record. Unknown or failed offsets are ignored."""
        p = self._parts.get(partition)
        if p is None or offset in p.failed or not p.pending or offset < p.pending[0]:
            return
        p.acked.add(offset)
        while p.pending and p.pending[0] in p.acked:
            done = p.pending.popleft()
            p.acked.discard(done)
            p.released_to = done + 1

    def fail(self, partition: int, offset: int) -> None:
        """Publishing the record failed: its partition is never committed at or past it."""
        p = self._parts.get(partition)
        if p is not None and p.pending and offset >= p.pending[0]:
            p.failed.add(offset)
            p.acked.discard(offset)

    def committable(self, partition: int) -> int | None:
        """The offset to commit (the next one to read after a restart), or None if nothing is released."""
        p = self._parts.get(partition)
        if p is None:
            return None
        if p.pending:
            # Offsets may have gaps (compaction, control records): the oldest pending one is the position.
            return p.pending[0] if p.released_to is not None else None
        return p.released_to

    def to_commit(self) -> dict[int, int]:
        """Partitions whose committable offset moved past the last committed one."""
        out = {}
        for partition, p in self._parts.items():
            pos = self.committable(partition)
            if pos is not None and (p.committed is None or pos > p.committed):
                out[partition] = pos
        return out

    def mark_committed(self, offsets: Mapping[int, int]) -> None:
        for partition, offset in offsets.items():
            p = self._parts.setdefault(partition, _Partition())
            p.committed = offset if p.committed is None else max(p.committed, offset)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop a partition's state (revoked or lost): its next owner starts from the committed offset."""
        for partition in partitions:
            self._parts.pop(partition, None)

    def pending(self, partition: int | None = None) -> int:
        """Records consumed and not yet released, for one partition or all."""
        parts = self._parts.values() if partition is None else [self._parts.get(partition, _Partition())]
        return sum(len(p.pending) for p in parts)

    def failed_partitions(self) -> list[int]:
        return sorted(partition for partition, p in self._parts.items() if p.failed)
