"""The lake-age benchmark in --quick mode: structure, counts and checks, never a speed target."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest

from bench import lake_age, runner


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> dict:
    """`python -m bench --only lake_age --quick --repeats 1` in process; its result."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    assert runner.main(["--only", "lake_age", "--quick", "--repeats", "1", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    return result


def test_each_stage_is_measured_for_the_empty_and_the_full_lake(quick_run):
    variants = quick_run["variants"]
    groups = list(dict.fromkeys(v["group"] for v in variants))
    assert groups == [f"{s} CPU" for s in lake_age.STAGES] + [lake_age.ALL_THREADS, lake_age.CALLING_THREAD]
    labels = [lake_age.VARIANT_A, lake_age.VARIANT_B, lake_age.VARIANT_C]
    config = quick_run["config"]
    for group in groups:
        assert [v["label"] for v in variants if v["group"] == group] == labels
    for v in variants:
        assert v["rows"] == config["hour_readings"] > 0 and v["seconds"] > 0 and len(v["runs"]) == 1
        assert "us/reading" in v["note"]
    # Two ratios per group, B / A and C / A of CPU per reading: the inverse of the rows/s ratio.
    by_key = {v["key"]: v for v in variants}
    assert len(quick_run["ratios"]) == 2 * len(groups)
    for r in quick_run["ratios"]:
        a, other = by_key[r["numerator"]], by_key[r["denominator"]]
        assert a["label"] == lake_age.VARIANT_A and other["label"] in labels[1:]
        per_reading = (other["seconds"] / other["rows"]) / (a["seconds"] / a["rows"])
        assert math.isclose(r["value"], per_reading, rel_tol=1e-9), r
    # The target is reported per stage for B, never asserted.
    assert len(config["targets"]) == len(lake_age.STAGES)
    assert all(isinstance(ok, bool) for ok in config["targets"].values())


def test_the_history_precedes_the_hour_and_both_runs_count_the_same_rows(quick_run):
    config = quick_run["config"]
    sizes = lake_age.QUICK
    assert config["patients"] == sizes.patients and config["history_hours"] == sizes.history_hours
    # About one reading per patient per interval, sent over 6 hours and over 1.
    per_hour = sizes.patients * 3600 / sizes.interval
    assert 0.9 * per_hour < config["hour_readings"] < 1.2 * per_hour
    assert 0.9 * 6 * per_hour < config["history_readings"] < 1.1 * 6 * per_hour
    assert config["lake_before_the_hour"]["silver"] > 5 * per_hour * 0.9
    counts = config["counts"]
    a, b, c = (counts[v] for v in (lake_age.VARIANT_A, lake_age.VARIANT_B, lake_age.VARIANT_C))
    assert 0 < b["silver_inserted"] == c["silver_inserted"] <= a["silver_inserted"] <= config["hour_readings"]
    assert a["gold_hours"] == b["gold_hours"] == sizes.patients
    assert a["gold_minutes"] > 0 and a["rolling"] > 0 and a["diagnosis_hourly"] > 0
    assert quick_run["checks"] and all(quick_run["checks"].values()), quick_run["checks"]


def test_the_readings_split_at_the_hour_by_the_time_they_were_sent(tmp_path):
    sizes = lake_age.Sizes(patients=3, interval=600.0, batch=100, history_hours=2)
    readings = lake_age.simulate(tmp_path, sizes)
    assert readings.hour_start == lake_age.START + timedelta(hours=2)
    # 3 patients x 6 readings an hour, give or take a fault: 2 hours of history, 1 measured.
    assert 30 <= len(readings.history) <= 40 and 15 <= len(readings.hour) <= 22
    assert (tmp_path / "landing").is_dir() and (tmp_path / "reference").is_dir()
