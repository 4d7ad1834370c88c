"""Patient shards, the de-duplication memory and the batch engine's per-shard half."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from vitals_lake import contract as c
from vitals_lake import dedup
from vitals_lake.dedup import SeenEvents
from vitals_lake.engine import EngineSettings, ShardState
from vitals_lake.pseudonym import pseudonymise
from vitals_lake.sharding import check_shards, in_shard, shard_of_keys, split_by_shard

KEY = b"0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
HOUR_US = 3_600_000_000


def test_a_shard_is_the_keyed_pseudonyms_first_32_bits_mod_n():
    ids = pa.array([f"P-{i:05d}" for i in range(300)])
    keys = pseudonymise(ids, key=KEY)
    got = shard_of_keys(keys, shards=7)
    want = [int(hmac.new(KEY, i.encode(), hashlib.sha256).hexdigest()[:8], 16) % 7 for i in ids.to_pylist()]
    assert got.tolist() == want


def test_shards_follow_the_key_not_the_id():
    ids = pa.array([f"P-{i:05d}" for i in range(300)])
    a = shard_of_keys(pseudonymise(ids, key=KEY), shards=16)
    b = shard_of_keys(pseudonymise(ids, key=KEY[::-1]), shards=16)
    assert (a != b).mean() > 0.5


def test_shard_of_a_sliced_chunked_array():
    keys = pseudonymise(pa.array([f"P-{i}" for i in range(50)]), key=KEY)
    whole = shard_of_keys(keys, shards=5)
    chunked = pa.chunked_array([keys.slice(0, 20), keys.slice(20)])
    assert shard_of_keys(chunked, shards=5).tolist() == whole.tolist()
    assert shard_of_keys(keys.slice(13, 9), shards=5).tolist() == whole[13:22].tolist()


@pytest.mark.parametrize("bad", [["abc"], [None], ["zzzzzzzzzz"]])
def test_a_malformed_key_is_refused(bad):
    with pytest.raises(ValueError):
        shard_of_keys(pa.array(bad, pa.string()), shards=4)


@pytest.mark.parametrize("n", [0, -1, 5000])
def test_shard_counts_out_of_range_are_refused(n):
    with pytest.raises(ValueError):
        check_shards(n)


def test_split_by_shard_keeps_every_row_once_in_order():
    ids = pa.array([f"P-{i % 40}" for i in range(400)])
    rows = pa.table({c.PATIENT_ID: ids, c.PATIENT_KEY: pseudonymise(ids, key=KEY), "n": np.arange(400)})
    parts = split_by_shard(rows, shards=3)
    seen = []
    for shard, part in parts:
        assert set(shard_of_keys(part[c.PATIENT_KEY], shards=3).tolist()) == {shard}
        n = part["n"].to_pylist()
        assert n == sorted(n)
        assert part.num_rows == in_shard(rows, shard=shard, shards=3).num_rows
        seen += n
    assert sorted(seen) == list(range(400))


def _rows(ids: list[str], minutes: list[float]) -> pa.Table:
    ts = [T0 + timedelta(minutes=m) for m in minutes]
    return pa.table(
        {c.EVENT_ID: pa.array(ids, pa.string()), c.TIMESTAMP: pa.array(ts, pa.timestamp("us", tz="UTC"))}
    )


def test_seen_events_drop_what_was_stored_and_remember_what_is_new():
    seen = SeenEvents(horizon_us=HOUR_US)
    assert seen.fresh(_rows(["a", "b"], [0, 1]), stored=None)[c.EVENT_ID].to_pylist() == ["a", "b"]
    assert seen.fresh(_rows(["b", "c"], [1, 2]), stored=None)[c.EVENT_ID].to_pylist() == ["c"]
    assert seen.size == 3


def test_seen_events_read_the_lake_once_when_new_and_again_only_for_an_older_reading():
    calls: list[tuple[int, int | None]] = []
    lake = _rows(["x", "y", "z"], [-200, 5, 30])  # what this shard already has in Silver

    def stored(lo: int, hi: int | None) -> pa.Table:
        calls.append((lo, hi))
        us = pa.compute.cast(lake[c.TIMESTAMP], pa.int64()).to_numpy()
        keep = (us >= lo) & (us < (np.iinfo(np.int64).max if hi is None else hi))
        return lake.filter(pa.array(keep))

    seen = SeenEvents(horizon_us=HOUR_US)
    assert seen.fresh(_rows(["y", "n1"], [5, 10]), stored=stored)[c.EVENT_ID].to_pylist() == ["n1"]
    assert len(calls) == 1 and calls[0][1] is None  # first batch: everything from 1 h before it
    for m in range(11, 60):  # a steady stream: no further lake reads
        seen.fresh(_rows([f"s{m}"], [m]), stored=stored)
    assert seen.fresh(_rows(["z", "n2"], [30, 61]), stored=stored)[c.EVENT_ID].to_pylist() == ["n2"]
    assert len(calls) == 1
    # A reading from before anything remembered: the gap (and only the gap) is read.
    assert seen.fresh(_rows(["x"], [-200]), stored=stored).num_rows == 0
    assert len(calls) == 2 and calls[1][1] is not None


def test_seen_events_forget_beyond_the_horizon_so_memory_is_bounded():
    seen = SeenEvents(horizon_us=HOUR_US)
    for m in range(0, 6 * 60):  # six hours, one reading a minute
        seen.fresh(_rows([f"e{m}"], [m]), stored=None)
    assert 60 <= seen.size <= 60 * 9 // 8 + 2


def test_an_empty_shard_state_is_small():
    assert ShardState.new(EngineSettings()).size_bytes() < 4096


def test_a_long_steady_stream_with_late_readings_never_reads_the_lake_again():
    """Hours of readings, each batch holding some up to 10 minutes late (within the lateness): after
    the first batch's read, the memory always covers them (pruning included)."""
    reads: list[tuple[int, int | None]] = []

    def stored(lo: int, hi: int | None) -> pa.Table:
        reads.append((lo, hi))
        return _rows([], [])

    seen = SeenEvents(horizon_us=HOUR_US)
    for m in range(0, 4 * 60):
        seen.fresh(_rows([f"e{m}", f"late{m}"], [m, max(0, m - 10)]), stored=stored)
    assert len(reads) == 1
    assert seen.size <= 2 * 60 * 9 // 8 + 4  # and memory stayed within the horizon


