"""The repository carries every fact it relies on: no file points outside it to the team's shared notes.

A figure measured elsewhere is restated with its measurement in the repository's own docs
(docs/design.md, "Toolchain survey"); a reader of a clone has nothing else."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Built from parts, so this file does not match itself.
OUTSIDE = re.compile(
    "|".join([re.escape("../" + "shared"), re.escape("/work/" + "shared"), re.escape("FACTS" + ".md")])
)
IGNORE_FILES = (".gitignore", ".gcloudignore", ".dockerignore", ".terraformignore", ".helmignore")


def _repository_files() -> list[Path]:
    """Tracked files plus new ones not ignored (a file added in this change counts too)."""
    done = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    names = [n for n in done.stdout.decode().split("\0") if n]
    assert len(names) > 100, "git ls-files listed too little: not run in the repository?"
    return [REPO / n for n in names if not n.endswith(IGNORE_FILES)]


def test_no_file_cites_notes_outside_the_repository():
    found = []
    for path in _repository_files():
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary
            continue
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:120]}")
    assert not found, "restate these facts in the repository's docs instead:\n" + "\n".join(found)


def test_the_check_catches_a_citation():
    assert OUTSIDE.search("see " + "../" + "shared/" + "FACTS" + ".md")
    assert OUTSIDE.search("(" + "FACTS" + ".md: 130 rows/s)")
    assert not OUTSIDE.search("shared memory, facts.py")
