"""vitals_lake.model.features: per-patient robust baselines, the same in history and batch by batch,
no look-ahead."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa

from tests.factories import T0, raw, reading, silver_rows
from vitals_lake import contract as c
from vitals_lake.model.features import (
    DATA_AGE,
    FEATURE_NAMES,
    POPULATION_MEDIAN,
    POPULATION_SCALE,
    BaselineState,
    deviation_column,
    features_for_history,
)


def _history(n: int = 60, patients: int = 3, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    lines = []
    for p in range(patients):
        pid = f"P{p:06d}"
        for i in range(n):
            lines.append(
                raw(
                    reading(
                        i,
                        patient=pid,
                        at=T0 + timedelta(minutes=i, seconds=p),
                        **{c.HEART_RATE: int(70 + 10 * p + rng.integers(-3, 4))},
                        **{c.TEMPERATURE: round(36.8 + rng.normal(0, 0.1), 1)},
                    )
                )
            )
    return silver_rows(lines).sort_by([(c.TIMESTAMP, "ascending")])


def test_history_equals_batch_by_batch():
    table = _history()
    whole = features_for_history(table)
    state = BaselineState()
    parts = [state.update(table.slice(start, 17)) for start in range(0, table.num_rows, 17)]
    batched = pa.concat_tables(parts)
    assert set(FEATURE_NAMES) <= set(whole.column_names)
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(
            whole[name].to_numpy(zero_copy_only=False), batched[name].to_numpy(zero_copy_only=False)
        )


def test_warmup_uses_population_reference_then_own_baseline():
    table = _history(n=40, patients=1)
    f = features_for_history(table)
    hr_dev = f[deviation_column(c.HEART_RATE)].to_numpy()
    hr = f[c.HEART_RATE].to_numpy()
    j = c.VITAL_NAMES.index(c.HEART_RATE)
    warmup = BaselineState().warmup
    # Before warm-up: against the population midpoint and scale.
    np.testing.assert_allclose(hr_dev[:warmup], (hr[:warmup] - POPULATION_MEDIAN[j]) / POPULATION_SCALE[j])
    # After: against the patient's own median, so a typical reading is near 0.
    assert np.median(np.abs(hr_dev[warmup:])) < 1.0
    assert not np.allclose(hr_dev[warmup:], (hr[warmup:] - POPULATION_MEDIAN[j]) / POPULATION_SCALE[j])


def test_patient_far_from_population_is_not_anomalous_after_warmup():
    lines = [raw(reading(i, at=T0 + timedelta(minutes=i), **{c.HEART_RATE: 115 + i % 3})) for i in range(40)]
    f = features_for_history(silver_rows(lines))
    dev = np.abs(f[deviation_column(c.HEART_RATE)].to_numpy())
    assert dev[:5].min() > 3  # population reference: a resting 115/min is far out
    assert dev[20:].max() < 2  # own baseline: it is this patient's normal


def test_no_look_ahead():
    table = _history(n=40, patients=2)
    base = features_for_history(table)
    hr = table[c.HEART_RATE].to_numpy(zero_copy_only=False).copy()
    k = 50
    hr[k] = 250  # change one future reading (rows are in time order)
    hr_index = table.schema.get_field_index(c.HEART_RATE)
    changed = table.set_column(hr_index, c.HEART_RATE, pa.array(hr, pa.int16()))
    after = features_for_history(changed)
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(
            base[name].to_numpy(zero_copy_only=False)[:k], after[name].to_numpy(zero_copy_only=False)[:k]
        )
    assert after[deviation_column(c.HEART_RATE)].to_numpy()[k] > 5
    assert base[deviation_column(c.HEART_RATE)].to_numpy()[k] < 5


def test_data_age_is_seconds_since_previous_reading():
    lines = [raw(reading(i, at=T0 + timedelta(seconds=s))) for i, s in enumerate((0, 60, 180, 190))]
    f = features_for_history(silver_rows(lines))
    np.testing.assert_allclose(f[DATA_AGE].to_numpy(), [0, 60, 120, 10])
