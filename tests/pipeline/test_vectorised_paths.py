"""The vectorised hot path against the per-reading code it replaced, row for row, on a simulated day
with the simulator's faults.

``tests/reference_baselines.py``, ``tests/reference_alerting.py`` and ``tests/reference_gold.py`` keep
the baselines, the alert rule, the Gold partials and their merge exactly as they were before the hot
path was vectorised (a Python loop per patient and per reading; Arrow group-bys). Two batch
engines take the same batches, one with the reference state in every shard: every Silver row
(features through the model's scores, alert flags), alert event, Gold row and rolling mean must be
identical; partials and merged partials are compared directly.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml import evaluate, train
from tests.reference_alerting import PerPatientAlertTracker
from tests.reference_baselines import PerReadingBaselines
from tests.reference_gold import merge_partials_by_sorting, window_partials_by_group_by
from vitals_lake import contract as c
from vitals_lake import envelope
from vitals_lake.engine import BatchEngine, EngineOutput, EngineSettings, ShardState
from vitals_lake.gold_state import merge_partials
from vitals_lake.model.features import FEATURE_NAMES, BaselineState
from vitals_lake.model.serving import ModelWatcher, ScorerState
from vitals_lake.summaries import PARTIAL_LAST, window_partials, window_partials_each

KEY = b"vectorised-paths-test-key-0123456789"
WALL_CLOCK = {c.UPDATED_AT}  # when a row was computed: differs between any two runs


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], Path]:
    """A simulated day (faults included) of 12 patients at one reading a minute, and a model trained on
    a cohort of its own."""
    root = tmp_path_factory.mktemp("day")
    readings, _ = evaluate.simulate(
        root / "day", patients=12, hours=24, interval=60, seed=7, episode_rate=0.6
    )
    train_readings, labels = evaluate.simulate(root / "train", patients=10, hours=3, interval=60, seed=8)
    train.train(train_readings, labels, root / "model", model="isolation_forest", seed=8)
    return readings.read_bytes().splitlines(), root / "model"


def _engine(model: Path, *, reference: bool) -> BatchEngine:
    settings = EngineSettings(time_rules=None, allowed_lateness=timedelta(minutes=10))
    engine = BatchEngine(
        None,
        settings=settings,
        key=KEY,
        model=ModelWatcher(str(model), poll_seconds=1e9),
        patients=c.PATIENTS_SCHEMA.empty_table(),
        restore=False,
    )
    if reference:
        for shard in range(settings.shards):
            state = ShardState.new(settings)
            state.scorer = ScorerState(
                rule=settings.rule,
                baselines=PerReadingBaselines(),  # type: ignore[arg-type]
                alerts=PerPatientAlertTracker(),  # type: ignore[arg-type]
            )
            engine.states[shard] = state
    return engine


def _rows(table: pa.Table, *keys: str) -> pa.Table:
    table = table.drop_columns([n for n in table.column_names if n in WALL_CLOCK])
    return table.sort_by([(k, "ascending") for k in keys])


def _same(new: EngineOutput, old: EngineOutput) -> None:
    assert _rows(new.silver, c.EVENT_ID).equals(_rows(old.silver, c.EVENT_ID))
    assert _rows(new.alerts, c.ALERT_ID, c.ALERT_STATE, c.EVENT_TIME).equals(
        _rows(old.alerts, c.ALERT_ID, c.ALERT_STATE, c.EVENT_TIME)
    )
    gold_keys = (c.PATIENT_KEY, c.WINDOW_SECONDS, c.WINDOW_START)
    assert _rows(new.gold, *gold_keys).equals(_rows(old.gold, *gold_keys))
    assert _rows(new.rolling, *c.ROLLING_KEY).equals(_rows(old.rolling, *c.ROLLING_KEY))
    assert (new.offered, new.duplicates) == (old.offered, old.duplicates)


@pytest.mark.parametrize("batch", [997, 30_000])
def test_the_vectorised_engine_matches_the_per_reading_one_row_for_row(day, batch):
    lines, model = day
    new, old = _engine(model, reference=False), _engine(model, reference=True)
    silver = opened = duplicates = quarantined = 0
    for number, start in enumerate(range(0, len(lines), batch)):
        records = envelope.records_from_lines(lines[start : start + batch], source="file")
        bronze = envelope.to_bronze(records, ingest_time_us=0, ref_prefix="file:day")
        a = new.process(bronze, batch_id=f"b{number}", window_start_us=0)
        b = old.process(bronze, batch_id=f"b{number}", window_start_us=0)
        _same(a, b)
        silver += a.silver.num_rows
        opened += int(pc.sum(pc.equal(a.alerts[c.ALERT_STATE], "opened")).as_py() or 0)
        duplicates += a.duplicates
        quarantined += a.quarantine.num_rows
    # The day exercised what it is meant to: faults, duplicates, alerts, alert episodes.
    assert silver > 12 * 1300 and quarantined > 0 and duplicates > 0 and opened > 0
    assert sum(s.scorer.alerts.episode_rows for s in new.states.values()) > 0
    assert a.silver[c.ANOMALY_SCORE].null_count == 0  # the model scored (the features reached it)


def test_baseline_features_match_the_per_reading_code_in_any_batching(day):
    """The features alone (every column, NaN where a vital is missing), over the valid rows of the day
    cut into batches of very different sizes, out-of-order rows included."""
    lines, _ = day
    engine = _engine(day[1], reference=False)
    records = envelope.records_from_lines(lines, source="file")
    gated = engine.gate(envelope.to_bronze(records, ingest_time_us=0, ref_prefix="f"), batch_id="g")
    rows = pa.concat_tables([t for _, t in gated.shards])
    rng = np.random.default_rng(3)
    shuffled = rows.take(pa.array(rng.permutation(rows.num_rows)))  # late and early rows everywhere
    for table, size in ((rows, 1), (rows, 50), (shuffled, 400), (rows, rows.num_rows)):
        ref, vec = PerReadingBaselines(), BaselineState()
        for start in range(0, table.num_rows, size if size > 1 else 1):
            part = table.slice(start, size)
            a, b = vec.update(part), ref.update(part)
            for name in FEATURE_NAMES:
                np.testing.assert_array_equal(
                    a[name].to_numpy(zero_copy_only=False),
                    b[name].to_numpy(zero_copy_only=False),
                    err_msg=name,
                )
            if size == 1 and start > 3000:
                break  # one row at a time: the first 3,000 rows are enough (and slow in the reference)


@pytest.mark.parametrize("seconds", [60, 3600])
def test_merged_gold_partials_match_the_per_column_sorting_code(day, seconds):
    """Partials of the day's valid rows cut into batches (shuffled: late readings), merged at once."""
    lines, model = day
    engine = _engine(model, reference=False)
    records = envelope.records_from_lines(lines, source="file")
    gated = engine.gate(envelope.to_bronze(records, ingest_time_us=0, ref_prefix="f"), batch_id="g")
    rows = pa.concat_tables([t for _, t in gated.shards])
    rows = rows.take(pa.array(np.random.default_rng(5).permutation(rows.num_rows)))
    parts = pa.concat_tables(
        [window_partials(rows.slice(s, 700), window_seconds=seconds) for s in range(0, rows.num_rows, 700)]
    )
    assert parts.num_rows > parts.group_by([c.PATIENT_KEY, c.WINDOW_START]).aggregate([]).num_rows
    assert merge_partials(parts).equals(merge_partials_by_sorting(parts))
    # The same partials again with other latest values at the same times: the later partial wins.
    again = parts
    for name in PARTIAL_LAST:
        index = again.schema.get_field_index(name)
        again = again.set_column(index, name, pc.add(again[name], 1.0))
    tied = pa.concat_tables([parts, again])
    assert merge_partials(tied).equals(merge_partials_by_sorting(tied))


@pytest.mark.parametrize("seconds", [60, 3600])
def test_window_partials_match_arrow_group_by(day, seconds):
    """Alone and beside the one-minute size. The day's Silver rows shuffled (late readings), with
    readings at the same instant as others but other values (ties: the later row is "last") and with
    missing vitals, scores and flags."""
    lines, model = day
    engine = _engine(model, reference=False)
    records = envelope.records_from_lines(lines, source="file")
    silver = engine.process(
        envelope.to_bronze(records, ingest_time_us=0, ref_prefix="f"), batch_id="w", window_start_us=0
    ).silver
    tied = silver.slice(0, 500)
    for name in (c.HEART_RATE, c.TEMPERATURE, c.ANOMALY_SCORE):
        tied = _replace(tied, name, pc.add(tied[name], 1))
    tied = _replace(tied, c.WARD, pa.nulls(tied.num_rows, pa.string()))
    rows = pa.concat_tables([silver, tied]).combine_chunks()
    rows = rows.take(pa.array(np.random.default_rng(9).permutation(rows.num_rows)))
    # Holes in every kind of column.
    for name in (c.SPO2, c.SYSTOLIC, c.ANOMALY_SCORE, "flag_fever", c.NEWS2_SCORE, c.WARD):
        holes = pa.array(np.random.default_rng(len(name)).random(rows.num_rows) < 0.2)
        rows = _replace(rows, name, pc.if_else(holes, pa.scalar(None, rows[name].type), rows[name]))
    for part in (rows, rows.slice(0, 1), rows.slice(0, 0), rows.slice(1000, 777)):
        new = window_partials(part, window_seconds=seconds)
        old = window_partials_by_group_by(part, window_seconds=seconds)
        keys = [(c.PATIENT_KEY, "ascending"), (c.WINDOW_START, "ascending")]
        assert new.equals(new.sort_by(keys))  # ordered by patient and window (Arrow's order is its own)
        assert new.equals(old.sort_by(keys))
        # Several sizes at once (one sort, one gather per column) give each size's partials exactly.
        minutes, ours = window_partials_each(part, window_seconds=(60, seconds))
        assert ours.equals(new)
        assert minutes.equals(window_partials_by_group_by(part, window_seconds=60).sort_by(keys))


def _replace(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    field = table.schema.field(name).with_nullable(True)
    return table.set_column(table.schema.get_field_index(name), field, values.cast(field.type))
