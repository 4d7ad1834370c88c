"""The Dataflow Flex Template: metadata.json against the pipeline's options, the Dockerfile, the scripts'
command lines (dry run), and the job graph built offline with the template's default parameters."""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import apache_beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from deploy import infra_names
from pipelines import options as pipeline_options
from pipelines.beam_vitals import create_pipeline
from tests.infra import hcl_model as h
from vitals_lake import contract as c

DATAFLOW = h.REPO_ROOT / "infra" / "dataflow"
PARAM_TYPES = {
    "TEXT",
    "GCS_READ_BUCKET",
    "GCS_WRITE_BUCKET",
    "GCS_READ_FILE",
    "GCS_WRITE_FILE",
    "GCS_READ_FOLDER",
    "GCS_WRITE_FOLDER",
    "PUBSUB_TOPIC",
    "PUBSUB_SUBSCRIPTION",
    "BIGQUERY_TABLE",
    "NUMBER",
    "BOOLEAN",
    "ENUM",
}
PROJECT = "vitals-demo-123"
# What Terraform's flex_template output holds for a project (infra/terraform/outputs.tf).
EXAMPLE_CONFIG: dict[str, Any] = {
    "project_id": PROJECT,
    "region": "europe-west2",
    "image_repository": f"europe-west2-docker.pkg.dev/{PROJECT}/vitals-images/vitals-lake",
    "template_prefix": f"gs://{PROJECT}-vitals-dataflow/templates",
    "staging_bucket": f"{PROJECT}-vitals-dataflow",
    "service_account_email": f"vitals-dataflow@{PROJECT}.iam.gserviceaccount.com",
    "build_service_account": (
        f"projects/{PROJECT}/serviceAccounts/vitals-image-build@{PROJECT}.iam.gserviceaccount.com"
    ),
    "subnetwork": (
        f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/regions/europe-west2/subnetworks/vitals-europe-west2"
    ),
    "kms_key_name": None,
    "job_name": "vitals-lake-stream",
    "machine_type": "n2-standard-2",
    "num_workers": 1,
    "max_workers": 3,
    "parameters": {
        "subscription": f"projects/{PROJECT}/subscriptions/{c.VITALS_SUBSCRIPTION}",
        "lake": f"gs://{PROJECT}-vitals-lake/{infra_names.LAKE_PREFIX}",
        "model_uri": f"gs://{PROJECT}-vitals-models/{infra_names.MODEL_PREFIX}",
        "alerts_topic": f"projects/{PROJECT}/topics/{c.ALERTS_TOPIC}",
        "bigquery_dataset": f"{PROJECT}.vitals_warehouse",
        "bigquery_location": "EU",
        "shards": "64",
    },
}


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def flex() -> ModuleType:
    return _load(DATAFLOW / "flex.py", "vitals_infra_flex")


@pytest.fixture(scope="module")
def metadata() -> dict[str, Any]:
    return json.loads((DATAFLOW / "metadata.json").read_text())


@pytest.fixture(scope="module")
def params(metadata) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in metadata["parameters"]}


@pytest.fixture(scope="module")
def pipeline_flags() -> dict[str, argparse.Action]:
    """The pipeline's own options (pipelines/options.py), by destination name."""
    parser = argparse.ArgumentParser()
    pipeline_options.VitalsOptions._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.dest != "help"}


# --- metadata.json ------------------------------------------------------------------------------------
def test_metadata_is_a_valid_streaming_template_spec(metadata, params):
    assert metadata["name"] and metadata["description"] and metadata["streaming"] is True
    assert len(params) == len(metadata["parameters"]), "duplicate parameter names"
    for name, p in params.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
        assert p["label"] and len(p["helpText"]) >= 20, name
        assert p["paramType"] in PARAM_TYPES, (name, p["paramType"])
        assert isinstance(p["isOptional"], bool), name
        assert p["regexes"], f"{name} has no validation regex"
        for rx in p["regexes"]:
            re.compile(rx)


def test_every_pipeline_option_is_a_parameter_or_deliberately_not_one(flex, params, pipeline_flags):
    excluded = flex.NOT_TEMPLATE_PARAMETERS
    assert all(len(why) >= 20 for why in excluded.values())
    assert not set(excluded) & set(params), set(excluded) & set(params)
    missing = set(pipeline_flags) - set(params) - set(excluded)
    assert not missing, (
        f"pipeline options with no template parameter (add to metadata.json or exclude): {missing}"
    )
    unknown = set(params) - set(pipeline_flags)
    assert not unknown, f"template parameters the pipeline does not accept: {unknown}"
    for name in params:  # the launcher passes --name=value: the underscore spelling must be accepted
        assert f"--{name}" in pipeline_flags[name].option_strings, name


