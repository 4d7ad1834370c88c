"""The README names only commands, modules, make targets and files that exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from vitals_lake.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_command_in_the_readmes_command_table_exists() -> None:
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    cells = re.findall(r"^\| ([^|]+) \|", section, flags=re.M)
    named = {name for cell in cells for name in re.findall(r"`([a-z][a-z-]+)`", cell)}
    assert {"pipeline", "redrive", "replay-dead-letters", "forget-patient"} <= named
    assert named <= set(COMMANDS), named - set(COMMANDS)


def test_every_python_module_the_readme_runs_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    modules = set(re.findall(r"python -m ([a-z_][\w.]*)", README))
    assert len(modules) >= 5
    # The notifier's modules run from its own directory (it deploys on its own), not from the root.
    monkeypatch.syspath_prepend(str(ROOT / "functions" / "alert_notifier"))
    missing = [m for m in sorted(modules) if importlib.util.find_spec(m) is None]
    assert not missing, missing


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+(?: [\w%-]+)*):", makefile, flags=re.M))
    declared = {t for line in targets for t in line.split()}
    patterns = [re.compile("^" + t.replace("%", ".+") + "$") for t in declared if "%" in t]
    named = set(re.findall(r"`make ([a-z][\w-]*[a-z])\b", README))
    assert {"demo", "test", "test-fast", "bench"} <= named
    unknown = [n for n in named if n not in declared and not any(p.match(n) for p in patterns)]
    assert not unknown, unknown


def test_every_file_the_readme_links_exists() -> None:
    links = re.findall(r"\]\(((?!https?:|#)[^)#]+)(?:#[^)]*)?\)", README)
    assert len(links) >= 10
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing
