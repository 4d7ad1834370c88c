"""The BigQuery emulator (``bqemulator`` 1.4.0, Apache-2.0) as a managed local service, in its own venv.

The emulator needs DuckDB 1.5.5 and its own pyarrow/sqlglot, so it lives in ``.venv-bq/`` at the
repository root, built from ``requirements/bigquery-emulator.txt`` on first use (idempotent, stamped
with the requirements' hash; a lock makes concurrent builders wait for one another)::

    python -m harness.stack.bigquery bootstrap      # build or check .venv-bq, print its path
    python -m harness.stack.bigquery up [--port N]  # run the emulator until Ctrl-C

    with BigQueryEmulator(run_dir) as emu:
        sink = BigQuerySink(emu.settings(dataset="vitals"))

It runs as ``.venv-bq/bin/bqemulator start --rest-port P --grpc-port 0 --ephemeral --project ID``
(REST on P, the Storage Read/Write gRPC API on a free port, everything in memory), answers
``GET /readyz`` with 200 once DuckDB and its catalog respond, and stops on SIGTERM.
DuckDB extensions: at start it runs ``INSTALL spatial`` (fatal if that fails) and ``INSTALL avro``
(best effort). The bootstrap installs both, and icu, from the ``duckdb-extension-*`` wheels into
``.venv-bq/duckdb-home/.duckdb/extensions``, and the emulator runs with ``HOME`` pointing there, so
nothing is ever downloaded at run time and ``~/.duckdb`` is left alone.

Measured on this machine (2 cores, Python 3.11.7, google-cloud-bigquery 3.47 as the client):

* Bootstrap: 8 s with an empty uv cache (about 550 MB of wheels fetched), 12 s with a warm one
  (``uv pip install --compile-bytecode``); a built venv is recognised in milliseconds.
* Start to ``/readyz``: 1.05 to 1.3 s; stop (SIGTERM) 0.4 to 0.5 s. Without precompiled bytecode the
  very first start took 19 s.
* ``bqemulator`` needs ``numpy`` at start (it registers numpy UDFs) but does not declare it: pinned here.
* Works: datasets, tables with REQUIRED/REPEATED/TIMESTAMP/DATE columns, ``create_*(exists_ok=True)``,
  ``insert_rows_json``, queries (types come back right: TIMESTAMP as aware datetimes with their
  microseconds, DATE, INT64, BOOL, REPEATED as lists), ``CREATE OR REPLACE VIEW`` (also replacing a
  view's query), ``"NaN"``/``"Infinity"`` strings for FLOAT64.
* Stored but without effect: time partitioning and clustering (``get_table`` returns them; DuckDB
  has neither).
* Ignored: ``insertId``. A re-sent row is stored again. (Real BigQuery drops it best-effort.)
* ``insertErrors``: only with ``skipInvalidRows=true``, and only for values that cannot be converted
  to the column's type (``"abc"`` for INT64, a malformed TIMESTAMP/DATE, year 10000); the message then
  names the *first* column of the row and its value, not the bad one. Without ``skipInvalidRows``
  one bad row fails the whole request with HTTP 500, which google-cloud-bigquery's default retry
  repeats for 10 minutes. Real BigQuery refuses more than the emulator, which silently stores: a
  missing or NULL REQUIRED field, an unknown column, a NULL inside an array.
* ``local-bigquery`` 0.4.0 (which honours insertId) requires Python >= 3.13 and duckdb >= 2: not used.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Final

from harness.stack.process import MissingPrerequisite, StackError
from harness.stack.services import _Service
from harness.stack.toolvenv import ToolVenv
from vitals_lake.cli import usage_error
from vitals_lake.config import LOCAL_PROJECT, ConfigError
from warehouse.settings import DEFAULT_DATASET, BigQuerySettings

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
REQUIREMENTS: Final = REPO_ROOT / "requirements" / "bigquery-emulator.txt"
DEFAULT_VENV: Final = REPO_ROOT / ".venv-bq"
VENV_ENV: Final = "VITALS_BQ_EMULATOR_VENV"  # another place for the emulator's venv
DUCKDB_EXTENSIONS: Final = ("spatial", "avro", "icu")
_BOOTSTRAP_HINT: Final = (
    "it needs PyPI (uv or pip) and Python >= 3.11 (the interpreter running this); "
    "build it by hand with: python -m harness.stack.bigquery bootstrap"
)

# Run inside the emulator's venv with HOME=<duckdb home>: copy the bundled extensions into DuckDB's
# extension directory, then check that INSTALL/LOAD find them without the network.
_INSTALL_EXTENSIONS: Final = """
import sys, duckdb
from duckdb_extensions import import_extension
con = duckdb.connect()
for name in sys.argv[1:]:
    import_extension(name, force_install=True, con=con)
check = duckdb.connect()
for name in sys.argv[1:]:
    check.execute(f"INSTALL {name}")
    check.execute(f"LOAD {name}")
print(duckdb.__version__)
"""


def emulator_venv(path: Path | str | None = None, *, requirements: Path = REQUIREMENTS) -> ToolVenv:
    """Where the emulator's venv is (``$VITALS_BQ_EMULATOR_VENV``, else ``.venv-bq`` at the repo root)."""
    if path is None:
        path = os.environ.get(VENV_ENV) or DEFAULT_VENV
    return ToolVenv(
        path=Path(path).absolute(),
        requirements=requirements,
        executable_name="bqemulator",
        error=MissingPrerequisite,
        hint=_BOOTSTRAP_HINT,
        extra_stamp={"extensions": list(DUCKDB_EXTENSIONS)},
    )


