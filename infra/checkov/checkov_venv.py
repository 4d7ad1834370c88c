"""checkov in its own virtualenv, run offline over infra/terraform with the project's skip list and policies.

checkov pins an HCL parser (bc-python-hcl2) and other packages that conflict with the project's
environment, so it lives in ``.venv-checkov/`` at the repository root, built from
``infra/checkov/requirements.txt`` on first use (idempotent, stamped with the requirements' hash; a lock
makes concurrent builders wait for one another), like ``.venv-bq`` (harness/stack/bigquery.py)::

    python infra/checkov/checkov_venv.py bootstrap   # build or check .venv-checkov, print its path
    python infra/checkov/checkov_venv.py run         # scan infra/terraform; exit 1 on any failed check

``run`` calls ``checkov -d infra/terraform --framework terraform --skip-download`` (no call to any
platform) with the custom policies of ``infra/checkov/policies/``, then applies the skip list of
``infra/checkov/skips.json`` (each check with its reason) itself, so a listed check that no longer
fails anywhere is reported as stale instead of hiding silently. checkov exits 0 when a file does not parse, so
``run`` also fails when checkov reports parsing errors (tests/infra parses the HCL separately too).

It runs under the project's .venv (the venv builder is ``harness.stack.toolvenv``, shared with the
BigQuery emulator's venv).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from harness.stack.toolvenv import ToolVenv

HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = HERE.parents[1]
REQUIREMENTS: Final = HERE / "requirements.txt"
SKIPS: Final = HERE / "skips.json"
POLICIES: Final = HERE / "policies"
TERRAFORM_DIR: Final = REPO_ROOT / "infra" / "terraform"
DEFAULT_VENV: Final = REPO_ROOT / ".venv-checkov"
VENV_ENV: Final = "VITALS_CHECKOV_VENV"  # another place for checkov's venv
_RUN_TIMEOUT: Final = 600.0
_HINT: Final = (
    "it needs PyPI (uv or pip) and Python >= 3.11; build it by hand with: "
    "python infra/checkov/checkov_venv.py bootstrap"
)


class CheckovError(RuntimeError):
    """checkov's venv could not be built, or checkov could not run."""


def checkov_venv(path: Path | str | None = None, *, requirements: Path = REQUIREMENTS) -> ToolVenv:
    """Where checkov's venv is (``$VITALS_CHECKOV_VENV``, else ``.venv-checkov`` at the repo root)."""
    if path is None:
        path = os.environ.get(VENV_ENV) or DEFAULT_VENV
    return ToolVenv(
        path=Path(path).absolute(),
        requirements=requirements,
        executable_name="checkov",
        error=CheckovError,
        hint=_HINT,
    )


def ensure_venv(
    path: Path | str | None = None, *, requirements: Path = REQUIREMENTS, verbose: bool = False
) -> ToolVenv:
    """Build checkov's venv unless its stamp matches ``requirements``; return it (cheap when built)."""
    venv = checkov_venv(path, requirements=requirements)
    venv.ensure(verbose=verbose)
    return venv