def test_a_shards_memory_is_used_only_under_the_token_it_was_kept_with():
    """The pipeline keeps a shard's state in the worker and the token in keyed state: a stale or
    missing token (a restart, a moved shard, a retried bundle the runner discarded) gives no state,
    so the shard rebuilds it from the lake instead of using memory that may be ahead of the lake."""
    from pipelines.validation import _ShardMemory  # noqa: PLC0415

    memory = _ShardMemory()
    state = ShardState.new(EngineSettings())
    token = memory.keep("run", 3, state)
    assert memory.take("run", 3, None) is None  # the runner has no token: start afresh
    token = memory.keep("run", 3, state)
    assert memory.take("run", 3, "another-process:abc") is None  # another token: rebuild
    token = memory.keep("run", 3, state)
    assert memory.take("other-run", 3, token) is None  # another pipeline in the same process
    assert memory.take("run", 3, token) is state
    assert memory.take("run", 3, token) is None  # taken: a second bundle cannot use it twice


def test_a_shards_memory_bytes_track_its_pickled_size():
    """The per-batch metric (array bytes) stays within a small factor of the pickled size."""
    from tests.unit.test_gold_state import cohort  # noqa: PLC0415
    from vitals_lake.engine import ShardReaders, advance_shard  # noqa: PLC0415

    state = ShardState.new(EngineSettings())
    rows = cohort(2, patients=5, minutes=30, gated=True)
    advance_shard(state, rows, model=None, readers=ShardReaders.none())
    assert state.memory_bytes() > 5 * 1440 * 6 * 8  # five baseline rings at least
    assert 0.8 < state.size_bytes() / state.memory_bytes() < 1.5