def test_required_parameters_are_what_a_streaming_run_needs(params, pipeline_flags):
    required = {n for n, p in params.items() if not p["isOptional"]}
    assert required == {"subscription", "lake"}
    for dropped in required:
        argv = [f"--{n}={v}" for n, v in EXAMPLE_CONFIG["parameters"].items() if n != dropped]
        with pytest.raises(ValueError):  # ConfigError
            pipeline_options.finalize(PipelineOptions(argv))


def test_defaults_are_the_pipelines_defaults_and_every_example_value_validates(params, pipeline_flags):
    for name, p in params.items():
        default = pipeline_flags[name].default
        if default is None:
            assert "defaultValue" not in p, name
        else:
            assert p["defaultValue"] == str(default), (name, p["defaultValue"], default)
            assert any(re.fullmatch(rx, p["defaultValue"]) for rx in p["regexes"]), name
    for name, value in EXAMPLE_CONFIG["parameters"].items():
        assert any(re.fullmatch(rx, value) for rx in params[name]["regexes"]), (name, value)
    assert not re.fullmatch(params["subscription"]["regexes"][0], f"projects/{PROJECT}/topics/x")
    assert not re.fullmatch(params["lake"]["regexes"][0], "/local/lake")


def test_terraform_passes_only_template_parameters_and_every_required_one(params, flex):
    root = h.root()
    given = set(re.findall(r"^\s{6}(\w+)\s+=", (h.TERRAFORM_DIR / "locals.tf").read_text(), re.M))
    tf_params = set(EXAMPLE_CONFIG["parameters"])
    assert tf_params <= given, tf_params - given
    assert tf_params <= set(params)
    assert {n for n, p in params.items() if not p["isOptional"]} <= tf_params
    job = root.resources_of("google_dataflow_flex_template_job")["vitals"]
    assert job["parameters"] == "${local.pipeline_parameters}"
    assert job["sdk_container_image"] == "${local.image}"
    assert job["container_spec_gcs_path"] == "${local.template_spec_path}"
    assert job["enable_streaming_engine"] is True and job["on_delete"] == "drain"
    # Terraform's output is exactly what the scripts read.
    output = root.outputs["flex_template"]["value"]
    assert set(output) - {"__is_block__"} == set(flex.CONFIG_KEYS)
    # The same template path on both sides.
    assert root.locals["template_spec_path"].endswith(
        '"${local.template_prefix}/vitals-lake-${var.image_tag}.json"}'
    )
    cfg = flex.Config.from_dict(EXAMPLE_CONFIG)
    assert cfg.template_path("t1") == f"{EXAMPLE_CONFIG['template_prefix']}/vitals-lake-t1.json"


