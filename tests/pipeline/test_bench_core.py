"""The pipeline-core and growth benchmarks in --quick mode: structure and checks, never a speed target."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from bench import pipeline_core, runner


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, object]:
    """`python -m bench --only pipeline_core growth --quick` in process; its JSON and output folder."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    assert runner.main(["--only", "pipeline_core", "growth", "--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text()), out


def _has_baseline() -> bool:
    """Whether this checkout holds the issue's starting commit (a shallow clone does not)."""
    root = Path(pipeline_core.__file__).resolve().parents[1]
    probe = ["git", "-C", str(root), "cat-file", "-e", f"{pipeline_core.BASELINE_REV}^{{commit}}"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _result(doc: dict, name: str) -> dict:
    return next(r for r in doc["results"] if r["name"] == name)


def _check_ratios(result: dict) -> None:
    by_key = {v["key"]: v for v in result["variants"]}
    assert len(by_key) == len(result["variants"])
    for r in result["ratios"]:
        expected = by_key[r["numerator"]]["rows_per_s"] / by_key[r["denominator"]]["rows_per_s"]
        assert math.isclose(r["value"], expected, rel_tol=1e-9), r


def test_pipeline_core_measures_four_engines_and_the_start_up_on_the_same_readings(quick_run):
    doc, _ = quick_run
    result = _result(doc, "pipeline_core")
    keys = [v["key"] for v in result["variants"]]
    pc = pipeline_core
    assert keys == [
        pc.VARIANT_A,
        pc.VARIANT_A_STARTUP,
        pc.VARIANT_A_MARGINAL,
        pc.VARIANT_B,
        pc.VARIANT_C,
        pc.VARIANT_D,
        # E: the starting commit, from this checkout's history; a shallow clone lacks it.
        *([pc.VARIANT_E, pc.VARIANT_E_STARTUP, pc.VARIANT_E_MARGINAL] if _has_baseline() else []),
    ]
    config = result["config"]
    n = config["readings"]
    rows = {v["key"]: v["rows"] for v in result["variants"]}
    assert rows[pc.VARIANT_A] == rows[pc.VARIANT_C] == rows[pc.VARIANT_D] == n > pc.STARTUP_LINES
    assert rows[pc.VARIANT_A_STARTUP] == pc.STARTUP_LINES and rows[pc.VARIANT_B] == config["naive_readings"]
    assert rows[pc.VARIANT_A_MARGINAL] == n - pc.STARTUP_LINES
    baseline = _has_baseline()
    pairs = [(pc.VARIANT_A, pc.VARIANT_A_STARTUP, pc.VARIANT_A_MARGINAL)]
    if baseline:
        assert rows[pc.VARIANT_E] == n and rows[pc.VARIANT_E_STARTUP] == pc.STARTUP_LINES
        assert rows[pc.VARIANT_E_MARGINAL] == n - pc.STARTUP_LINES
        assert config["baseline_rev"] == pc.BASELINE_REV
        pairs.append((pc.VARIANT_E, pc.VARIANT_E_STARTUP, pc.VARIANT_E_MARGINAL))
    else:
        assert config["baseline_rev"] is None
        assert any(
            note.startswith(f"E, the pipeline at {pc.BASELINE_REV}, not run") for note in result["notes"]
        )
    # The marginal run of each round is that round's full run minus its start-up run, paired in order.
    runs = {v["key"]: v["runs"] for v in result["variants"]}
    for full, startup, marginal in pairs:
        assert len(runs[full]) == len(runs[startup]) == len(runs[marginal])
        pairwise = [max(f - s, 1e-9) for f, s in zip(runs[full], runs[startup], strict=True)]
        assert runs[marginal] == pytest.approx(pairwise)
    for v in result["variants"]:
        assert v["rows"] > 0 and v["seconds"] > 0 and v["rows_per_s"] > 0
        assert math.isclose(v["rows_per_s"], v["rows"] / v["seconds"], rel_tol=1e-9)
    assert [(r["numerator"], r["denominator"]) for r in result["ratios"]] == [
        (pc.VARIANT_A, pc.VARIANT_B),
        (pc.VARIANT_A, pc.VARIANT_C),
        (pc.VARIANT_A_MARGINAL, pc.VARIANT_D),
        (pc.VARIANT_A, pc.VARIANT_D),
        *([(pc.VARIANT_A_MARGINAL, pc.VARIANT_E_MARGINAL)] if baseline else []),
    ]
    _check_ratios(result)
    # The variants did the same work: the same Silver, Gold minute and hour rows; DuckDB conserved every line.
    assert result["checks"] and all(result["checks"].values()), result["checks"]
    assert config["counts"]["A"] == config["counts"]["C"] and config["counts"]["A"]["silver"] > 0
    assert config["naive_sample_counts"]["B"] == config["naive_sample_counts"]["C"]
    duck = config["duckdb_counts"]
    assert duck["silver"] + duck["quarantined"] + duck["duplicates"] == n
    # Where the CPU goes: every step named, shares of one run that add up to it.
    steps = [s["step"] for s in config["profile"]]
    assert steps[:-1] == [name for name, _ in pc._STEPS]
    assert math.isclose(sum(s["share"] for s in config["profile"]), 1.0, rel_tol=1e-6)
    assert config["profile"][0]["seconds"] > 0  # parse_batch ran under the profiler
    assert set(config["targets"]) == {
        "A >= 20x B",
        "A >= 0.5x C",
        "A marginal >= 100,000 readings/CPU-s",
        "A marginal >= 0.2x D",
        *(["A marginal >= 7.5x E marginal"] if baseline else []),
    }  # reported, not asserted


def test_the_marginal_run_subtracts_each_rounds_start_up_and_takes_the_median():
    """Rounds drift together: pairing a round's full run with its own start-up run cancels a slow round,
    where subtracting the two medians would not."""
    pc = pipeline_core
    full = runner.Variant(pc.VARIANT_A, 1_000_200, 11.0, [10.0, 14.0, 11.0])
    startup = runner.Variant(pc.VARIANT_A_STARTUP, 200, 4.0, [4.0, 7.0, 3.0])
    marginal = pc.marginal_variant(full, startup)
    assert marginal.label == pc.VARIANT_A_MARGINAL and marginal.rows == 1_000_000
    assert marginal.runs == [6.0, 7.0, 8.0] and marginal.seconds == 7.0  # medians alone: 11 - 4 = 7 too
    assert "125,000 to 166,667 readings/CPU-s" in marginal.note  # the rounds' range
    slow_startup = runner.Variant(pc.VARIANT_A_STARTUP, 200, 4.0, [4.0, 8.0, 3.0])
    slow_round = pc.marginal_variant(full, slow_startup)
    assert slow_round.runs == [6.0, 6.0, 8.0] and slow_round.seconds == 6.0  # medians: 11 - 4 = 7


def test_a_baseline_commit_the_checkout_lacks_is_a_reason_not_a_crash(tmp_path):
    """A shallow clone lacks the issue's commit: the bench notes why E did not run and goes on."""
    missing = "0" * 40
    reason = pipeline_core.baseline_pipeline(tmp_path / "tree", missing, tmp_path / "r", tmp_path / "l", 1)
    assert isinstance(reason, str) and missing in reason
    assert not (tmp_path / "tree").exists()


def test_a_failed_pipeline_run_raises_with_the_end_of_its_log(tmp_path):
    """The runs' log stays out of the bench's output, unless a run fails: then its end is the error."""
    missing = tmp_path / "no-such-readings.jsonl"
    with pytest.raises(RuntimeError, match="exited with 1") as failed:
        pipeline_core.run_pipeline_process(missing, tmp_path / "lake", tmp_path / "model")
    assert f"No such file or directory: '{missing}'" in str(failed.value)


def test_growth_compares_gold_merge_sizes_and_maintenance(quick_run):
    doc, _ = quick_run
    result = _result(doc, "growth")
    groups = {v["group"] for v in result["variants"]}
    assert groups == {
        "gold MERGE of one batch",
        "read one day (silver)",
        "read one day (gold)",
        "commit through one Lake (reloaded every 10 versions)",
        "commit through one kept DeltaTable object (control)",
    }
    for v in result["variants"]:
        assert v["rows"] > 0 and v["seconds"] > 0 and v["rows_per_s"] > 0
    assert len(result["ratios"]) == 5
    assert result["config"]["commits"] == 60  # the quick size
    _check_ratios(result)
    config = result["config"]
    assert config["gold_rows_10N"] == 10 * config["gold_rows_N"]
    files = config["files_per_partition"]
    for layer in ("silver", "gold"):
        assert sum(files["before"][layer].values()) > sum(files["after"][layer].values()) >= 1
    assert result["checks"] and all(result["checks"].values()), result["checks"]


def test_the_run_writes_a_markdown_table_and_a_plot_next_to_the_json(quick_run):
    doc, out = quick_run
    md, png = out.with_suffix(".md"), out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert f"({png.name})" in text
    for r in doc["results"]:
        assert f"## {r['name']}:" in text
        for v in r["variants"]:
            assert f"| {v['key']} |" in text