def test_a_batch_run_reads_back_only_rows_ingested_before_it_started(tmp_path):
    """A shard seen first in a batch run fills its state from older rows only: what the run wrote
    itself (every shard before it) is not read back; a stream (no bound) reads everything."""
    from tests.factories import raw, reading  # noqa: PLC0415
    from vitals_lake import envelope  # noqa: PLC0415
    from vitals_lake.config import LocalLake  # noqa: PLC0415
    from vitals_lake.engine import BatchEngine, shard_readers  # noqa: PLC0415
    from vitals_lake.lake import Lake  # noqa: PLC0415

    lake = Lake(LocalLake(root=tmp_path / "lake"))
    lake.ensure_all()
    lines = [raw(reading(i, patient=f"P{i % 20:06d}", at=T0 + timedelta(seconds=10 * i))) for i in range(400)]
    ingested = int(T0.timestamp() * 1e6) + 5_000_000
    bronze = envelope.to_bronze(envelope.records_from_lines(lines), ingest_time_us=ingested, ref_prefix="f")
    engine = BatchEngine(lake, settings=EngineSettings(time_rules=None), key=KEY, clock=T0.timestamp)
    assert engine.run(bronze, batch_id="b0").silver.num_rows == 400
    lo = int(T0.timestamp() * 1e6) - HOUR_US
    for shard in range(2):
        everything = shard_readers(lake, shard=shard, shards=2).stored_ids(lo, None)
        assert everything.num_rows > 0
        older = shard_readers(lake, shard=shard, shards=2, ingested_before_us=ingested + 1)
        assert older.stored_ids(lo, None).num_rows == everything.num_rows
        assert (
            older.history is not None
            and older.history(
                pseudonymise(pa.array(["P000001", "P000002"]), key=KEY).to_pylist(), T0.timestamp() + 9e3
            ).num_rows
        )
        run_started = shard_readers(lake, shard=shard, shards=2, ingested_before_us=ingested)
        assert run_started.stored_ids(lo, None).num_rows == 0
        assert run_started.silver is not None and run_started.silver(lo, None).num_rows == 0
        assert run_started.history is not None
        assert run_started.history(["P000001", "P000002"], T0.timestamp() + 9e3).num_rows == 0


def test_a_late_reading_for_a_window_the_state_forgot_still_sees_the_runs_own_rows(tmp_path):
    """The bound applies to a state's first fill only: a reading later than the windows the state
    still holds makes it read that window back from Silver, the run's own rows included."""
    from tests.factories import raw, reading  # noqa: PLC0415
    from vitals_lake import envelope  # noqa: PLC0415
    from vitals_lake.config import LocalLake  # noqa: PLC0415
    from vitals_lake.engine import BatchEngine  # noqa: PLC0415
    from vitals_lake.lake import Lake  # noqa: PLC0415

    lake = Lake(LocalLake(root=tmp_path / "lake"))
    lake.ensure_all()
    engine = BatchEngine(lake, settings=EngineSettings(time_rules=None), key=KEY, clock=T0.timestamp)
    ingested = int(T0.timestamp() * 1e6) + 1_000_000  # after the engine started: the run's own rows

    def run(lines: list[bytes], batch: str) -> None:
        records = envelope.records_from_lines(lines)
        engine.run(envelope.to_bronze(records, ingest_time_us=ingested, ref_prefix=batch), batch_id=batch)

    run([raw(reading(i, at=T0 + timedelta(minutes=i))) for i in range(180)], "b0")  # three hours
    late = T0 + timedelta(minutes=5, seconds=30)
    run([raw(reading(1000, at=late))], "b1")  # two and a half hours late: that window was forgotten
    gold = lake.read("gold").to_pylist()
    (minute,) = [
        r for r in gold if r[c.WINDOW_SECONDS] == 60 and r[c.WINDOW_START] == T0 + timedelta(minutes=5)
    ]
    assert minute[c.READING_COUNT] == 2  # the window's first reading (the run's own) and the late one


