"""The command line, run as a real subprocess."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.cli import parse_duration
from vitals_lake.envelope import read_jsonl

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args], cwd=REPO, capture_output=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5), ("2m", 120), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25), ("7", 7)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "-3s", "-3", "nan", "inf"])
def test_parse_duration_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_help_lists_the_flags():
    result = _cli("--help")
    assert result.returncode == 0
    out = result.stdout.decode()
    for flag in (
        "--patients",
        "--interval",
        "--duration",
        "--sink",
        "--bootstrap",
        "--pubsub-topic",
        "--emulator-host",
        "--jsonl",
        "--fast",
        "--start",
        "--seed",
        "--malformed-rate",
        "--duplicate-rate",
        "--late-rate",
        "--out-of-order-rate",
        "--skewed-device-rate",
        "--episode-rate",
        "--admissions",
    ):
        assert flag in out


def test_bad_arguments_exit_2():
    assert _cli("--interval", "soon").returncode == 2
    assert _cli("--fast", "--start", "2026-11-22T06:00:00").returncode == 2  # no offset
    assert _cli("--malformed-rate", "2").returncode == 2


def test_fast_jsonl_run_is_byte_identical_with_a_fixed_start(tmp_path):
    args = [
        "--patients",
        "12",
        "--duration",
        "2m",
        "--interval",
        "5s",
        "--fast",
        "--sink",
        "jsonl",
        "--start",
        "2026-11-22T06:00:00+00:00",
        "--seed",
        "42",
        "--malformed-rate",
        "0.05",
    ]
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = _cli(*args, "--out", str(out))
        assert result.returncode == 0, result.stderr.decode()
        assert b"messages sent" in result.stderr  # progress line
        runs.append(out)
    a, b = runs
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert files == [
        "labels.jsonl",
        "landing/patients_daily_file_20261122.csv",
        "produced.json",
        "readings.jsonl",
        "reference/diagnosis_mapping.csv",
    ]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    manifest = json.loads((a / "produced.json").read_bytes())
    messages = read_jsonl(a / "readings.jsonl")
    assert manifest["messages_sent"] == len(messages) > 12 * 24 * 0.9
    assert manifest["start"] == "2026-11-22T06:00:00.000+00:00"
    assert manifest["end"] == "2026-11-22T06:02:00.000+00:00"
    assert manifest["seed"] == 42 and manifest["patients"] == 12 and manifest["mode"] == "fast"


def test_jsonl_path_and_no_admissions(tmp_path):
    target = tmp_path / "elsewhere" / "vitals.jsonl"
    result = _cli(
        "--patients",
        "3",
        "--duration",
        "30s",
        "--fast",
        "--quiet",
        "--no-admissions",
        "--out",
        str(tmp_path / "o"),
        "--jsonl",
        str(target),
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    summary = json.loads(result.stdout)
    assert len(read_jsonl(target)) == summary["messages_sent"]
    assert not (tmp_path / "o" / "landing").exists()
