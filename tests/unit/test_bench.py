"""The benchmark runner: structure of its results, never a speed target (that is `make bench`'s job)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import faults as bench_faults
from bench import runner
from bench.runner import Context, Registry, Result
from harness.faults import FaultReport
from harness.faults.harness import ScenarioError


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


def _fault_report(name: str, *, ok: bool = True) -> FaultReport:
    return FaultReport(
        name,
        f"{name} broken on purpose",
        checks={"nothing lost": True, "nothing doubled": ok},
        figures={"readings_sent": 1200, "lost": 0, "recovery_s": 12.34, "rewound": [1, 2]},
        notes=["a note"],
        seconds=3.5,
    )


def test_fault_scenarios_run_in_their_own_directory_and_a_crash_is_a_failed_check():
    seen: list[Path] = []

    def one(workdir: Path, *, quick: bool = False) -> FaultReport:
        seen.append(workdir)
        assert workdir.is_dir() and quick
        return _fault_report("one")

    def two(workdir: Path, *, quick: bool = False) -> list[FaultReport]:
        seen.append(workdir)
        return [_fault_report("two-a"), _fault_report("two-b", ok=False)]

    def broken(workdir: Path, *, quick: bool = False) -> FaultReport:
        raise ScenarioError("the pipeline exited")

    logged: list[str] = []
    assert [r.scenario for r in bench_faults.run_one("one", one, quick=True, log=logged.append)] == ["one"]
    reports = bench_faults.run_one("two", two, quick=True, log=logged.append)
    assert [r.ok for r in reports] == [True, False]
    assert not seen[0].exists()  # every check held: removed
    assert seen[1].exists() and any(str(seen[1]) in n for n in reports[1].notes)  # kept for the logs
    shutil.rmtree(seen[1])
    (crashed,) = bench_faults.run_one("broken", broken, quick=True, log=logged.append)
    assert crashed.scenario == "broken" and crashed.failed() == ["ran"]
    assert "the pipeline exited" in crashed.notes[0]
    shutil.rmtree(crashed.notes[0].split("logs kept in ")[1].rstrip(")"))


def test_a_result_of_fault_reports_renders_its_figures_in_console_and_markdown(tmp_path, capsys, monkeypatch):
    """No variants, no ratios: the console and markdown show a table of figures per scenario."""
    monkeypatch.setattr(
        bench_faults,
        "SCENARIOS",
        [
            ("kill", lambda w, *, quick=False: _fault_report("kill")),
            ("storm", lambda w, *, quick=False: _fault_report("storm", ok=False)),
        ],
    )
    registry = Registry()
    registry.register(bench_faults.NAME, bench_faults.TITLE)(bench_faults.run)
    out = tmp_path / "r.json"
    (tmp_path / "r.png").write_bytes(b"stale chart of an earlier run")
    assert runner.main(["--out", str(out), "--quick"], registry=registry) == 0

    printed = capsys.readouterr().out
    assert "== faults:" in printed and "variant" not in printed
    assert "figures, kill (3.5 s):" in printed and "readings_sent  1,200" in printed
    assert "ok        kill: nothing lost" in printed and "MISMATCH  storm: nothing doubled" in printed

    (result,) = json.loads(out.read_text())["results"]
    assert result["variants"] == [] and result["ratios"] == []
    assert [s["scenario"] for s in result["config"]["scenarios"]] == ["kill", "storm"]
    assert result["checks"] == {
        "kill: nothing lost": True,
        "kill: nothing doubled": True,
        "storm: nothing lost": True,
        "storm: nothing doubled": False,
    }
    assert "storm: a note" in result["notes"]

    md = out.with_suffix(".md").read_text()
    assert "| variant |" not in md and "![" not in md
    assert not out.with_suffix(".png").exists()  # nothing to plot: the stale chart is gone
    assert "### kill: kill broken on purpose (ok, 3.5 s)" in md
    assert "### storm: storm broken on purpose (**FAILED**, 3.5 s)" in md
    assert "| figure | value |" in md and "| readings_sent | 1,200 |" in md
    assert "| recovery_s | 12.3 |" in md and "| rewound | [1,2] |" in md
    assert "- **MISMATCH**: storm: nothing doubled" in md