@pytest.mark.parametrize("weak", [False, True])
def test_seen_events_match_a_plain_set_even_when_hashes_collide(weak, monkeypatch):
    """Random batches of new, repeated and forgotten ids (an id may come twice in one batch: the first
    is kept) against a set; ``weak``: a hash with a handful of values, so most look-ups and most
    repeats within a batch meet another id's hash and must be settled exactly."""
    if weak:
        monkeypatch.setattr(
            dedup, "hash64", lambda ids: (np.asarray(pa.compute.utf8_length(ids)) % 3).astype(np.uint64)
        )
    rng = np.random.default_rng(3)
    seen = SeenEvents(horizon_us=HOUR_US)
    t0_us = int(T0.timestamp() * 1_000_000)
    remembered: dict[str, int] = {}  # id -> its reading's time, µs
    for m in range(0, 600, 3):  # ten hours: the memory forgets as it goes
        ids = [f"id{int(k)}" for k in rng.integers(0, 400, int(rng.integers(1, 12)))]
        ids += [ids[int(k)] for k in rng.integers(0, len(ids), int(rng.integers(0, 4)))]  # resent
        got = seen.fresh(_rows(ids, [m] * len(ids)), stored=None)[c.EVENT_ID].to_pylist()
        assert got == [i for i in dict.fromkeys(ids) if i not in remembered]
        remembered.update({i: t0_us + m * 60_000_000 for i in got})
        assert seen.covered_from_us is not None  # what the memory dropped, the set drops too
        remembered = {i: t for i, t in remembered.items() if t >= seen.covered_from_us}
    assert seen.size >= len(remembered)


def test_a_shard_appends_each_new_key_once_and_a_crash_between_commits_loses_none(tmp_path):
    """The identity map's feed: keys new to a shard's state, once; appended before Silver, so a retry
    that stops at Silver's marker (its state, which remembered them, gone with the crash) lost none."""
    from tests.unit.test_gold_state import cohort  # noqa: PLC0415
    from vitals_lake.config import LocalLake  # noqa: PLC0415
    from vitals_lake.engine import ShardReaders, advance_shard, commit_silver  # noqa: PLC0415
    from vitals_lake.lake import BatchMarker, Lake  # noqa: PLC0415

    rows = cohort(3, patients=4, minutes=10, gated=True)
    state = ShardState.new(EngineSettings())
    first = advance_shard(state, rows.slice(0, 40), model=None, readers=ShardReaders.none())
    assert first.identities.num_rows == 4 and c.PATIENT_ID not in first.silver.column_names
    assert sorted(first.identities[c.PATIENT_ID].to_pylist()) == [f"P{p:06d}" for p in range(4)]
    later = advance_shard(state, rows.slice(40), model=None, readers=ShardReaders.none())
    assert later.identities.num_rows == 0 and later.silver.num_rows > 0  # known keys: nothing again

    lake = Lake(LocalLake(root=tmp_path / "lake"))
    # The crash: Silver committed, then the process died; the retry's fresh state computes the keys
    # again, and commit_silver meets Silver's marker.
    lake.append("silver", first.silver, marker=BatchMarker("silver", "b1"))
    again = advance_shard(
        ShardState.new(EngineSettings()), rows.slice(0, 40), model=None, readers=ShardReaders.none()
    )
    assert commit_silver(lake, again, batch_id="b1") is False  # already in Silver
    assert lake.count("patient_keys") == 4
    assert commit_silver(lake, again, batch_id="b1") is False and lake.count("patient_keys") == 4


