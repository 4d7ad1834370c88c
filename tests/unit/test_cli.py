"""The ``vitals-lake`` dispatcher (vitals_lake/cli.py) and how every tool reports a bad setting: the
usage line, ``prog: error: ...`` and exit status 2, never a traceback.

In-process and fast; the installed console script's ``--help`` of every command runs in
tests/pipeline/test_cli_help.py (it imports every tool)."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vitals_lake import cli

REPO = Path(__file__).resolve().parents[2]


def _usage_error(capsys: pytest.CaptureFixture[str], status: int | None, prog: str, *words: str) -> str:
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("usage: "), err
    assert f"{prog}: error: " in err, err
    for word in words:
        assert word in err, (word, err)
    assert "Traceback" not in err
    return err


# --- the dispatcher -------------------------------------------------------------------------------------
def test_help_lists_every_command_with_its_summary(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vitals-lake ")
    for name, command in cli.COMMANDS.items():
        line = next((line for line in out.splitlines() if line.startswith(f"  {name} ")), None)
        assert line is not None, f"{name} is not listed"
        assert command.summary.split()[0] in line
    assert cli.main([]) == 0  # no command: the same help
    assert capsys.readouterr().out == out


def test_help_does_not_import_the_tools():
    code = (
        "import json, sys; from vitals_lake import cli; cli._help(); print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    loaded = {m.split(".")[0] for m in json.loads(done.stdout)}
    assert not loaded & (cli.PROJECT_PACKAGES - {"vitals_lake"}), loaded & cli.PROJECT_PACKAGES
    assert "pyarrow" not in loaded and "apache_beam" not in loaded


def test_every_command_names_an_existing_main_taking_argv():
    """By reading the source (importing every tool takes seconds; the help test does that)."""
    for name, command in cli.COMMANDS.items():
        module, _, function = command.target.partition(":")
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, (name, module)
        tree = ast.parse(Path(spec.origin).read_text())
        defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert function in defs, (name, command.target)
        assert defs[function].args.args, f"{command.target} takes no argv"


def test_every_cli_module_of_the_project_is_a_command():
    """A module with a ``__main__`` guard is a tool: it must be reachable as ``vitals-lake <command>``."""
    targets = {c.target.partition(":")[0] for c in cli.COMMANDS.values()}
    missing = []
    for package in sorted(cli.PROJECT_PACKAGES):
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text()
            if 'if __name__ == "__main__":' not in text:
                continue
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if module in {"vitals_lake.cli", "vitals_lake.__main__"}:
                continue
            imported = {
                node.module
                for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.ImportFrom) and any(a.name == "main" for a in node.names)
            }
            if module not in targets and not imported & targets:
                missing.append(module)
    assert not missing, f"tools with no vitals-lake command (add them to vitals_lake.cli.COMMANDS): {missing}"


_CALLS: list[list[str]] = []


def _probe(argv: list[str]) -> int:
    _CALLS.append(list(argv))
    return 7


def test_a_command_gets_the_rest_of_the_command_line(monkeypatch):
    _CALLS.clear()
    monkeypatch.setitem(cli.COMMANDS, "probe", cli.Command("tests.unit.test_cli:_probe", "a probe", "test"))
    assert cli.main(["probe", "--lake", "x", "--help-me"]) == 7
    assert _CALLS == [["--lake", "x", "--help-me"]]
    assert cli.main(["help", "probe"]) == 7  # ``vitals-lake help probe`` is ``probe --help``
    assert _CALLS[-1] == ["--help"]


def test_an_unknown_command_is_a_usage_error_with_a_suggestion(capsys):
    assert cli.main(["pipline"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: vitals-lake ") and "unknown command 'pipline'" in err
    assert "did you mean 'pipeline'" in err


def test_a_missing_optional_dependency_names_the_extra_in_one_line(monkeypatch, tmp_path, capsys):
    (tmp_path / "needs_missing_dep.py").write_text(
        "import confluent_kafka_not_installed\n\ndef main(argv):\n    return 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(
        cli.COMMANDS, "needy", cli.Command("needs_missing_dep:main", "needs a missing package", "test")
    )
    monkeypatch.setattr(
        cli, "_requirements", lambda: ['confluent-kafka-not-installed>=2; extra == "local"', "pyarrow>=18"]
    )
    assert cli.main(["needy"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "confluent_kafka_not_installed" in err and "pip install 'vitals-lake[local]'" in err


def test_missing_dependency_messages():
    reqs = [
        "scikit-learn>=1.5,<2",
        'aiosmtpd>=1.4.6,<2; extra == "harness"',
        'google-cloud-firestore>=2.20; extra == "cloud"',
    ]
    assert "vitals-lake[harness]" in cli.missing_dependency_message("aiosmtpd", reqs)
    assert "vitals-lake[cloud]" in cli.missing_dependency_message("google.cloud.firestore", reqs)
    assert "reinstall vitals-lake" in cli.missing_dependency_message("sklearn", reqs)  # a core dependency
    assert "pip install somethingelse" in cli.missing_dependency_message("somethingelse", reqs)
    assert "no 'harness' package" in cli.missing_dependency_message("harness", reqs)


def test_a_module_error_that_is_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "broken", cli.Command("vitals_lake.no_such_module:main", "bug", "test"))
    with pytest.raises(ModuleNotFoundError):
        cli.main(["broken"])


# --- configuration errors: usage and exit 2 in every tool -------------------------------------------------
def test_usage_error_prints_what_argparse_prints(capsys):
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--lake")
    assert cli.usage_error(parser, "bad lake") == 2
    assert capsys.readouterr().err == "usage: tool [-h] [--lake LAKE]\ntool: error: bad lake\n"


@pytest.mark.parametrize(
    ("command", "argv", "prog", "words"),
    [
        ("inspect", ["--lake", "s3://bucket/lake"], "python -m vitals_lake.inspect", ["lake URI"]),
        ("inspect", ["--limit", "-1"], "python -m vitals_lake.inspect", ["--limit"]),
        ("quarantine", ["summary", "--lake", "s3://b/l"], "python -m vitals_lake.quarantine", ["lake URI"]),
        ("maintenance", ["--lake", "s3://b/l"], "python -m vitals_lake.maintenance", ["lake URI"]),
        ("maintenance", ["--lake", "x", "--retention-hours", "1"], "python -m vitals_lake.maintenance", []),
        ("maintenance", ["--lake", "x", "--table", "nope"], "python -m vitals_lake.maintenance", ["nope"]),
        ("warehouse", ["views", "--bigquery"], "python -m warehouse views", ["--project"]),
        ("warehouse", ["sync", "--lake", "s3://b/l"], "python -m warehouse sync", ["lake URI"]),
        ("warehouse", ["sync", "--lake", "x", "--follow", "0"], "python -m warehouse sync", ["--follow"]),
        (
            "looker-link",
            ["--project", "Bad Project", "--dataset", "d"],
            "python -m dashboard.looker_link",
            [],
        ),
        ("dashboard", ["--warehouse", "w", "--sync-seconds", "0"], "python -m dashboard", ["--sync-seconds"]),
        ("capacity", ["--patients", "0"], "python -m bench.capacity", ["patients"]),
        ("bench-report", ["/no/such/results.json"], "python -m bench.report", ["no results file"]),
        (
            "schema-doc",
            ["--write", "--doc", "/no/such/doc.md"],
            "python -m vitals_lake.schema_doc",
            ["--doc"],
        ),
        ("load-admissions", ["--landing", "l", "--reference", "r", "--lake", "s3://x"], "", ["lake URI"]),
        ("load-admissions", ["--landing", "l", "--reference", "r", "--lake", "x", "--watch", "0"], "", []),
        ("simulate", ["--patients", "3", "--interval", "0"], "python -m simulator", ["interval"]),
    ],
)
def test_a_bad_setting_is_a_usage_error_not_a_traceback(capsys, command, argv, prog, words):
    tool = cli.load(cli.COMMANDS[command])
    try:
        status = tool(argv)
    except SystemExit as exc:  # argparse's own errors (a malformed value) exit 2 as well
        status = exc.code
    target = cli.COMMANDS[command].target.partition(":")[0]
    _usage_error(capsys, status, prog or f"python -m {target}", *words)


def test_an_environment_variable_that_sets_a_default_is_checked_too(monkeypatch, capsys):
    monkeypatch.setenv("VITALS_KAFKA_BOOTSTRAP", "not a host")
    for command, prog in (
        ("bridge", "python -m pipelines.kafka_bridge"),
        ("recovery", "python -m pipelines.recovery"),
    ):
        _usage_error(capsys, cli.load(cli.COMMANDS[command])(["--help"]), prog, "environment", "bootstrap")
    _usage_error(capsys, cli.load(cli.COMMANDS["simulate"])([]), "python -m simulator", "environment")


def test_the_console_entry_point_reports_a_bad_setting_without_a_traceback():
    """Through a real process, as a user meets it."""
    done = subprocess.run(
        [sys.executable, "-m", "vitals_lake", "inspect", "--lake", "s3://bucket/lake"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("usage: python -m vitals_lake.inspect ")
    assert "error: lake URI must be a local path or gs://bucket/prefix" in done.stderr
    assert "Traceback" not in done.stderr