# --- the Dockerfile -----------------------------------------------------------------------------------
def test_dockerfile_builds_one_image_for_launcher_workers_and_jobs():
    text = (DATAFLOW / "Dockerfile").read_text()
    # The base images are ARGs (flex.py build passes them pinned to digests), by explicit release tag.
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == ["${LAUNCHER_IMAGE}", "${BEAM_IMAGE}"]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    assert re.fullmatch(
        r"gcr\.io/dataflow-templates-base/python311-template-launcher-base:"
        r"flex_templates_base_image_release_\d{8}_RC\d\d",
        args["LAUNCHER_IMAGE"],
    )
    assert args["BEAM_IMAGE"] == "apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}"
    assert not [v for v in args.values() if v.endswith(":latest")]
    assert args["BEAM_VERSION"] == apache_beam.__version__, (
        "the workers must run the Beam version the tests use"
    )
    assert args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}" == "3.11"
    assert args["PSEUDONYM_SECRET"] == infra_names.SECRETS["pseudonym_key"]
    assert args["MODEL_VERIFY_SECRET"] == infra_names.SECRETS["model_verify_key"]
    assert "MODEL_SIGNING_SECRET" not in args  # workers never hold the key that signs models
    assert "/opt/google/dataflow/python_template_launcher" in text
    py_file = re.search(r'FLEX_TEMPLATE_PYTHON_PY_FILE="\$\{WORKDIR\}/(\S+)"', text).group(1)
    assert (h.REPO_ROOT / py_file).read_text().count('if __name__ == "__main__":') == 1
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in src.split():
            assert (h.REPO_ROOT / item).exists(), f"Dockerfile copies {item}, which does not exist"
    packages = tomllib.loads((h.REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in ("vitals_lake", "pipelines", "warehouse"):
        assert f"COPY {package} /tmp/vitals-src/{package}" in text
        assert any(pattern.startswith(package) for pattern in packages["find"]["include"])
    # The project is installed as a wheel from the copied source, with the locked dependencies only.
    assert "COPY sql/views /tmp/vitals-src/sql/views" in text  # warehouse/view_sql links there
    assert "pip install --no-cache-dir --require-hashes --no-deps --no-build-isolation -r" in text
    assert "pip install --no-cache-dir --no-deps --no-index --no-build-isolation /tmp/vitals-src" in text
    assert "--editable" not in text
    assert 'ENTRYPOINT ["/opt/vitals/worker_entrypoint.sh"]' in text
    build = (DATAFLOW / "cloudbuild.yaml").read_text()
    assert "--file=infra/dataflow/Dockerfile" in build and '_BEAM_VERSION: "2.77.0"' in build
    for arg in ("LAUNCHER_IMAGE", "BEAM_IMAGE"):
        assert f"--build-arg={arg}=${{_{arg}}}" in build and f'_{arg}: ""' in build
    for arg in ("PSEUDONYM_SECRET", "MODEL_VERIFY_SECRET"):
        assert f"--build-arg={arg}=${{_{arg}}}" in build and f"_{arg}: {args[arg]}" in build


def test_the_worker_entrypoint_fetches_the_keys_then_starts_the_harness(tmp_path):
    script = DATAFLOW / "worker_entrypoint.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.rstrip().endswith('exec /opt/apache/beam/boot "$@"')
    assert "VITALS_PSEUDONYM_KEY_FILE" in text and "refusing to start" in text
    assert "VITALS_MODEL_VERIFY_KEY_FILE" in text and "VITALS_MODEL_VERIFY_SECRET" in text
    assert "MODEL_SIGNING" not in text
    # The worker is marked, so the development keys are refused there (vitals_lake.keys).
    assert "export VITALS_DATAFLOW_WORKER=1" in text
    from vitals_lake.keys import CLOUD_RUNTIME_ENV  # noqa: PLC0415

    assert "VITALS_DATAFLOW_WORKER" in CLOUD_RUNTIME_ENV
    fetch = _load(DATAFLOW / "fetch_secret.py", "vitals_infra_fetch_secret")
    assert (
        fetch.resource_name("vitals-pseudonym-key", "p1")
        == "projects/p1/secrets/vitals-pseudonym-key/versions/latest"
    )
    assert fetch.resource_name("projects/p2/secrets/s", None) == "projects/p2/secrets/s/versions/latest"
    assert fetch.resource_name("projects/p2/secrets/s/versions/3", None) == "projects/p2/secrets/s/versions/3"
    with pytest.raises(ValueError):
        fetch.resource_name("s", None)
    assert fetch.main(["only-one-argument"]) == 2
    # The pipeline reads the file the entrypoint writes (vitals_lake.pseudonym).
    from vitals_lake import pseudonym  # noqa: PLC0415

    key_file = tmp_path / "pseudonym.key"
    key_file.write_text("00" * 32)
    key = pseudonym.PseudonymKey.from_env({pseudonym.KEY_FILE_ENV: str(key_file)})
    assert key.source.startswith("file:") and len(key.secret) == 32


# --- the scripts ----------------------------------------------------------------------------------------
def _dry_run(flex: ModuleType, tmp_path: Path, capsys, *args: str) -> list[str]:
    config = tmp_path / "flex.json"
    config.write_text(json.dumps(EXAMPLE_CONFIG))
    assert flex.main(["--config", str(config), "--dry-run", *args]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.strip().splitlines()


def test_build_pushes_the_image_and_writes_the_template_spec(flex, tmp_path, capsys):
    lines = _dry_run(flex, tmp_path, capsys, "build", "--tag", "t1")
    image = f"{EXAMPLE_CONFIG['image_repository']}:t1"
    assert lines[0].startswith(f"gcloud builds submit {h.REPO_ROOT} ")
    assert f"_IMAGE={image}" in lines[0] and f"_BEAM_VERSION={apache_beam.__version__}" in lines[0]
    assert f"--service-account={EXAMPLE_CONFIG['build_service_account']}" in lines[0]
    assert "--ignore-file=infra/dataflow/.gcloudignore" in lines[0]
    assert lines[1].startswith(
        f"gcloud dataflow flex-template build {EXAMPLE_CONFIG['template_prefix']}/vitals-lake-t1.json"
    )
    assert f"--image={image}" in lines[1] and "--sdk-language=PYTHON" in lines[1]
    assert f"--metadata-file={DATAFLOW / 'metadata.json'}" in lines[1]
    assert lines[2].startswith('image_tag = "t1"')
    assert re.fullmatch(r"\d{8}-\d{6}", flex.default_tag())


LAUNCHER_DIGEST = "sha256:" + "a" * 64
BEAM_DIGEST = "sha256:" + "b" * 64


def test_build_pins_the_base_images_to_digests_and_records_them(flex, tmp_path, capsys):
    bases = flex.base_images()
    assert set(bases) == {"LAUNCHER_IMAGE", "BEAM_IMAGE"}
    assert bases["BEAM_IMAGE"] == f"apache/beam_python3.11_sdk:{apache_beam.__version__}"
    given = [
        "--base-digest",
        f"LAUNCHER_IMAGE={LAUNCHER_DIGEST}",
        "--base-digest",
        f"BEAM_IMAGE={BEAM_DIGEST}",
    ]
    lines = _dry_run(flex, tmp_path, capsys, "build", "--tag", "t1", *given)
    launcher = f"{bases['LAUNCHER_IMAGE']}@{LAUNCHER_DIGEST}"
    beam = f"{bases['BEAM_IMAGE']}@{BEAM_DIGEST}"
    substitutions = dict(
        s.split("=", 1) for s in re.search(r"--substitutions=(\S+)", lines[0]).group(1).split(",")
    )
    assert substitutions["_LAUNCHER_IMAGE"] == launcher and substitutions["_BEAM_IMAGE"] == beam
    assert lines[3:] == [f"# base image LAUNCHER_IMAGE = {launcher}", f"# base image BEAM_IMAGE = {beam}"]
    # A dry run resolves nothing: it shows where the digest goes.
    lines = _dry_run(flex, tmp_path, capsys, "build", "--tag", "t1")
    assert f"_BEAM_IMAGE={bases['BEAM_IMAGE']}@{flex.UNRESOLVED_DIGEST}" in lines[0]


def test_build_refuses_a_base_image_it_cannot_pin(flex, tmp_path, capsys, monkeypatch):
    def unreachable(ref: str) -> str:
        raise flex.FlexError(f"cannot resolve {ref} to a digest: no network")

    monkeypatch.setattr(flex, "resolve_digest", unreachable)
    config = tmp_path / "flex.json"
    config.write_text(json.dumps(EXAMPLE_CONFIG))
    # Not a dry run: it stops before any command runs.
    assert flex.main(["--config", str(config), "build", "--tag", "t1"]) == 1
    err = capsys.readouterr().err
    assert "cannot resolve gcr.io/dataflow-templates-base/" in err and "--allow-unpinned-base" in err
    bare = flex.pinned_base_images({}, allow_unpinned=True)
    assert bare == flex.base_images()
    assert "warning: cannot resolve" in capsys.readouterr().err
    for bad in (["LAUNCHER_IMAGE=latest"], ["NO_SUCH_IMAGE=" + BEAM_DIGEST], ["BEAM_IMAGE"]):
        argv = ["--config", str(config), "--dry-run", "build", "--base-digest", *bad]
        assert flex.main(argv) == 1
        assert "--base-digest" in capsys.readouterr().err


def test_digests_are_resolved_through_the_registry_api_with_a_pull_token(flex):
    """Against a fake registry (Docker Registry v2): 401 with a Bearer challenge, an anonymous token
    from the realm, then the manifest's digest from a HEAD request."""
    import http.server  # noqa: PLC0415
    import threading  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415

    seen: list[tuple[str, str, dict[str, str]]] = []

    class Registry(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            seen.append(("HEAD", self.path, dict(self.headers)))
            if self.path != "/v2/team/worker/manifests/1.2.3":
                self.send_response(404)
            elif self.headers.get("Authorization") != "Bearer t0ken":
                self.send_response(401)
                realm = f"http://{self.headers['Host']}/token"
                self.send_header(
                    "WWW-Authenticate",
                    f'Bearer realm="{realm}",service="fake",scope="repository:team/worker:pull"',
                )
            else:
                self.send_response(200)
                self.send_header("Docker-Content-Digest", BEAM_DIGEST)
            self.end_headers()

        def do_GET(self) -> None:
            seen.append(("GET", self.path, dict(self.headers)))
            body = json.dumps({"token": "t0ken"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ref = f"127.0.0.1:{server.server_port}/team/worker:1.2.3"
        assert flex.resolve_digest(ref, scheme="http", timeout=10) == BEAM_DIGEST
        with pytest.raises(flex.FlexError, match="cannot resolve"):
            flex.resolve_digest(f"127.0.0.1:{server.server_port}/team/other:1", scheme="http", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    method, path, _ = seen[1]
    assert method == "GET" and urllib.parse.parse_qs(urllib.parse.urlsplit(path).query) == {
        "service": ["fake"],
        "scope": ["repository:team/worker:pull"],
    }
    assert "application/vnd.oci.image.index.v1+json" in seen[2][2]["Accept"]
    assert flex.parse_reference("apache/beam_python3.11_sdk:2.77.0") == (
        "registry-1.docker.io",
        "apache/beam_python3.11_sdk",
        "2.77.0",
    )
    assert flex.parse_reference("python:3.11") == ("registry-1.docker.io", "library/python", "3.11")
    with pytest.raises(flex.FlexError):
        flex.parse_reference("gcr.io/x/y@sha256:" + "0" * 64)


def test_run_and_update_launch_the_streaming_job_with_every_parameter(flex, tmp_path, capsys):
    (run,) = _dry_run(flex, tmp_path, capsys, "run", "--tag", "t1")
    (update,) = _dry_run(flex, tmp_path, capsys, "update", "--tag", "t1")
    assert "--update" not in run
    assert update == run.replace(" '--parameters", " --update '--parameters")
    assert run.startswith("gcloud dataflow flex-template run vitals-lake-stream ")
    for flag in (
        f"--template-file-gcs-location={EXAMPLE_CONFIG['template_prefix']}/vitals-lake-t1.json",
        f"--service-account-email={EXAMPLE_CONFIG['service_account_email']}",
        "--disable-public-ips",
        "--enable-streaming-engine",
        f"--subnetwork={EXAMPLE_CONFIG['subnetwork']}",
        f"--staging-location=gs://{EXAMPLE_CONFIG['staging_bucket']}/staging",
    ):
        assert flag in run, flag
    params = dict(p.split("=", 1) for p in run.split("--parameters=^~^", 1)[1].rstrip("'").split("~"))
    assert params["sdk_container_image"] == f"{EXAMPLE_CONFIG['image_repository']}:t1"
    assert {k: v for k, v in params.items() if k != "sdk_container_image"} == EXAMPLE_CONFIG["parameters"]


def test_drain_finds_the_active_job_by_name(flex, tmp_path, capsys):
    find, drain = _dry_run(flex, tmp_path, capsys, "drain")
    assert find.startswith("gcloud dataflow jobs list ") and "--status=active" in find
    assert "--filter=name=vitals-lake-stream" in find
    assert drain.startswith("gcloud dataflow jobs drain '$JOB_ID' ")


def test_scripts_refuse_bad_parameters(flex, tmp_path, capsys):
    config = tmp_path / "flex.json"
    config.write_text(json.dumps(EXAMPLE_CONFIG))
    base = ["--config", str(config), "--dry-run"]
    assert flex.main([*base, "--param", "no_such_option=1", "run", "--tag", "t"]) == 1
    assert "not template parameters" in capsys.readouterr().err
    assert flex.main([*base, "--param", "lake=/not/gcs", "run", "--tag", "t"]) == 1
    assert "does not match" in capsys.readouterr().err
    assert flex.main([*base, "--param", "subscription=", "run", "--tag", "t"]) == 1
    assert "required template parameters missing: subscription" in capsys.readouterr().err
    assert flex.main(["--dry-run", "build"]) == 1
    assert "--from-terraform DIR or --config FILE" in capsys.readouterr().err


def test_every_gcloud_flag_the_scripts_use_exists():
    """Checked against the installed Google Cloud CLI's own help (offline)."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.fail(
            "gcloud is not installed: install the Google Cloud CLI (it also brings the Pub/Sub emulator)"
        )
    flex_src = (DATAFLOW / "flex.py").read_text()
    script_src = (h.TERRAFORM_DIR / "scripts" / "trigger_dead_letter.sh").read_text()
    used = {
        ("builds", "submit"): [
            "config",
            "ignore-file",
            "substitutions",
            "service-account",
            "gcs-source-staging-dir",
            "region",
        ],
        ("dataflow", "flex-template", "build"): ["image", "sdk-language", "metadata-file"],
        ("dataflow", "flex-template", "run"): [
            "template-file-gcs-location",
            "service-account-email",
            "staging-location",
            "temp-location",
            "subnetwork",
            "disable-public-ips",
            "enable-streaming-engine",
            "worker-machine-type",
            "num-workers",
            "max-workers",
            "dataflow-kms-key",
            "update",
            "parameters",
        ],
        ("dataflow", "jobs", "list"): ["status", "filter", "format", "region"],
        ("dataflow", "jobs", "drain"): ["region"],
        ("eventarc", "triggers", "describe"): ["location", "format"],
        ("pubsub", "subscriptions", "update"): [
            "dead-letter-topic",
            "max-delivery-attempts",
            "min-retry-delay",
            "max-retry-delay",
        ],
        ("pubsub", "subscriptions", "add-iam-policy-binding"): ["member", "role"],
    }
    for flags in used.values():
        for flag in flags:
            assert f"--{flag}" in flex_src or f"--{flag}" in script_src, flag

    def help_text(command: tuple[str, ...]) -> str:
        out = subprocess.run(
            [gcloud, *command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        )
        assert out.returncode == 0, (command, out.stderr[-500:])
        return re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        texts = dict(zip(used, pool.map(help_text, used), strict=True))
    for command, flags in used.items():
        for flag in flags:
            assert f"--{flag}" in texts[command], f"gcloud {' '.join(command)} has no --{flag}"


# --- the job graph, offline ----------------------------------------------------------------------------
def test_the_dataflow_graph_builds_from_the_templates_default_parameters(params):
    """What the launcher would run: every parameter at its default, the required ones as Terraform sets
    them, on the DataflowRunner in dry-run mode (nothing leaves the machine)."""
    values = {n: p["defaultValue"] for n, p in params.items() if "defaultValue" in p}
    values.update(EXAMPLE_CONFIG["parameters"])
    argv = [f"--{n}={v}" for n, v in sorted(values.items())]
    options = PipelineOptions(
        [
            "--runner=DataflowRunner",
            "--dry_run=True",
            f"--project={PROJECT}",
            "--region=europe-west2",
            f"--temp_location=gs://{EXAMPLE_CONFIG['staging_bucket']}/temp",
            f"--sdk_container_image={EXAMPLE_CONFIG['image_repository']}:t1",
            *argv,
        ]
    )
    pipeline = create_pipeline(options)
    pipeline.run()
    names = {t.unique_name for t in pipeline.runner.proto_pipeline.components.transforms.values()}
    for stage in (
        "ReadEnvelopes/ReadPubSub",
        "WriteBronze",
        "GateReadings/ParseCheckEnrich",
        "AdvanceShards/GatherPerShard",
        "WriteQuarantine",
        "AdvanceShards/DedupScoreAlertInsert",
        "UpsertGold",
        "UpsertRolling",
        "PublishAlerts",
        "StreamGoldToBigQuery/WriteBatches",
        "StreamDataQualityToBigQuery/WriteBatches",
    ):
        assert any(n == stage or n.startswith(stage + "/") for n in names), stage
    assert options.view_as(StandardOptions).streaming


def test_the_image_holds_everything_the_pipeline_and_jobs_import():
    """The Dockerfile builds its wheel from vitals_lake, pipelines, warehouse and sql/views only: what
    the launcher, the workers and the scheduled jobs import must not reach into the other top-level
    directories."""
    text = (DATAFLOW / "Dockerfile").read_text()
    copied = {src.split("/")[0] for src in re.findall(r"^COPY (\S+) /tmp/vitals-src/\1$", text, re.M)}
    assert copied == {"vitals_lake", "pipelines", "warehouse", "sql"}
    entry = re.search(r'python -c "(import [^"]+)"', text).group(1)
    top_level = {p.name for p in h.REPO_ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
    probe = f"import json, sys; {entry}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=h.REPO_ROOT,
        timeout=300,
        check=True,
    )
    imported = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert imported & top_level <= copied, imported & top_level - copied