def duckdb_home(venv: ToolVenv) -> Path:
    """``HOME`` of the emulator process: DuckDB keeps its extensions in ``$HOME/.duckdb``."""
    return venv.path / "duckdb-home"


def _install_extensions(venv: ToolVenv) -> None:
    duckdb_home(venv).mkdir(exist_ok=True)
    venv.run_step(
        [str(venv.python), "-c", _INSTALL_EXTENSIONS, *DUCKDB_EXTENSIONS],
        "installing the DuckDB extensions",
        env={**os.environ, "HOME": str(duckdb_home(venv))},
    )


def ensure_emulator_venv(
    path: Path | str | None = None, *, requirements: Path = REQUIREMENTS, verbose: bool = False
) -> ToolVenv:
    """Build the emulator's venv unless its stamp matches ``requirements``; return it.

    Idempotent and cheap when built (reads one small file). Raises MissingPrerequisite, saying what
    failed and how to retry, when a step fails (no PyPI, no suitable Python).
    """
    venv = emulator_venv(path, requirements=requirements)
    venv.ensure(after_install=_install_extensions, verbose=verbose)
    return venv


class BigQueryEmulator(_Service):
    """bqemulator on a free (or given) REST port; the gRPC Storage API on a free port; all in memory."""

    name = "bigquery-emulator"
    marker = "bqemulator"

    def __init__(
        self,
        run_dir: Path | str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        project: str = LOCAL_PROJECT,
        venv: Path | str | None = None,
        bootstrap: bool = True,
        log_level: str = "warning",
    ) -> None:
        super().__init__(Path(run_dir), port=port, host=host)
        self.project = project
        self.venv = emulator_venv(venv)
        self.bootstrap = bootstrap
        self.log_level = log_level
        self.ready_seconds: float | None = None  # launch -> /readyz answered, of the last start
        self._launched_at = 0.0

    @property
    def endpoint(self) -> str:
        return f"http://{self.host_port}"

    def settings(self, dataset: str = DEFAULT_DATASET) -> BigQuerySettings:
        return BigQuerySettings.for_emulator(self.endpoint, project=self.project, dataset=dataset)

    def env(self) -> dict[str, str]:
        """Environment variables that point child processes (BigQuerySettings.from_env) at it."""
        return {"VITALS_BQ_ENDPOINT": self.endpoint, "VITALS_GCP_PROJECT": self.project}

    def check_prerequisites(self) -> None:
        if self.bootstrap:
            ensure_emulator_venv(self.venv.path)
        elif not self.venv.is_built():
            raise MissingPrerequisite(
                f"the BigQuery emulator venv {self.venv.path} is missing or stale: "
                "python -m harness.stack.bigquery bootstrap"
            )

    def _argv(self, port: int) -> list[str]:
        return [
            str(self.venv.executable),
            "start",
            "--rest-host",
            self.host,
            "--rest-port",
            str(port),
            "--grpc-host",
            self.host,
            "--grpc-port",
            "0",
            "--ephemeral",
            "--project",
            self.project,
            "--log-level",
            self.log_level,
            "--log-format",
            "json",
            "--no-admin",
        ]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_")}
        env.update(HOME=str(duckdb_home(self.venv)), PYTHONUNBUFFERED="1")
        return env

    def _ready(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.endpoint}/readyz", timeout=1) as resp:
                return bool(resp.status == 200 and json.loads(resp.read()).get("status") == "ok")
        except (OSError, ValueError):
            return False

    def launch(self) -> None:
        self.check_prerequisites()
        self._launched_at = time.monotonic()
        super().launch()

    def wait_ready(self, timeout: float = 60.0) -> None:
        super().wait_ready(timeout)
        self.ready_seconds = time.monotonic() - self._launched_at

    def start(self, timeout: float = 60.0) -> BigQueryEmulator:
        super().start(timeout)
        return self


# --- CLI ---------------------------------------------------------------------------------------------------
def _bootstrap(args: argparse.Namespace) -> int:
    started = time.monotonic()
    venv = ensure_emulator_venv(args.venv, verbose=True)
    print(f"{venv.path} ready ({time.monotonic() - started:.1f} s)")
    return 0


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    emulator = BigQueryEmulator(args.run_dir, port=args.port, project=args.project, venv=args.venv)
    with emulator:
        for key, value in emulator.env().items():
            print(f"export {key}={value}")
        print(
            f"# BigQuery emulator ready in {emulator.ready_seconds:.1f} s; "
            f"log {emulator.log_path}; Ctrl-C to stop"
        )
        sys.stdout.flush()
        while not stop.wait(1.0):
            if not emulator.running():
                print(f"# the emulator died; see {emulator.log_path}", file=sys.stderr)
                return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.stack.bigquery", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    boot = sub.add_parser(
        "bootstrap", help="build .venv-bq from requirements/bigquery-emulator.txt (idempotent)"
    )
    up = sub.add_parser("up", help="run the emulator until Ctrl-C, printing env exports")
    for p in (boot, up):
        p.add_argument("--venv", type=Path, default=None, help=f"default: ${VENV_ENV} or {DEFAULT_VENV}")
    up.add_argument("--run-dir", type=Path, default=Path("var/bigquery"))
    up.add_argument("--port", type=int, default=None)
    up.add_argument("--project", default=LOCAL_PROJECT)
    args = parser.parse_args(argv)
    try:
        return {"bootstrap": _bootstrap, "up": _up}[args.command](args)
    except ConfigError as exc:  # e.g. a malformed --project
        return usage_error(parser, str(exc))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
