"""Faults: the fault scenarios of ``harness.faults`` run on the real local stack, their figures reported.

The same scenario functions the end-to-end tests assert (``tests/e2e/test_faults.py`` and the
outage tests), so the figures here are the ones the tests hold. Each scenario runs in its own temporary
directory (with its own local stack); ``--quick`` runs the small sizes. Nothing is timed in repeats: a
fault scenario is one run, and its figures (records lost without recovery, recovery seconds, duplicates
removed) are counts and durations of that run. A failed check is printed as MISMATCH; a scenario that
cannot run at all (a missing prerequisite, a child process that died) becomes a failed ``<name>: ran``
check, its working directory kept for the logs, and the other scenarios still run.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bench.runner import Context, Result, benchmark
from harness.faults import FaultReport, broker, outages, pipeline_kill, poison, redelivery

NAME: Final = "faults"
TITLE: Final = "Faults on the real local stack: what each scenario lost, doubled and took to recover"

Scenario = Callable[..., FaultReport | list[FaultReport]]  # fn(workdir, *, quick) -> report(s)

# (name, run_scenario): every entry runs under ``python -m bench --only faults``.
SCENARIOS: Final[list[tuple[str, Scenario]]] = [
    ("pipeline_kill", pipeline_kill.run_scenario),
    ("redelivery", redelivery.run_scenario),
    ("poison", poison.run_scenario),
    ("broker_restart", broker.run_scenario),
    ("warehouse_outage", outages.run_warehouse_outage),
    ("notifier_outage", outages.run_notifier_outage),
]


def run_one(name: str, fn: Scenario, *, quick: bool, log: Callable[[str], None]) -> list[FaultReport]:
    """Run one scenario in a fresh temporary directory; removed when every check held, kept otherwise."""
    workdir = Path(tempfile.mkdtemp(prefix=f"vitals-fault-{name}-"))
    try:
        out = fn(workdir, quick=quick)
    # ScenarioError, StackError (a missing prerequisite, a service that died) are RuntimeErrors.
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log(f"  {name}: could not run: {exc}")
        failed = FaultReport(name, "could not run", checks={"ran": False})
        failed.notes.append(f"{type(exc).__name__}: {str(exc)[:500]} (logs kept in {workdir})")
        return [failed]
    reports = out if isinstance(out, list) else [out]
    if all(r.ok for r in reports):
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        for r in reports:
            r.notes.append(f"logs kept in {workdir}")
    for r in reports:
        log(f"  {r.scenario}: {'ok' if r.ok else 'FAILED ' + ', '.join(r.failed())} ({r.seconds:.0f} s)")
    return reports


@benchmark(NAME, TITLE)
def run(ctx: Context) -> Result:
    result = Result(NAME, TITLE)
    reports: list[FaultReport] = []
    for name, fn in SCENARIOS:
        reports += run_one(name, fn, quick=ctx.quick, log=ctx.log)
    for r in reports:
        result.checks.update({f"{r.scenario}: {check}": held for check, held in r.checks.items()})
        result.notes += [f"{r.scenario}: {n}" for n in r.notes]
    result.config = {"quick": ctx.quick, "scenarios": [r.to_json() for r in reports]}
    return result
