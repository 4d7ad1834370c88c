"""The sustained-load benchmark's judgement and measurements (pure parts; the whole-stack run is in
tests/e2e/test_bench_load.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bench import load
from tests.factories import T0, raw, reading, silver_rows
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake


def a_run(**kw) -> load.LoadRun:
    r = load.LoadRun(patients=5000, minutes=10, readings_per_s=1000.0)
    r.consumed_ratio = 1.0
    r.silver_latency_s = {"p50": 5.0, "p95": 8.0, "p99": 9.0}
    r.alert_latency_s = {"p50": 6.0, "p95": 9.0, "p99": 12.0}
    for k, v in kw.items():
        setattr(r, k, v)
    r.judge()
    return r


def test_a_run_within_every_target_holds():
    assert a_run().holds


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"consumed_ratio": 0.98}, "consumed/produced"),
        ({"silver_latency_s": {"p95": 10.5}}, "reading->Silver"),
        ({"silver_latency_s": {}}, "reading->Silver"),
        ({"alert_latency_s": {"p95": 15.2}}, "reading->alert"),
        ({"lag_first_half_max": 2_000, "lag_second_half_max": 40_000}, "lag growing"),
    ],
)
def test_each_target_missed_fails_the_run_with_its_reason(change, why):
    r = a_run(**change)
    assert not r.holds
    assert any(why in f for f in r.failures), r.failures


def test_a_backlog_of_a_few_commit_intervals_is_not_growth():
    r = a_run(lag_first_half_max=5_000, lag_second_half_max=9_000)
    assert not r.lag_growing and r.holds
    assert r.lag_seconds == pytest.approx(9.0)


def test_percentiles():
    p = load.percentiles(np.arange(1, 101, dtype=float))
    assert p["n"] == 100 and p["p50"] == pytest.approx(50.5) and p["max"] == 100
    assert p["p95"] == pytest.approx(95.05) and load.percentiles([]) == {}


def test_the_simulator_progress_line_is_read(tmp_path):
    log = tmp_path / "sim.log"
    log.write_bytes(
        b"simulator: 1,000 messages sent, 200 msg/s, simulated time x\n"
        b"simulator: 12,345 messages sent, 201 msg/s, simulated time y\n"
    )
    assert load._sent_so_far(log) == 12_345
    assert load._sent_so_far(tmp_path / "missing.log") == 0


def test_silver_latency_is_commit_time_minus_reading_time(tmp_path):
    lake = Lake(LocalLake(root=tmp_path / "lake"))
    lake.ensure_all()
    docs = [reading(i, at=T0 + timedelta(seconds=5 * i)) for i in range(4)]
    lake.append("silver", silver_rows([raw(d) for d in docs]))
    committed, ingested = load.silver_latencies(tmp_path / "lake")
    assert committed.shape == ingested.shape == (4,)
    # The file was written now; the readings are from T0 on: every latency is now - reading time.
    expected = (datetime.now(UTC) - T0).total_seconds() - 5 * np.arange(4)
    assert np.allclose(np.sort(committed)[::-1], expected, atol=30)
