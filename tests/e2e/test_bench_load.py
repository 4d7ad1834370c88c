"""``python -m bench --only sustained_load --quick``: the whole local stack under a small load, measured.

Structure and conservation only (never a speed): the run produced readings, every one reached Bronze,
latencies were measured for every Silver row, and every process was sampled.
"""

from __future__ import annotations

import json

import pytest

from bench import runner

pytestmark = pytest.mark.timeout(400)


def test_quick_sustained_load_measures_the_whole_stack(tmp_path):
    out = tmp_path / "results.json"
    assert runner.main(["--only", "sustained_load", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert result["name"] == "sustained_load"
    (run,) = result["config"]["runs"]
    assert run["produced"] > 0
    assert run["drained_s"] is not None, "Bronze never held every reading produced"
    assert run["silver_latency_s"]["n"] >= 0.9 * run["produced"]  # Silver: all but the junk records
    assert 0 < run["silver_latency_s"]["p50"] <= run["silver_latency_s"]["p99"] < 120
    assert run["ingest_latency_s"]["p50"] <= run["silver_latency_s"]["p50"]
    for name in ("simulator", "tansu (Kafka)", "bridge", "pubsub emulator", "pipeline", "notifier function"):
        assert run["processes"][name]["peak_rss_mb"] > 0, name
    assert run["processes"]["pipeline"]["cpu_cores"] > 0
    assert (tmp_path / "results.md").read_text().count("sustained_load") >= 1
