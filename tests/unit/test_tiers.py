"""The test tiers (tests/tiers.py): a test's folder is its marker, and a test marked with another tier, or
outside a tier folder, stops the run instead of running in the wrong tier."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.tiers import TIERS

pytest_plugins = ("pytester",)

TESTS = Path(__file__).resolve().parents[1]
PYPROJECT = TESTS.parent / "pyproject.toml"
OPTIONS = tomllib.loads(PYPROJECT.read_text())["tool"]["pytest"]["ini_options"]
# What tests/conftest.py does, for a suite in pytester's directory.
CONFTEST = """
from pathlib import Path

import pytest

from tests.tiers import mark_tiers


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    mark_tiers(items, Path(__file__).resolve().parent)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An empty suite with the tier folders, the tier hook and the project's markers."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # none needed; finding them takes a second
    pytester.makeconftest(CONFTEST)
    markers = "".join(f"    {m}\n" for m in OPTIONS["markers"])
    pytester.makeini(f"[pytest]\naddopts = --strict-markers -p no:cacheprovider\nmarkers =\n{markers}")
    for tier in TIERS:
        (pytester.path / tier).mkdir()
    return pytester


def test_every_tier_is_a_folder_of_tests_and_a_declared_marker(request: pytest.FixtureRequest) -> None:
    assert {m.split(":", 1)[0] for m in OPTIONS["markers"]} == set(TIERS)
    assert {p.name for p in TESTS.iterdir() if (p / "__init__.py").exists()} == set(TIERS)
    assert "--strict-markers" in OPTIONS["addopts"]
    assert request.node.get_closest_marker("unit") is not None  # tests/conftest.py marked this test


def test_a_test_is_marked_with_its_folder_and_selected_by_it(suite: pytest.Pytester) -> None:
    (suite.path / "unit" / "test_a.py").write_text("def test_fast():\n    pass\n")
    (suite.path / "e2e" / "test_b.py").write_text("def test_slow():\n    pass\n")
    suite.runpytest("-m", "unit").assert_outcomes(passed=1, deselected=1)
    result = suite.runpytest("-m", "e2e", "-v")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*e2e/test_b.py::test_slow PASSED*"])


def test_a_test_marked_with_another_tier_stops_the_run(suite: pytest.Pytester) -> None:
    (suite.path / "unit" / "test_a.py").write_text(
        "import pytest\n\n@pytest.mark.integration\ndef test_needs_a_broker():\n    pass\n"
    )
    result = suite.runpytest("-m", "unit")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = "*unit/test_a.py::test_needs_a_broker: in tests/unit/ but marked integration*"
    result.stderr.fnmatch_lines([expected])


def test_a_test_outside_the_tier_folders_stops_the_run(suite: pytest.Pytester) -> None:
    (suite.path / "test_loose.py").write_text("def test_nowhere():\n    pass\n")
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_loose.py::test_nowhere: not in a tier folder*"])
