"""A tool in a virtualenv of its own, built from a requirements file on first use.

Some tools pin packages that conflict with the project's environment (the BigQuery emulator wants
an older DuckDB, checkov its own HCL parser), so each gets a venv at the repository root, built
once and stamped with what it was built from: rebuilt when the requirements (or the Python, or the
build steps) change, a few milliseconds to check otherwise. A lock makes concurrent builders
(parallel test sessions) wait for one another; the venv tells git to ignore itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

STAMP_FILE: Final = ".vitals-stamp"
BUILD_TIMEOUT_SECONDS: Final = 1200.0


@dataclass(frozen=True, kw_only=True)
class ToolVenv:
    """Where a tool's venv lives and how it is built; ``error`` is raised, with ``hint``, on failure."""

    path: Path
    requirements: Path
    executable_name: str  # the console script that proves the install worked, e.g. "checkov"
    error: type[Exception]
    hint: str
    build_version: int = 1  # bump when the build steps change
    extra_stamp: Mapping[str, object] | None = None

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def executable(self) -> Path:
        return self.path / "bin" / self.executable_name

    @property
    def stamp_path(self) -> Path:
        return self.path / STAMP_FILE

    def stamp(self) -> dict[str, object]:
        return {
            "bootstrap": self.build_version,
            "requirements_sha256": hashlib.sha256(self.requirements.read_bytes()).hexdigest(),
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            **(self.extra_stamp or {}),
        }

    def is_built(self) -> bool:
        try:
            stamp = json.loads(self.stamp_path.read_text())
        except (OSError, ValueError):
            return False
        return stamp == self.stamp() and self.executable.is_file() and self.python.is_file()

    def run_step(self, argv: Sequence[str], what: str, *, env: Mapping[str, str] | None = None) -> None:
        """One build step; its failure raises ``error`` with the command, its output's tail and the hint."""
        try:
            out = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                env=dict(env) if env is not None else None,
                timeout=BUILD_TIMEOUT_SECONDS,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self.error(f"{self.path.name}: {what} failed ({exc}); {self.hint}") from exc
        if out.returncode != 0:
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-25:])
            raise self.error(
                f"{self.path.name}: {what} failed (exit {out.returncode}): {' '.join(argv)}\n{tail}\n"
                + self.hint
            )

    def ensure(
        self, *, after_install: Callable[[ToolVenv], None] | None = None, verbose: bool = False
    ) -> None:
        """Build unless the stamp matches; ``after_install`` runs extra steps before stamping."""
        if self.is_built():
            _ignore_in_git(self.path)
            return
        if not self.requirements.is_file():
            raise self.error(f"requirements not found: {self.requirements}")
        self.path.mkdir(parents=True, exist_ok=True)
        _ignore_in_git(self.path)
        with _locked(self.path / ".bootstrap.lock"):
            if self.is_built():  # another process built it while we waited
                return
            self.stamp_path.unlink(missing_ok=True)
            started = time.monotonic()
            uv = find_uv()
            if not self.python.is_file():
                without_pip = ["--without-pip"] if uv else []
                self.run_step(
                    [sys.executable, "-m", "venv", *without_pip, str(self.path)], "creating the venv"
                )
            quiet = [] if verbose else ["--quiet"]
            if uv:
                install = [uv, "pip", "install", "--python", str(self.python), "--compile-bytecode", *quiet]
            else:
                install = [str(self.python), "-m", "pip", "install", "--compile", *quiet]
            self.run_step([*install, "-r", str(self.requirements)], f"installing {self.requirements.name}")
            if after_install is not None:
                after_install(self)
            if not self.executable.is_file():
                raise self.error(
                    f"{self.path.name}: {self.executable} missing after the install; {self.hint}"
                )
            self.stamp_path.write_text(json.dumps(self.stamp()) + "\n")
            if verbose:
                print(f"built {self.path} in {time.monotonic() - started:.1f} s", file=sys.stderr)


def find_uv() -> str | None:
    beside = Path(sys.executable).with_name("uv")  # the project venv installs uv (see the Makefile)
    if beside.is_file():
        return str(beside)
    return shutil.which("uv")


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ignore_in_git(path: Path) -> None:
    """Like the venvs uv and Python 3.13 make: git ignores the whole directory by itself."""
    marker = path / ".gitignore"
    if not marker.exists():
        marker.write_text("# a tool venv built by harness.stack.toolvenv\n*\n")
