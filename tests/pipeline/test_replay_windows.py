"""A replay's windows follow its place in the input, not the clock: the same file always makes the same
windows, shard batches and commits, however fast the machine reads it."""

from __future__ import annotations

from datetime import timedelta

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from deltalake import DeltaTable

from pipelines import sources
from pipelines.beam_vitals import run
from pipelines.sources import REPLAY_WINDOW_ROWS, InReplayWindows, replay_batch_id, replay_place
from tests.factories import T0, raw, reading
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake


@pytest.mark.parametrize("part", ["f0", "f123456", "b2000000"])
def test_a_replay_batch_id_gives_back_the_place_it_was_named_for(part):
    # The run id may hold dashes (a user's --run_id); the place is the part's number.
    assert replay_place(replay_batch_id(1_764_000_000_000_000, part, "re-run-7")) == int(part[1:])


def test_batches_are_windowed_by_their_first_input_row():
    places = [0, 100_000, REPLAY_WINDOW_ROWS - 1, REPLAY_WINDOW_ROWS, 2 * REPLAY_WINDOW_ROWS + 5]
    ids = [replay_batch_id(7, f"f{n}", "run") for n in places]
    expected = [(i, n // REPLAY_WINDOW_ROWS) for i, n in zip(ids, places, strict=True)]

    def window_of(batch, window=beam.DoFn.WindowParam):
        return batch[0], int(window.start)

    with beam.Pipeline() as p:
        got = (
            p
            | beam.Create([(i, pa.table({"x": [1]})) for i in reversed(ids)])  # arrival order does not matter
            | InReplayWindows()
            | beam.Map(window_of)
        )
        assert_that(got, equal_to(expected))


def _replay(path, lake_dir):
    run(["--input-jsonl", str(path), "--lake", str(lake_dir), "--batch-size", "100"])
    return Lake(LocalLake(root=lake_dir))


def test_a_replay_in_several_windows_writes_what_one_window_writes(tmp_path, monkeypatch):
    lines = [
        raw(reading(i, patient=f"P{p:06d}", at=T0 + timedelta(seconds=10 * i)))
        for i in range(60)
        for p in range(10)
    ]
    path = tmp_path / "readings.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    one = _replay(path, tmp_path / "one")
    monkeypatch.setattr(sources, "REPLAY_WINDOW_ROWS", 200)  # 600 lines: three windows
    three = _replay(path, tmp_path / "three")

    gold = DeltaTable(three.uri("gold"))
    assert DeltaTable(one.uri("gold")).version() == 1 and gold.version() == 3  # a commit per window
    key = [(k, "ascending") for k in c.GOLD_KEY]
    got, want = three.read("gold").sort_by(key), one.read("gold").sort_by(key)
    assert got.num_rows == want.num_rows > 0
    for field in c.GOLD_SCHEMA:
        if pa.types.is_floating(field.type):  # partials merged in another order: the last bits differ
            a, b = (t[field.name].to_numpy() for t in (got, want))
            assert np.allclose(a, b, equal_nan=True, rtol=1e-12), field.name
        elif field.name != c.UPDATED_AT:
            assert got[field.name].equals(want[field.name]), field.name
    ids = [(c.EVENT_ID, "ascending")]
    assert three.read("silver").sort_by(ids).num_rows == one.read("silver").num_rows == len(lines)
