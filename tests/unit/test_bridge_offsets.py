from __future__ import annotations

import random

import pytest

from pipelines.kafka_bridge_offsets import OffsetTracker


def _tracker(partition: int, offsets: list[int]) -> OffsetTracker:
    t = OffsetTracker()
    for o in offsets:
        assert t.add(partition, o)
    return t


def test_nothing_committable_until_the_oldest_record_is_acked() -> None:
    t = _tracker(0, [0, 1, 2, 3, 4])
    assert t.committable(0) is None
    t.ack(0, 3)
    t.ack(0, 4)
    assert t.committable(0) is None  # 0..2 still unacknowledged
    assert t.to_commit() == {}
    t.ack(0, 0)
    assert t.committable(0) == 1
    t.ack(0, 2)
    assert t.committable(0) == 1  # 1 is the hole
    t.ack(0, 1)
    assert t.committable(0) == 5
    assert t.pending(0) == 0


def test_gaps_in_offsets_commit_the_next_real_offset() -> None:
    t = _tracker(0, [0, 1, 5, 9])  # 2..4 and 6..8 do not exist (compaction, control records)
    t.ack(0, 0)
    t.ack(0, 1)
    assert t.committable(0) == 5
    t.ack(0, 9)
    assert t.committable(0) == 5
    t.ack(0, 5)
    assert t.committable(0) == 10


def test_a_failed_record_blocks_its_partition_for_good_and_only_its_partition() -> None:
    t = _tracker(0, [10, 11, 12, 13])
    for o in (20, 21):
        t.add(1, o)
    t.ack(0, 10)
    t.fail(0, 11)
    for o in (12, 13):
        t.ack(0, o)
    t.ack(0, 11)  # a late success for a record already reported failed changes nothing
    assert t.committable(0) == 11
    t.ack(1, 20)
    t.ack(1, 21)
    assert t.to_commit() == {0: 11, 1: 22}
    assert t.failed_partitions() == [0]


def test_to_commit_only_reports_progress_past_the_last_commit() -> None:
    t = _tracker(2, [0, 1, 2])
    t.ack(2, 0)
    assert t.to_commit() == {2: 1}
    t.mark_committed({2: 1})
    assert t.to_commit() == {}
    t.ack(2, 1)
    assert t.to_commit() == {2: 2}
    t.mark_committed({2: 2})
    t.mark_committed({2: 1})  # an older commit result never moves the position back
    t.ack(2, 2)
    assert t.to_commit() == {2: 3}


def test_offsets_not_newer_than_the_last_are_refused() -> None:
    t = _tracker(0, [5, 6])
    assert not t.add(0, 6)
    assert not t.add(0, 3)
    assert t.pending(0) == 2


def test_unknown_acks_and_forgotten_partitions_are_ignored() -> None:
    t = _tracker(0, [0, 1])
    t.ack(3, 0)  # never consumed
    t.ack(0, 99)
    assert t.committable(0) is None
    t.forget([0])
    assert t.committable(0) is None
    assert t.pending() == 0
    t.ack(0, 0)  # an ack arriving after a revoke
    assert t.to_commit() == {}


@pytest.mark.parametrize("seed", range(20))
def test_random_ack_order_never_commits_past_an_unacked_record(seed: int) -> None:
    rng = random.Random(seed)
    offsets = sorted(rng.sample(range(500), 120))
    t = _tracker(0, offsets)
    failed = set(rng.sample(offsets, rng.randint(0, 2)))
    order = offsets[:]
    rng.shuffle(order)
    acked: set[int] = set()
    for o in order:
        if o in failed:
            t.fail(0, o)
        else:
            t.ack(0, o)
            acked.add(o)
        pos = t.committable(0)
        first_unacked = next((x for x in offsets if x not in acked), None)
        if pos is None:
            assert first_unacked == offsets[0]
        else:
            assert all(x in acked for x in offsets if x < pos)
            assert pos == (first_unacked if first_unacked is not None else offsets[-1] + 1)
