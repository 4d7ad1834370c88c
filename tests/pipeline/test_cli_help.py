"""Every tool's options through the installed ``vitals-lake`` console script, the pipeline's
``--help`` against its options class, and the pipeline's bad settings as usage errors.

The console script exists after ``uv pip install -e '.[dev]'`` (pyproject.toml's [project.scripts]).
Each ``--help`` imports its tool (Beam, scikit-learn, ...): they run in parallel."""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.beam_vitals import main as pipeline_main
from pipelines.options import BEAM_HELP_OPTIONS, VitalsOptions
from vitals_lake import cli

REPO = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).with_name("vitals-lake")
PIPELINE = "python -m pipelines.beam_vitals"

# Options (or subcommands) each tool's --help must show: real names from its parser.
EXPECTED: dict[tuple[str, ...], list[str]] = {
    ("pipeline",): ["--subscription", "--input-jsonl", "--lake", "--runner"],
    ("bridge",): ["--bootstrap", "--pubsub-topic", "--max-records"],
    ("load-admissions",): ["--landing", "--reference", "--watch"],
    ("recovery",): ["--rewind", "--rebuild-gold", "--identity-map", "--bigquery"],
    ("migrate-lake",): ["--from", "--to", "--batch-rows"],
    ("redrive",): ["--subscription", "--topic", "--max-messages", "--dry-run"],
    ("replay-dead-letters",): ["--table", "--since", "--json"],
    ("forget-patient",): [
        "--patient-id",
        "--patient-id-file",
        "--requested-by",
        "--bigquery",
        "--vacuum-now",
        "--alert-ids-out",
    ],
    ("replay",): ["--input-jsonl", "--lake", "--workers", "--shards"],
    ("inspect",): ["--lake", "--limit", "TABLE"],
    ("quarantine",): ["summary", "export"],
    ("quarantine", "export"): ["--lake", "--rule", "--out"],
    ("maintenance",): ["--older-than-days", "--vacuum-delete", "--dry-run", "--retention-days"],
    ("alert-schema",): ["--write-schema"],
    ("schema-doc",): ["--write", "--doc"],
    ("warehouse",): ["query", "sync", "views"],
    ("warehouse", "sync"): ["--lake", "--follow"],
    ("dashboard",): ["--warehouse", "--sync-seconds", "--port"],
    ("lookml",): ["--out", "--check"],
    ("looker-link",): ["--project", "--dataset", "--report-template"],
    ("infra-names",): ["--write", "--check"],
    ("train",): ["--readings", "--labels", "--target-fpr"],
    ("evaluate",): ["--episode-rate", "--persistence-seconds"],
    ("model-keys",): ["keygen", "public", "--out"],
    ("vitaldsp-sanity",): ["--model", "--cache"],
    ("simulate",): ["--patients", "--sink", "--duplicate-rate"],
    ("stack",): ["up", "down", "status"],
    ("stack", "up"): ["--run-dir", "--kafka-port"],
    ("bigquery-emulator",): ["bootstrap", "up"],
    ("bigquery-emulator", "up"): ["--venv", "--port"],
    ("demo",): ["--patients", "--duration", "--drain-timeout"],
    ("screenshots",): ["--warehouse", "--width"],
    ("bench",): ["--only", "--quick", "--repeats"],
    ("bench-report",): ["results"],
    ("capacity",): ["--patients", "--rate", "--prices"],
}


def _run(argv: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )


PIPELINE_HELP = (sys.executable, "-m", "pipelines.beam_vitals", "--help")


@pytest.fixture(scope="module")
def helps() -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """``vitals-lake --help``, every ``vitals-lake <command> [sub] --help`` and the pipeline's own
    ``python -m`` help, all at once (each process imports its tool: seconds of CPU apiece)."""
    assert CONSOLE_SCRIPT.is_file(), "install the project: uv pip install -e '.[dev]'"
    calls = [(str(CONSOLE_SCRIPT), "--help")]
    calls += [(str(CONSOLE_SCRIPT), *key, "--help") for key in EXPECTED]
    calls.append(PIPELINE_HELP)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip(calls, pool.map(_run, calls), strict=True))