def load_skips(path: Path = SKIPS) -> dict[str, str]:
    """Check id -> why it is skipped. Every entry needs a reason."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    skips = doc.get("skips", {})
    bad = [check for check, why in skips.items() if not isinstance(why, str) or len(why.strip()) < 20]
    if bad:
        raise CheckovError(f"{path}: skipped checks without a real reason: {', '.join(bad)}")
    return dict(skips)


@dataclass
class Report:
    """checkov's results with the skip list applied.

    checkov runs without ``--skip-check``, so a listed check that no longer fails anywhere is visible
    (``stale_skips``); its failures count as ``listed_skipped`` instead of ``failed``. Inline skips
    (``#checkov:skip=ID:reason`` in a resource) are applied by checkov itself (``inline_skipped``).
    """

    passed: int
    failures: list[dict[str, Any]]  # failed checks not covered by the skip list
    listed_skipped: list[dict[str, Any]]  # failed checks covered by the skip list
    inline_skipped: list[dict[str, Any]]  # checks suppressed by an inline comment
    parsing_errors: list[str]
    check_ids: set[str]  # every check that ran (passed, failed or skipped)
    stale_skips: set[str]  # listed checks that failed nowhere
    seconds: float
    raw: Any = field(repr=False, default=None)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def skipped(self) -> int:
        return len(self.listed_skipped) + len(self.inline_skipped)


def describe(result: dict[str, Any]) -> str:
    lines = result.get("file_line_range") or [0, 0]
    return (
        f"{result['check_id']} {result['resource']} {result['file_path']}:{lines[0]} "
        f"({result.get('check_name', '')})"
    )


def inline_reason(result: dict[str, Any]) -> str:
    """The reason written in an inline ``#checkov:skip=ID:reason`` comment."""
    return str((result.get("check_result") or {}).get("suppress_comment") or "").strip()


def command(venv: ToolVenv, directory: Path = TERRAFORM_DIR, skips: Sequence[str] = ()) -> list[str]:
    """The checkov command line (``run`` passes no skips: it applies the list itself)."""
    argv = [
        str(venv.executable),
        "--directory",
        str(directory),
        "--framework",
        "terraform",
        "--skip-download",
        "--external-checks-dir",
        str(POLICIES),
        "--output",
        "json",
        "--compact",
    ]
    if skips:
        argv += ["--skip-check", ",".join(sorted(skips))]
    return argv


def run(
    venv: ToolVenv | None = None, directory: Path = TERRAFORM_DIR, skips: dict[str, str] | None = None
) -> Report:
    """Run checkov (offline) over ``directory`` and apply the skip list."""
    venv = venv or ensure_venv()
    skips = load_skips() if skips is None else skips
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_ALLOW_MODULES_DOWNLOAD": "false"}
    env.pop("BC_API_KEY", None)
    started = time.monotonic()
    try:
        out = subprocess.run(
            command(venv, directory),
            capture_output=True,
            text=True,
            timeout=_RUN_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckovError(f"checkov did not run: {exc}") from exc
    seconds = time.monotonic() - started
    try:
        doc = json.loads(out.stdout)
    except ValueError as exc:
        raise CheckovError(
            f"checkov printed no JSON report (exit {out.returncode}):\n"
            f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        ) from exc
    passed = 0
    failed: list[dict[str, Any]] = []
    inline: list[dict[str, Any]] = []
    parsing_errors: list[str] = []
    check_ids: set[str] = set()
    for rep in doc if isinstance(doc, list) else [doc]:
        if "results" not in rep:  # an empty report: {"passed": 0, "failed": 0, ...}
            continue
        results = rep["results"]
        count = int(rep.get("summary", {}).get("parsing_errors", 0))
        errors = [str(e) for e in results.get("parsing_errors", [])]
        parsing_errors += errors or ([f"{count} file(s) did not parse"] if count else [])
        passed += len(results.get("passed_checks", []))
        failed += results.get("failed_checks", [])
        inline += results.get("skipped_checks", [])
        for kind in ("passed_checks", "failed_checks", "skipped_checks"):
            check_ids.update(r["check_id"] for r in results.get(kind, []))
    listed = [r for r in failed if r["check_id"] in skips]
    failures = [r for r in failed if r["check_id"] not in skips]
    stale = set(skips) - {r["check_id"] for r in listed}
    return Report(passed, failures, listed, inline, parsing_errors, check_ids, stale, seconds, doc)


# --- CLI ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python infra/checkov/checkov_venv.py", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    boot = sub.add_parser("bootstrap", help="build .venv-checkov from infra/checkov/requirements.txt")
    scan = sub.add_parser("run", help="scan infra/terraform; exit 1 on failed checks or parsing errors")
    for p in (boot, scan):
        p.add_argument("--venv", type=Path, default=None, help=f"default: ${VENV_ENV} or {DEFAULT_VENV}")
    scan.add_argument("--dir", type=Path, default=TERRAFORM_DIR)
    args = parser.parse_args(argv)
    try:
        started = time.monotonic()
        venv = ensure_venv(args.venv, verbose=args.command == "bootstrap")
        if args.command == "bootstrap":
            print(f"{venv.path} ready ({time.monotonic() - started:.1f} s)")
            return 0
        skips = load_skips()
        report = run(venv, args.dir, skips)
    except CheckovError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"checkov: {report.passed} passed, {report.failed} failed, {report.skipped} skipped "
        f"({len(report.listed_skipped)} by infra/checkov/skips.json, {len(report.inline_skipped)} inline) "
        f"in {report.seconds:.1f} s"
    )
    for result in report.listed_skipped + report.inline_skipped:
        reason = skips.get(result["check_id"]) or inline_reason(result)
        print(f"  skipped {describe(result)}: {reason}")
    for result in report.failures:
        print(f"  FAILED {describe(result)}")
    for err in report.parsing_errors:
        print(f"  PARSING ERROR {err}")
    for check in sorted(report.stale_skips):
        print(f"  STALE SKIP {check}: listed in skips.json but failing nowhere; remove it")
    return 1 if report.failed or report.parsing_errors or report.stale_skips else 0


if __name__ == "__main__":
    sys.exit(main())
