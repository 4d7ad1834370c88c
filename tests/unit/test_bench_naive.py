"""The naive variant's per-element Gold arithmetic agrees with the pipeline's vectorised Gold."""

from __future__ import annotations

import random

import pytest

from bench._naive import gold_row, merge_partials
from tests.factories import raw, reading, silver_rows
from vitals_lake import contract as c
from vitals_lake.summaries import gold_from_silver, window_partials


def rows_of(docs):
    return silver_rows([raw(d) for d in docs])


def test_merging_partials_in_any_order_equals_one_pass():
    rng = random.Random(7)
    docs = [reading(i, heart_rate=rng.randint(40, 160), spo2=float(rng.randint(85, 100))) for i in range(12)]
    whole = window_partials(rows_of(docs), window_seconds=60).to_pylist()[0]
    shuffled = docs[:]
    rng.shuffle(shuffled)
    parts = [
        window_partials(rows_of(shuffled[k : k + 4]), window_seconds=60).to_pylist()[0] for k in (0, 4, 8)
    ]
    merged = merge_partials(merge_partials(parts[2], parts[0]), parts[1])
    for key, value in whole.items():
        if key in (c.PATIENT_KEY, c.WINDOW_START):
            continue
        assert merged[key] == pytest.approx(value), key


def test_a_gold_row_from_merged_partials_equals_the_vectorised_gold_row():
    rng = random.Random(11)
    docs = [reading(i, heart_rate=rng.randint(40, 160), temperature=36.0 + i / 10) for i in range(12)]
    silver = rows_of(docs)
    expected = gold_from_silver(silver, window_seconds=60, updated_at_us=5).to_pylist()[0]
    parts = [window_partials(silver.slice(k, 4), window_seconds=60).to_pylist()[0] for k in (0, 4, 8)]
    merged = merge_partials(merge_partials(parts[0], parts[1]), parts[2])
    start_us = int(parts[0][c.WINDOW_START].timestamp() * 1e6)
    row = gold_row(parts[0][c.PATIENT_KEY], start_us, 60, merged, 5)
    assert row.keys() == expected.keys()
    for key, value in expected.items():
        assert row[key] == (pytest.approx(value) if isinstance(value, float) else value), key
