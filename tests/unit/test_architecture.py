"""The packages' import directions (``[tool.importlinter]`` in pyproject.toml) hold, and the checker
really catches a wrong import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_import_contract_is_kept():
    done = _lint()
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_a_wrong_import_breaks_a_contract(tmp_path):
    # The harness does import the pipeline (it runs it): a contract forbidding that must fail.
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_packages =\n    harness\n    pipelines\n\n"
        "[importlinter:contract:wrong]\nname = harness must not import pipelines\ntype = forbidden\n"
        "source_modules =\n    harness\nforbidden_modules =\n    pipelines\n"
    )
    done = _lint("--config", str(config))
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and "harness" in done.stdout
