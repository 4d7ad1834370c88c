"""Test tiers by cost. A test's tier is its folder, ``tests/<tier>/``, and its pytest marker (declared in
pyproject.toml); tests/conftest.py marks every test here, so ``pytest -m unit`` selects exactly what
``pytest tests/unit`` collects. A test marked with another tier, or outside a tier folder, stops the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

# Cheapest first. `make test-fast` runs unit alone; `make test-<tier>` any one of them.
TIERS: Final = ("unit", "property", "pipeline", "infra", "integration", "e2e")


def mark_tiers(items: list[pytest.Item], tests_dir: Path) -> None:
    """Mark each item under ``tests_dir`` with its tier; raise ``pytest.UsageError`` naming every test
    that is outside a tier folder or marked with another tier."""
    misplaced = []
    for item in items:
        try:
            parts = item.path.resolve().relative_to(tests_dir).parts
        except ValueError:
            continue  # not one of ours
        tier = parts[0] if len(parts) > 1 else ""
        if tier not in TIERS:
            misplaced.append(f"{item.nodeid}: not in a tier folder (tests/{{{','.join(TIERS)}}}/)")
            continue
        other = sorted({m.name for m in item.iter_markers() if m.name in TIERS} - {tier})
        if other:
            misplaced.append(f"{item.nodeid}: in tests/{tier}/ but marked {', '.join(other)}: move it")
        item.add_marker(getattr(pytest.mark, tier))
    if misplaced:
        raise pytest.UsageError("a test's folder is its tier:\n  " + "\n  ".join(misplaced))
