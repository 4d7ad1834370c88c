"""The stream-age benchmark in --quick mode: structure, conservation and checks, never a speed target."""

from __future__ import annotations

import json
import math

from bench import runner, stream_age


def test_the_first_and_last_tenth_of_a_stream_are_measured_per_stage(tmp_path):
    out = tmp_path / "results.json"
    assert runner.main(["--only", "stream_age", "--quick", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    sizes = stream_age.QUICK
    config = result["config"]
    assert config["per_batch"] == sizes.batch
    assert config["batches"] == math.ceil(config["readings"] / sizes.batch)
    tenth = config["batches"] // stream_age.TENTH
    groups = list(dict.fromkeys(v["group"] for v in result["variants"]))
    assert groups == [f"{m} CPU" for m in (*stream_age.STAGES, stream_age.ALL)]
    for group in groups:
        first, last = (v for v in result["variants"] if v["group"] == group)
        assert first["label"] == f"batches 1-{tenth}"
        assert last["label"] == f"batches {config['batches'] - tenth + 1}-{config['batches']}"
        assert len(first["runs"]) == len(last["runs"]) == tenth
        assert first["seconds"] > 0 and last["seconds"] > 0
    ratios = {r["label"]: r["value"] for r in result["ratios"]}
    assert len(ratios) == len(groups) and all(v > 0 for v in ratios.values())
    assert result["checks"] and all(result["checks"].values()), result["checks"]
    # The simulator's faults reached the gate: some quarantined or duplicated, none lost.
    assert config["quarantined"] + config["duplicates"] > 0