def _lines(patient: str, start: datetime, count: int, step: timedelta, **vitals: object) -> list[bytes]:
    from tests.factories import raw, reading  # noqa: PLC0415

    return [raw(reading(i, patient=patient, at=start + i * step, **vitals)) for i in range(count)]


def _advance(state: ShardState, lines: list[bytes]):
    from tests.factories import gated_rows  # noqa: PLC0415
    from vitals_lake.engine import ShardReaders, advance_shard  # noqa: PLC0415

    return advance_shard(state, gated_rows(lines), model=None, readers=ShardReaders.none())


def _baseline(state: ShardState, patient: str) -> tuple[np.ndarray, np.ndarray, int]:
    from tests.factories import key_of  # noqa: PLC0415

    b = state.scorer.baselines
    slot = b.index.slot(key_of(patient))
    assert slot is not None, patient
    return b.median[slot].copy(), b.scale[slot].copy(), int(b.size[slot])


def test_a_patient_idle_for_a_day_leaves_the_shard_and_comes_back_afresh():
    """A shard runs for months: its memory follows the patients being monitored, not every patient it
    has ever seen. One not heard from for IDLE_PATIENT_AFTER is forgotten and, seen again, starts as a
    restart that finds no Silver history for them would; the others carry on unchanged."""
    from tests.factories import key_of  # noqa: PLC0415
    from vitals_lake.engine import IDLE_PATIENT_AFTER  # noqa: PLC0415

    minute = timedelta(minutes=1)
    gone, stays = "P-GONE", "P-STAYS"
    state, alone = ShardState.new(EngineSettings()), ShardState.new(EngineSettings())
    _advance(state, _lines(gone, T0, 60, minute, heart_rate=95) + _lines(stays, T0, 60, minute))
    _advance(alone, _lines(stays, T0, 60, minute))
    forgotten = []
    for hour in range(1, 27):  # the other patient carries on for a day and more
        batch = _lines(stays, T0 + hour * 60 * minute, 6, 10 * minute)
        forgotten.append(_advance(state, batch).forgotten)
        _advance(alone, batch)
    idle_hours = IDLE_PATIENT_AFTER // timedelta(hours=1)
    assert sum(forgotten) == 1 and forgotten.index(1) >= idle_hours - 1  # once, a day after
    assert state.scorer.patients == 1
    assert state.scorer.alerts.patient(key_of(gone)) is None
    # The patient who stayed: the same baselines and alert state as in a shard that never had the other.
    for got, want in zip(_baseline(state, stays), _baseline(alone, stays), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_equal(  # NaN equals NaN here
        vars(state.scorer.alerts.patient(key_of(stays))), vars(alone.scorer.alerts.patient(key_of(stays)))
    )
    # Back: the same state as a shard that never saw them (a restart with no history in the last day).
    back = _lines(gone, T0 + 28 * 60 * minute, 20, minute)
    fresh = ShardState.new(EngineSettings())
    _advance(state, back)
    _advance(fresh, back)
    for got, want in zip(_baseline(state, gone), _baseline(fresh, gone), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_patient_with_an_alert_open_is_not_forgotten():
    from tests.factories import key_of  # noqa: PLC0415

    minute = timedelta(minutes=1)
    state = ShardState.new(EngineSettings())
    sick = _lines("P-SICK", T0, 30, minute, spo2=84.0, respiration_rate=30, heart_rate=135)
    _advance(state, sick + _lines("P-OTHER", T0, 30, minute))
    alert = state.scorer.alerts.patient(key_of("P-SICK"))
    assert alert is not None and alert.is_open  # the condition held: an alert is open
    for hour in range(1, 27):
        assert _advance(state, _lines("P-OTHER", T0 + hour * 60 * minute, 6, 10 * minute)).forgotten == 0
    assert state.scorer.patients == 2
