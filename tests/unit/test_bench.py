"""The benchmark runner: structure of its results, never a speed target (that is `make bench`'s job)."""

from __future__ import annotations

import json
import math

import pytest

from bench import runner
from bench.runner import Context, Registry, Result


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


def test_the_runner_on_a_toy_registry(tmp_path, capsys):
    registry = Registry()
    calls = []

    @registry.register("toy", "a toy")
    def toy(ctx: Context) -> Result:
        result = Result("toy", "a toy")
        fast = ctx.measure("fast", lambda: calls.append("fast"), rows=100, group="g")
        slow = ctx.measure_prepared("slow", lambda: lambda: sum(range(10_000)), rows=1, group="g")
        result.add(fast, slow)
        result.ratio("fast vs slow", fast, slow)
        return result

    with pytest.raises(ValueError, match="twice"):
        registry.register("toy", "again")(toy)
    out = tmp_path / "r.json"
    assert runner.main(["--out", str(out), "--repeats", "3", "--no-memory"], registry=registry) == 0
    assert len(calls) == 1 + 3  # one warm-up, three timed runs, no memory run
    doc = json.loads(out.read_text())
    (result,) = doc["results"]
    assert [v["key"] for v in result["variants"]] == ["g: fast", "g: slow"]
    assert result["ratios"][0]["numerator"] == "g: fast" and result["ratios"][0]["value"] > 0
    printed = capsys.readouterr().out
    assert "== toy: a toy" in printed and "fast vs slow" in printed

    with pytest.raises(SystemExit):
        runner.main(["--only", "nope", "--out", str(out)], registry=registry)
