"""The README's commands run as written: the batch part of "Running the parts yourself" (simulate,
replay a file, rebuild from Bronze, the parallel replay, admissions, quarantine triage, maintenance),
then "Look at the tables afterwards" (inspect and a warehouse query) on that lake. Each command is read
from README.md, not copied here, and runs in a fresh directory; only ``.venv/bin/python`` becomes this
interpreter and, for the second block, the demo's lake the one just replayed."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from vitals_lake.config import lake_from_uri
from vitals_lake.lake import Lake

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _commands(block: str) -> list[str]:
    """The ``.venv/bin/python -m`` commands of a bash block, continuation lines joined, comments cut."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        if line.strip().startswith(".venv/bin/python -m "):
            out.append(shlex.join(shlex.split(line, comments=True)))
    return out


def _block(after: str) -> str:
    """The first bash block after the line that starts with ``after``."""
    tail = README.split(after, 1)[1]
    return tail.split("```bash\n", 1)[1].split("```", 1)[0]


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    argv[0] = sys.executable
    done = subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def test_the_readmes_batch_commands_run_as_written(tmp_path: Path) -> None:
    parts = _block("## Running the parts yourself")
    batch = parts.split("# batch replay", 1)[1]  # the rest needs the local stack running
    commands = _commands(batch)
    assert len(commands) >= 9, commands
    assert not [c for c in commands if c.endswith("&")]
    for command in commands:
        _run(command, tmp_path)

    def silver(lake: str) -> int:
        return Lake(lake_from_uri(str(tmp_path / lake))).count("silver")

    # The replay, the rebuild from its Bronze and the parallel replay hold the same readings.
    assert silver("var/replay") > 10_000
    assert silver("var/replay") == silver("var/rebuilt") == silver("var/replay2")
    assert (tmp_path / "fix.jsonl").exists()

    # "Look at the tables afterwards", pointed at that lake and a warehouse synced from it.
    lake = tmp_path / "var" / "replay"
    _run(f".venv/bin/python -m warehouse sync --lake {lake} --warehouse var/demo/warehouse.duckdb", tmp_path)
    looks = [
        c.replace("var/demo/lake", str(lake))
        for c in _commands(_block("Look at the tables afterwards"))
        if "-m dashboard" not in c  # a server: the dashboard has tests of its own
    ]
    assert len(looks) >= 4, looks
    outputs = {command: _run(command, tmp_path).stdout for command in looks}
    counts = next(out for command, out in outputs.items() if command.endswith(str(lake)))
    assert re.search(r"silver_patient_vitals\s+[\d,]+ rows", counts)
    query = next(out for command, out in outputs.items() if "warehouse query" in command)
    assert query.splitlines()[0].split(" | ")[0].strip() == "patient_key" and "(5 rows)" in query
    assert not re.search(r"\bP\d{6}\b", query), "the reporting view shows the raw patient id"
