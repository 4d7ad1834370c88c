"""Fault injection on the real local stack: each scenario runs, breaks something, and reports.

A scenario module exposes ``run_scenario(workdir: Path, *, quick: bool = False) -> FaultReport``. Tests
assert its checks (nothing lost, nothing doubled); ``make bench`` (``bench/faults.py``) prints its
figures. One implementation serves both, so the figures in the report are the ones the tests hold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FaultReport:
    """What one fault scenario did and what it proved.

    ``checks``: named claims, each True when it held ("nothing acknowledged lost": True).
    ``figures``: what was measured (counts, seconds), by name, in the units the name says
    (``acked_records``, ``outage_s``, ``drain_after_recovery_s``).
    """

    scenario: str
    description: str
    checks: dict[str, bool] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def failed(self) -> list[str]:
        return [name for name, held in self.checks.items() if not held]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
