"""The scoring benchmark in --quick mode (it trains each model kind on a small simulated cohort):
structure of its results, never a speed target (that is `make bench`'s job)."""

from __future__ import annotations

import json
import math

import pytest

from bench import runner


@pytest.fixture(scope="module")
def scoring_quick(tmp_path_factory) -> dict:
    """`python -m bench --only scoring --quick` run in process, its JSON read back."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    assert runner.main(["--only", "scoring", "--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_the_quick_scoring_run_writes_results_with_machine_info(scoring_quick):
    doc = scoring_quick
    assert doc["quick"] is True and doc["statistic"] == "median" and doc["repeats"] >= 1
    machine = doc["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"] and machine["platform"]
    assert [r["name"] for r in doc["results"]] == ["scoring"]
    result = doc["results"][0]
    assert result["config"]["rows"] > 0 and set(result["config"]["models"]) == {
        "zscore",
        "isolation_forest",
        "autoencoder",
    }
    groups = {v["group"] for v in result["variants"]}
    for model in ("zscore", "isolation_forest", "autoencoder"):
        assert f"model {model}" in groups and f"StreamScorer.score, {model}" in groups
    assert "features (BaselineState.update)" in groups


def test_every_variant_has_positive_throughput_and_median_of_its_runs(scoring_quick):
    doc = scoring_quick
    variants = doc["results"][0]["variants"]
    assert len({v["key"] for v in variants}) == len(variants)
    for v in variants:
        assert v["rows"] > 0 and v["seconds"] > 0 and v["rows_per_s"] > 0
        assert len(v["runs"]) == doc["repeats"]
        assert min(v["runs"]) <= v["seconds"] <= max(v["runs"])
        assert math.isclose(v["rows_per_s"], v["rows"] / v["seconds"], rel_tol=1e-9)
        assert v["peak_mb"] is None or v["peak_mb"] >= 0
    assert any(v["peak_mb"] is not None for v in variants)


def test_ratios_are_computed_from_the_variants_and_the_variants_did_the_same_work(scoring_quick):
    result = scoring_quick["results"][0]
    by_key = {v["key"]: v for v in result["variants"]}
    assert len(result["ratios"]) == 8  # batched vs one-row: 3 models, 3 stream scorers, 2 feature paths
    for r in result["ratios"]:
        expected = by_key[r["numerator"]]["rows_per_s"] / by_key[r["denominator"]]["rows_per_s"]
        assert math.isclose(r["value"], expected, rel_tol=1e-9), r
    ratio = next(r for r in result["ratios"] if r["label"].startswith("StreamScorer autoencoder"))
    assert ratio["numerator"].startswith("StreamScorer.score, autoencoder: batches of")
    assert ratio["denominator"] == "StreamScorer.score, autoencoder: 1-row batches"
    assert result["checks"] and all(result["checks"].values())
