"""A replay's windows follow its place in the input, not the clock: the same file always makes the same
windows, shard batches and commits, however fast the machine reads it."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.sources import REPLAY_WINDOW_ROWS, InReplayWindows, replay_batch_id, replay_place


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