def test_the_console_script_lists_every_command_and_each_shows_its_options(helps):
    assert {key[0] for key in EXPECTED} == set(cli.COMMANDS), "every command needs an expectation here"
    top = helps[(str(CONSOLE_SCRIPT), "--help")]
    assert top.returncode == 0, top.stderr
    for name, command in cli.COMMANDS.items():
        assert f"  {name} " in top.stdout and command.summary.split()[0] in top.stdout, name
    for key, options in EXPECTED.items():
        result = helps[(str(CONSOLE_SCRIPT), *key, "--help")]
        assert result.returncode == 0, (key, result.stderr[-2000:])
        assert result.stdout.startswith("usage: "), (key, result.stdout[:200])
        assert "Traceback" not in result.stderr, key
        for option in options:
            assert option in result.stdout, (key, option)


def test_pipeline_help_lists_every_pipeline_option_and_beams_run_options(helps):
    """Derived from the options classes: a new option shows up in --help, or this fails."""
    done = helps[PIPELINE_HELP]
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"usage: {PIPELINE} ")
    ours = argparse.ArgumentParser()
    VitalsOptions._add_argparse_args(ours)
    actions = [a for a in ours._actions if a.option_strings and a.dest != "help"]
    assert len(actions) >= 20
    for action in actions:
        for flag in action.option_strings:  # both spellings: --commit-interval and --commit_interval
            assert flag in text, flag
        if action.help:
            assert " ".join(action.help.split()[:3]) in " ".join(text.split()), action.dest
    for options in BEAM_HELP_OPTIONS:
        beam = argparse.ArgumentParser()
        options._add_argparse_args(beam)
        for action in beam._actions:
            if action.option_strings and action.dest != "help":
                assert action.option_strings[0] in text, (options.__name__, action.option_strings[0])
    for flag in ("--runner", "--project", "--region", "--temp_location", "--streaming"):
        assert flag in text, flag


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--input-jsonl", "r.jsonl"], "--lake is required"),
        (["--lake", "var/lake"], "give exactly one input"),
        (
            ["--input-jsonl", "r.jsonl", "--subscription", "projects/p/subscriptions/s", "--lake", "x"],
            "one input",
        ),
        (["--input-jsonl", "r.jsonl", "--lake", "s3://bucket/lake"], "lake URI must be"),
        (
            ["--input-jsonl", "r.jsonl", "--lake", "x", "--commit-interval", "0"],
            "commit_interval must be > 0",
        ),
        (["--input-jsonl", "r.jsonl", "--lake", "x", "--commit-interval", "soon"], "invalid float value"),
        (["--input-jsonl", "r.jsonl", "--lake", "x", "--alert-clear-seconds=-1"], "clear_seconds"),
        (["--input-jsonl", "r.jsonl", "--lake", "x", "--alerts-topic", "vitals-alerts"], "--alerts-topic"),
        (["--input-jsonl", "r.jsonl", "--lake", "x", "--bigquery-dataset", "nodot"], "PROJECT.DATASET"),
        (
            ["--input-jsonl", "r.jsonl", "--lake", "x", "--bigquery-endpoint", "http://e"],
            "--bigquery-dataset",
        ),
    ],
)
def test_a_bad_pipeline_option_is_a_usage_error(capsys, argv, says):
    try:
        status = pipeline_main(argv)
    except SystemExit as exc:  # argparse's own errors (a malformed value) exit 2 as well
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith(f"usage: {PIPELINE} ") and f"{PIPELINE}: error: " in err, err
    assert says in err and "Traceback" not in err, err


def test_the_removed_gold_window_option_is_refused_not_ignored(capsys):
    for flag in (["--gold-window", "300"], ["--gold_window=60"]):
        assert pipeline_main(["--input-jsonl", "r.jsonl", "--lake", "x", *flag]) == 2
        err = capsys.readouterr().err
        assert "--gold-window was removed" in err and "one minute and one hour" in err, err
    ours = argparse.ArgumentParser()
    VitalsOptions._add_argparse_args(ours)
    assert "gold_window" not in {a.dest for a in ours._actions}
