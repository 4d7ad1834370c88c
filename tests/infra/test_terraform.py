"""infra/terraform checked offline: formatting, parsing, references, names, IAM, Pub/Sub, BigQuery, function.

`terraform init/validate` cannot run here (the google provider cannot be downloaded), so the structure
is checked from the HCL as python-hcl2 parses it (tests/infra/hcl_model.py).
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest

from deploy import infra_names
from tests.infra import hcl_model as h
from vitals_lake import access as lake_access
from vitals_lake import contract as c
from warehouse import views
from warehouse.tables import DEAD_LETTER_TABLE, WAREHOUSE_TABLES

TF = h.TERRAFORM_DIR
FUNCTION_DIR = h.REPO_ROOT / "functions" / "alert_notifier"
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}


def _terraform() -> str:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.fail(
            "terraform is not installed: the infra checks need it for `terraform fmt` "
            "(install Terraform >= 1.5, e.g. the 1.11 release binary, into PATH)",
            pytrace=False,
        )
    return binary


def _tf_env() -> dict[str, str]:
    return {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "TF_IN_AUTOMATION": "1"}


@pytest.fixture(scope="module")
def modules() -> dict[Path, h.Module]:
    return h.load_modules()


@pytest.fixture(scope="module")
def root() -> h.Module:
    return h.root()


@pytest.fixture(scope="module")
def names() -> dict[str, Any]:
    return json.loads((TF / "generated" / "names.json").read_text())


# --- formatting and parsing ----------------------------------------------------------------------------
def test_terraform_fmt_is_clean():
    out = subprocess.run(
        [_terraform(), "fmt", "-check", "-recursive", "-diff", str(TF)],
        capture_output=True,
        text=True,
        env=_tf_env(),
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, (
        f"terraform fmt -check -recursive failed; run terraform fmt -recursive:\n{out.stdout}"
    )


def test_tfvars_example_is_formatted_and_sets_declared_valid_variables(root):
    example = TF / "terraform.tfvars.example"
    text = example.read_text()
    out = subprocess.run(
        [_terraform(), "fmt", "-"],
        input=text,
        capture_output=True,
        text=True,
        env=_tf_env(),
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == text, "terraform.tfvars.example is not terraform-fmt formatted"
    values = h.parse_file(example)
    assert set(values) <= set(root.variables), set(values) - set(root.variables)
    for name, value in values.items():
        assert _passes(root.variables[name], name, value) is not False, (
            f"example {name} = {value!r} is invalid"
        )


def test_every_terraform_file_parses(modules):
    files = {p for p in TF.rglob("*.tf") if ".terraform" not in p.parts}
    parsed = {m.path / f for m in modules.values() for f in m.files}
    assert {p.resolve() for p in files} == parsed
    assert len(modules) >= 4  # the root and its three modules


# --- references --------------------------------------------------------------------------------------------
def test_every_reference_resolves_to_a_declaration(modules):
    problems = [p for m in modules.values() for p in m.unresolved(modules)]
    assert problems == []


def test_the_reference_check_catches_undeclared_names(tmp_path):
    (tmp_path / "main.tf").write_text(
        'variable "a" {\n  type = string\n}\n'
        "locals {\n  b = var.a\n}\n"
        'resource "google_pubsub_topic" "t" {\n'
        '  name   = "${var.missing}-${local.b}"\n'
        "  labels = { x = local.nope, y = google_storage_bucket.ghost.name,\n"
        "    z = data.google_project.p.number }\n"
        "}\n"
        'module "m" {\n  source = "./child"\n}\n'
        'output "o" {\n  value = module.m.not_an_output\n}\n'
    )
    (tmp_path / "child").mkdir()
    (tmp_path / "child" / "main.tf").write_text('output "real" {\n  value = 1\n}\n')
    mods = {
        p: h.Module(p, {f.name: h.parse_file(f)})
        for p, f in (
            (tmp_path.resolve(), tmp_path / "main.tf"),
            ((tmp_path / "child").resolve(), tmp_path / "child" / "main.tf"),
        )
    }
    found = "\n".join(mods[tmp_path.resolve()].unresolved(mods))
    for name in (
        "var.missing",
        "local.nope",
        "google_storage_bucket.ghost",
        "data.google_project.p",
        "not_an_output",
    ):
        assert name in found, name
    assert "var.a" not in found and "local.b" not in found


def test_module_calls_pass_only_declared_variables_and_every_required_one(root, modules):
    meta = {"source", "count", "for_each", "depends_on", "providers", "__is_block__"}
    for name, call in root.modules.items():
        child = modules[root.module_source(name)]
        given = set(call) - meta
        assert given <= set(child.variables), (name, given - set(child.variables))
        required = {v for v, spec in child.variables.items() if "default" not in spec}
        assert required <= given, (name, required - given)


def _regex_validations(spec: dict[str, Any], name: str) -> list[re.Pattern[str]]:
    out = []
    for validation in spec.get("validation", []):
        cond = str(validation["condition"])
        m = re.search(r'can\(regex\("((?:[^"\\]|\\.)*)", var\.' + re.escape(name) + r"\)\)", cond)
        if m:
            out.append(h.hcl_regex(m.group(1).encode().decode("unicode_escape")))
    return out


def _passes(spec: dict[str, Any], name: str, value: Any) -> bool | None:
    """Whether ``value`` passes the variable's validations of the simple kinds (``var.x == null``,
    ``var.x == "literal"``, ``can(regex("...", var.x))`` joined by ``||``); None: not that simple."""
    verdicts: list[bool] = []
    for validation in spec.get("validation", []):
        cond = str(h.unwrap(validation["condition"]))
        ok: bool | None = False
        for alt in (a.strip() for a in cond.split("||")):
            if alt == f"var.{name} == null":
                ok = ok or value is None
            elif m := re.fullmatch(rf'var\.{re.escape(name)} == "([^"]*)"', alt):
                ok = ok or value == m.group(1)
            elif m := re.fullmatch(rf'can\(regex\("((?:[^"\\]|\\.)*)", var\.{re.escape(name)}\)\)', alt):
                rx = h.hcl_regex(m.group(1).encode().decode("unicode_escape"))
                ok = ok or (isinstance(value, str) and rx.search(value) is not None)
            else:
                ok = None
                break
        if ok is not None:
            verdicts.append(ok)
    return all(verdicts) if verdicts else None


def test_variables_are_described_typed_and_their_defaults_pass_their_validations(modules):
    checked = 0
    for module in modules.values():
        for name, spec in module.variables.items():
            assert spec.get("description"), f"{module.path.name}: variable {name} has no description"
            assert "type" in spec, f"{module.path.name}: variable {name} has no type"
            if "default" in spec and (verdict := _passes(spec, name, spec["default"])) is not None:
                assert verdict, f"{module.path.name}: default of {name} fails its own validation"
                checked += 1
    assert checked >= 10
    root_vars = modules[TF.resolve()].variables
    assert _passes(root_vars["project_id"], "project_id", "Not_A_Project") is False
    assert _passes(
        root_vars["kms_key_name"], "kms_key_name", "projects/p/locations/l/keyRings/r/cryptoKeys/k"
    )
    assert _passes(root_vars["firestore_database"], "firestore_database", "(default)")


def test_member_variables_refuse_public_members(root):
    for name in ("publisher_members", "landing_writer_members", "analyst_members"):
        cond = str(root.variables[name]["validation"][0]["condition"])
        pattern = h.hcl_regex(re.search(r'regex\("((?:[^"\\]|\\.)*)", m\)', cond).group(1))
        assert pattern.search("user:alice@example.org")
        for member in PUBLIC_MEMBERS:
            assert not pattern.search(member), (name, member)


def test_outputs_are_described(modules):
    for module in modules.values():
        for name, spec in module.outputs.items():
            assert spec.get("description"), f"{module.path.name}: output {name} has no description"


# --- names come from the contract -------------------------------------------------------------------------
def test_generated_files_are_current():
    assert infra_names.stale() == [], "run: python -m deploy.infra_names --write"


def test_generator_check_mode_reports_drift(tmp_path, capsys):
    assert infra_names.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "names.json: missing" in capsys.readouterr().err
    assert infra_names.main(["--write", "--dir", str(tmp_path)]) == 0
    assert infra_names.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "bq_schemas" / "retired_table.json").write_text("[]\n")
    (tmp_path / "names.json").write_text("{}\n")
    assert infra_names.main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "names.json: differs" in err and "retired_table.json" in err
    infra_names.write(tmp_path)
    assert not (tmp_path / "bq_schemas" / "retired_table.json").exists()
    assert infra_names.stale(tmp_path) == []


def test_names_json_holds_the_contracts_names(names):
    assert names["pubsub"]["vitals_topic"] == c.VITALS_TOPIC
    assert names["pubsub"]["vitals_subscription"] == c.VITALS_SUBSCRIPTION
    assert names["pubsub"]["alerts_topic"] == c.ALERTS_TOPIC
    assert names["kafka"]["vitals_topic"] == c.VITALS_TOPIC
    assert set(names["lake"]["tables"]) == {spec.name for spec in c.TABLES.values()}
    assert set(names["bigquery"]["tables"]) == {*WAREHOUSE_TABLES, DEAD_LETTER_TABLE}
    for table, spec in WAREHOUSE_TABLES.items():
        entry = names["bigquery"]["tables"][table]
        assert entry["partition"] == (spec.partition or None)
        assert entry["clustering"] == list(spec.clustering)
        schema = json.loads((TF / "generated" / entry["schema_file"]).read_text())
        assert [f["name"] for f in schema] == spec.schema.names
    assert names["bigquery"]["views"] == views.view_names()
    assert names["secrets"]["pseudonym_key"] == "vitals-pseudonym-key"  # as vitals_lake/pseudonym.py says


def test_terraform_spells_no_contract_name_by_hand(root, names):
    """Topics, subscriptions, tables, views and secrets are named from local.names, never literally."""
    for name, body in root.resources_of("google_pubsub_topic").items():
        assert str(body["name"]).startswith("${local.names.pubsub."), name
    for name, body in root.resources_of("google_pubsub_subscription").items():
        assert str(body["name"]).startswith("${local.names.pubsub."), name
    tables = root.resources_of("google_bigquery_table")
    for name, body in tables.items():
        assert body["table_id"] == "${each.key}", name
        assert "local.names.bigquery.tables" in body["for_each"] or "local.view_levels" in body["for_each"], (
            name
        )
    secrets = root.resources_of("google_secret_manager_secret")["secrets"]
    assert secrets["for_each"] == "${local.names.secrets}" and secrets["secret_id"] == "${each.value}"
    assert root.locals["names"] == '${jsondecode(file("${path.module}/generated/names.json"))}'
    literal_names = {
        *names["pubsub"].values(),
        *names["bigquery"]["tables"],
        *names["bigquery"]["views"],
        *names["secrets"].values(),
    }
    for module in h.load_modules().values():
        for fname, doc in module.files.items():
            for text in h.strings(doc):
                assert text not in literal_names, f"{module.path.name}/{fname} spells {text!r} by hand"


# --- BigQuery ---------------------------------------------------------------------------------------------
def test_every_view_file_is_deployed_level_by_level(root, names):
    files = sorted(p.stem for p in views.VIEWS_DIR.glob("*.sql"))
    levels: list[list[str]] = names["bigquery"]["view_levels"]
    assert sorted(v for level in levels for v in level) == files
    placed = {v: i for i, level in enumerate(levels) for v in level}
    for view, level in placed.items():
        for dep in views.dependencies(view):
            if dep in placed:
                assert placed[dep] < level, f"{view} (level {level}) reads {dep} (level {placed[dep]})"
            else:
                assert dep in names["bigquery"]["tables"], (
                    f"{view} reads {dep}, which Terraform does not create"
                )
    tables = root.resources_of("google_bigquery_table")
    declared_levels = sorted(int(n.rsplit("_", 1)[1]) for n in tables if n.startswith("views_level_"))
    assert declared_levels == list(range(len(declared_levels)))
    assert len(levels) <= len(declared_levels), "add a views_level_N resource in bigquery.tf"
    for i in declared_levels:
        body = tables[f"views_level_{i}"]
        assert body["for_each"] == f"${{toset(try(local.view_levels[{i}], []))}}"
        assert body["view"][0]["query"] == "${local.view_sql[each.key]}"
        assert body["view"][0]["use_legacy_sql"] is False
        before = "google_bigquery_table.tables" if i == 0 else f"google_bigquery_table.views_level_{i - 1}"
        assert body["depends_on"] == [f"${{{before}}}"]
    view_sql = root.locals["view_sql"]
    assert 'templatefile("${local.views_dir}/${v}.sql"' in view_sql
    assert "project = var.project_id" in view_sql and "dataset = local.dataset_id" in view_sql
    views_dir = root.locals["views_dir"].replace("${local.repo_root}", root.locals["repo_root"])
    # The same files: Terraform reads sql/views, the package its view_sql (a link to sql/views).
    assert (TF / views_dir.replace("${path.module}/", "")).resolve() == Path(str(views.VIEWS_DIR)).resolve()


def test_analysts_read_the_reporting_views_only_and_identity_readers_the_identity_view(root, names):
    """Minimum necessary: views live in the dataset of their role; analysts get the reporting dataset
    alone, identity readers the identity dataset alone, and nobody but the writers the warehouse."""
    assert names["bigquery"]["view_datasets"] == {v: views.dataset_role(v) for v in views.view_names()}
    assert names["bigquery"]["dataset_suffixes"] == views.DATASET_SUFFIX
    assert {v for v, role in names["bigquery"]["view_datasets"].items() if role == "reporting"} == set(
        views.PUBLIC_VIEWS
    )
    datasets = root.resources_of("google_bigquery_dataset")
    assert set(datasets["views"]["for_each"]) == {"reporting", "identity"}
    suffix = "${local.dataset_id}${local.names.bigquery.dataset_suffixes[each.key]}"
    assert datasets["views"]["dataset_id"] == suffix
    assert "google_bigquery_dataset.views" in root.locals["datasets"]
    assert "local.datasets[role].dataset_id" in root.locals["view_dataset"]
    for name, body in root.resources_of("google_bigquery_table").items():
        if name.startswith("views_level_"):
            assert body["dataset_id"] == "${local.view_dataset[each.key]}", name
    grants = root.resources_of("google_bigquery_dataset_iam_member")
    assert set(grants) == {"analysts", "identity_readers"}
    assert grants["analysts"]["dataset_id"] == '${google_bigquery_dataset.views["reporting"].dataset_id}'
    assert grants["analysts"]["for_each"] == "${toset(var.analyst_members)}"
    assert (
        grants["identity_readers"]["dataset_id"] == '${google_bigquery_dataset.views["identity"].dataset_id}'
    )
    assert grants["identity_readers"]["for_each"] == "${toset(var.identity_readers)}"
    # The warehouse dataset: an authoritative access list (no IAM resources, which would fight it), with
    # no projectReaders / projectWriters default: only its owners, the two writers and the views.
    assert not root.resources_of("google_bigquery_dataset_access")
    access = datasets["warehouse"]["access"]
    assert {(a["role"], a.get("special_group") or a.get("user_by_email")) for a in access} == {
        ("OWNER", "projectOwners"),
        ("WRITER", "${google_service_account.dataflow.email}"),
        ("WRITER", "${google_service_account.admissions.email}"),
    }
    (authorised,) = [d["access"] for d in datasets["warehouse"]["dynamic"] if "access" in d]
    assert authorised["for_each"] == "${[for d in google_bigquery_dataset.views : d.dataset_id]}"
    views_entry = authorised["content"][0]["dataset"][0]
    assert views_entry["target_types"] == ["VIEWS"]
    assert views_entry["dataset"][0]["dataset_id"] == "${access.value}"


def test_tables_are_partitioned_and_clustered_as_the_warehouse_declares(root, names):
    body = root.resources_of("google_bigquery_table")["tables"]
    assert body["for_each"] == "${local.names.bigquery.tables}"
    assert body["schema"] == '${file("${path.module}/generated/${each.value.schema_file}")}'
    partitioning = body["dynamic"][0]["time_partitioning"]["content"][0]
    assert partitioning["type"] == "DAY" and partitioning["field"] == "${time_partitioning.value}"
    assert "local.warehouse_retention_days[each.key] * 86400000" in partitioning["expiration_ms"]
    assert "each.value.clustering" in body["clustering"]
    partitioned = [t for t, e in names["bigquery"]["tables"].items() if e["partition"]]
    assert set(partitioned) >= {c.GOLD_TABLE, c.ALERTS_TABLE, c.DQ_METRICS_TABLE}
    # Every partitioned table expires its partitions after the contract's retention of its lake table.
    for table in partitioned:
        days = names["bigquery"]["tables"][table]["retention_days"]
        lake = {spec.name: spec for spec in c.TABLES.values()}
        expected = lake[table].retention_days if table in lake else c.TABLES["quarantine"].retention_days
        assert days == expected and days is not None, table
    assert "var.warehouse_retention_days" in root.locals["warehouse_retention_days"]


def test_the_maintenance_job_passes_lake_retention_overrides(root):
    job = root.modules["maintenance_job"]
    assert "var.lake_retention_days" in job["args"] and "--retention-days" in job["args"]


# --- Pub/Sub ----------------------------------------------------------------------------------------------
def test_every_subscription_has_a_dead_letter_policy(root):
    topics = root.resources_of("google_pubsub_topic")
    subs = root.resources_of("google_pubsub_subscription")
    dead_letter_topics = {
        h.unwrap(s["dead_letter_policy"][0]["dead_letter_topic"])
        for s in subs.values()
        if "dead_letter_policy" in s
    }
    trigger = root.resources_of("terraform_data")["alert_trigger_dead_letter"]
    dead_letter_topics.add(
        h.unwrap(trigger["provisioner"][0]["local-exec"]["environment"]["DEAD_LETTER_TOPIC"])
    )
    dead_letter_topics = {t.removesuffix(".id") for t in dead_letter_topics}
    assert dead_letter_topics == {
        "google_pubsub_topic.vitals_dead_letter",
        "google_pubsub_topic.alerts_dead_letter",
    }
    subscribed = set()
    for name, sub in subs.items():
        topic = str(h.unwrap(sub["topic"])).removesuffix(".id")
        subscribed.add(topic)
        assert topic.removeprefix("google_pubsub_topic.") in topics, (name, topic)
        if topic in dead_letter_topics:
            # Keeps dead letters for inspection and replay: no dead-letter policy of its own.
            assert sub["message_retention_duration"] == "604800s" and sub["retain_acked_messages"] is True, (
                name
            )
            continue
        policy = sub.get("dead_letter_policy")
        assert policy, f"subscription {name} has no dead_letter_policy"
        assert str(h.unwrap(policy[0]["dead_letter_topic"])).removesuffix(".id") in dead_letter_topics
        assert policy[0]["max_delivery_attempts"] in (
            "${var.max_delivery_attempts}",
            "${var.pipeline_max_delivery_attempts}",
        )
        assert sub["ack_deadline_seconds"] and sub["message_retention_duration"], name
        assert sub["expiration_policy"][0]["ttl"] == "", name
    # A dead-letter topic without a subscription drops what it receives.
    assert dead_letter_topics <= subscribed
    # Pub/Sub's service agent may publish to each dead-letter topic and acknowledge on the sources.
    publishers = root.resources_of("google_pubsub_topic_iam_member")["dead_letter_publisher"]
    assert {str(v).removesuffix(".name}").removeprefix("${") for v in publishers["for_each"].values()} == (
        dead_letter_topics
    )
    assert publishers["member"] == "${local.pubsub_service_agent}"


def test_the_trigger_dead_letter_script_runs_in_dry_run_mode():
    script = TF / "scripts" / "trigger_dead_letter.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "PROJECT": "vitals-demo-123",
        "REGION": "europe-west2",
        "TRIGGER": "projects/vitals-demo-123/locations/europe-west2/triggers/vitals-alert-notifier-123",
        "DEAD_LETTER_TOPIC": "projects/vitals-demo-123/topics/vitals-alerts-dead-letter",
        "MAX_DELIVERY_ATTEMPTS": "20",
        "PUBSUB_SERVICE_AGENT": "serviceAccount:service-1@gcp-sa-pubsub.iam.gserviceaccount.com",
    }
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert "gcloud eventarc triggers describe vitals-alert-notifier-123" in out
    assert "--dead-letter-topic projects/vitals-demo-123/topics/vitals-alerts-dead-letter" in out
    assert "--max-delivery-attempts 20" in out
    missing = subprocess.run(
        ["bash", str(script)], env={**env, "TRIGGER": ""}, capture_output=True, text=True, check=False
    )
    assert missing.returncode == 2 and "TRIGGER is not set" in missing.stderr


# --- IAM --------------------------------------------------------------------------------------------------
def test_no_primitive_roles_and_no_public_members(modules):
    for module in modules.values():
        for fname, doc in module.files.items():
            for text in h.strings(doc):
                assert text not in PRIMITIVE_ROLES, f"{module.path.name}/{fname}: primitive role {text}"
                for member in PUBLIC_MEMBERS:
                    assert member not in text, f"{module.path.name}/{fname}: public member {member}"
    raw = "\n".join(p.read_text() for p in TF.rglob("*.tf"))
    assert not re.search(r"roles/(owner|editor|viewer)\b", raw)


def test_project_level_grants_are_few_and_narrowed(root):
    """Roles bound on the project are only those that exist at project level alone; storage, Firestore
    and Artifact Registry grants there carry a condition naming the resource."""
    assert not root.resources_of("google_project_iam_binding") and not root.resources_of(
        "google_project_iam_policy"
    )
    allowed = {
        "roles/dataflow.worker",
        "roles/logging.logWriter",
        "roles/bigquery.jobUser",
        "roles/datastore.user",
        "roles/storage.objectViewer",
        "roles/artifactregistry.writer",
    }
    needs_condition = {"roles/datastore.user", "roles/storage.objectViewer", "roles/artifactregistry.writer"}
    for name, body in root.resources_of("google_project_iam_member").items():
        assert body["role"] in allowed, (name, body["role"])
        if body["role"] in needs_condition:
            assert body.get("condition") and "resource.name" in body["condition"][0]["expression"], name
    # Secrets are read per secret, never with a project-wide accessor role.
    readers = root.resources_of("google_secret_manager_secret_iam_member")["readers"]
    assert readers["role"] == "roles/secretmanager.secretAccessor"
    assert root.locals["secret_readers"]  # every reader is named per secret


def test_only_the_training_account_and_the_publishers_write_models(root):
    """The pipeline reads models and verifies their signature; no account that writes the lake may
    write a model (a changed threshold would turn the model's alert arm off)."""
    on_models = {
        name: body
        for name, body in root.resources_of("google_storage_bucket_iam_member").items()
        if body["bucket"] == "${module.models_bucket.name}"
    }
    assert set(on_models) == {"model_writers", "dataflow_models"}
    assert on_models["dataflow_models"]["role"] == "roles/storage.objectViewer"
    writers = on_models["model_writers"]
    assert writers["for_each"] == (
        "${toset(concat([google_service_account.training.member], var.model_publisher_members))}"
    )
    assert root.locals["model_uri"].startswith("gs://${module.models_bucket.name}/")
    signers = root.locals["secret_readers"]["model_signing_key"]
    assert "google_service_account.training.member" in signers
    # The pipeline verifies with the public key only: it cannot sign a model it would serve.
    assert "dataflow" not in signers and "maintenance" not in signers and "admissions" not in signers
    verifiers = root.locals["secret_readers"]["model_verify_key"]
    assert verifiers == {"dataflow": "${google_service_account.dataflow.member}"}


def test_the_lake_is_granted_per_table_and_never_per_bucket(root, names):
    """Nobody holds a role on the lake bucket itself (it would reach the identity tables too): every
    table is a managed folder, granted exactly vitals_lake/access.py's rows, principal by principal."""
    assert not [
        name
        for kind in ("google_storage_bucket_iam_member", "google_storage_bucket_iam_binding")
        for name, body in root.resources_of(kind).items()
        if "lake_bucket" in str(body["bucket"])
    ]
    folders = root.resources_of("google_storage_managed_folder")["lake_tables"]
    assert folders["for_each"] == "${local.lake_folders}"
    assert folders["bucket"] == "${module.lake_bucket.name}"
    assert folders["name"] == "${each.value}/"
    # The lake's table paths: <prefix>/<table>, for its prefix (and the previous one while it moves).
    assert "setproduct(local.lake_prefixes, local.names.lake.tables)" in root.locals["lake_folders"]
    assert root.locals["lake_prefixes"] == (
        "${distinct(compact([local.lake_prefix, var.lake_previous_prefix]))}"
    )
    assert root.locals["lake_uri"] == "gs://${module.lake_bucket.name}/${local.lake_prefix}"
    assert root.locals["lake_prefix"] == "${coalesce(var.lake_prefix, local.names.lake.prefix)}"
    iam = root.resources_of("google_storage_managed_folder_iam_member")["lake_tables"]
    assert iam["for_each"] == "${local.lake_grants}"
    assert iam["managed_folder"] == "${google_storage_managed_folder.lake_tables[each.value.folder].name}"
    assert (iam["role"], iam["member"]) == ("${each.value.role}", "${each.value.member}")
    assert "setproduct(local.lake_prefixes, local.names.lake.grants)" in root.locals["lake_grants"]
    assert names["lake"]["grants"] == lake_access.grants()
    principals = root.locals["lake_principals"]
    assert set(principals) == set(get_args(lake_access.Principal))
    accounts = {
        "pipeline": "dataflow",
        "admissions": "admissions",
        "maintenance": "maintenance",
        "training": "training",
    }
    for principal, account in accounts.items():
        assert principals[principal] == {principal: f"${{google_service_account.{account}.member}}"}
    assert "var.lake_operators" in principals["operators"]
    # The jobs and the streaming job wait for their table grants before they first run.
    grants = "${google_storage_managed_folder_iam_member.lake_tables}"
    for job in ("maintenance_job", "admissions_job"):
        assert grants in root.modules[job]["depends_on"]
    assert grants in root.resources_of("google_dataflow_flex_template_job")["vitals"]["depends_on"]
    # The pipeline's lake cannot be split from its grants through the template parameters.
    checks = [v["condition"] for v in root.variables["pipeline_parameters"]["validation"]]
    assert '${!contains(keys(var.pipeline_parameters), "lake")}' in checks


def test_each_component_runs_as_its_own_service_account(root):
    accounts = root.resources_of("google_service_account")
    assert len(accounts) == len({a["account_id"] for a in accounts.values()}) >= 7
    flex = root.resources_of("google_dataflow_flex_template_job")["vitals"]
    assert flex["service_account_email"] == "${google_service_account.dataflow.email}"
    assert flex["ip_configuration"] == "WORKER_IP_PRIVATE"
    function = root.resources_of("google_cloudfunctions2_function")["alert_notifier"]
    assert (
        function["service_config"][0]["service_account_email"]
        == "${google_service_account.alert_notifier.email}"
    )
    assert (
        function["event_trigger"][0]["service_account_email"]
        == "${google_service_account.alert_trigger.email}"
    )
    assert function["build_config"][0]["service_account"] == "${google_service_account.function_build.id}"
    for job in ("maintenance_job", "admissions_job"):
        assert root.modules[job]["service_account_email"].startswith("${google_service_account.")


# --- the alert function -----------------------------------------------------------------------------------
def test_the_function_triggers_on_the_alerts_topic(root, names):
    function = root.resources_of("google_cloudfunctions2_function")["alert_notifier"]
    trigger = function["event_trigger"][0]
    assert trigger["pubsub_topic"] == "${google_pubsub_topic.alerts.id}"
    assert trigger["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"
    assert root.resources_of("google_pubsub_topic")["alerts"]["name"] == "${local.names.pubsub.alerts_topic}"
    assert names["pubsub"]["alerts_topic"] == c.ALERTS_TOPIC
    build = function["build_config"][0]
    assert build["entry_point"] == "notify" and build["runtime"] == "python311"
    main = (FUNCTION_DIR / "main.py").read_text()
    assert re.search(r"^def notify\(", main, re.M), "functions/alert_notifier/main.py defines no notify()"
    assert "@functions_framework.cloud_event" in main
    assert function["service_config"][0]["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert root.locals["function_dir"] == "${local.repo_root}/functions/alert_notifier"


@pytest.fixture(scope="module")
def notifier_modules():
    """The function's own modules (functions/alert_notifier/notifier), imported from its directory."""
    before = set(sys.modules)
    sys.path.insert(0, str(FUNCTION_DIR))
    try:
        mods = {n: importlib.import_module(f"notifier.{n}") for n in ("config", "secrets", "state")}
    finally:
        sys.path.remove(str(FUNCTION_DIR))
    yield mods
    for name in set(sys.modules) - before:  # leave other tests' imports alone
        if name == "notifier" or name.startswith("notifier."):
            del sys.modules[name]


def test_the_function_environment_is_what_the_notifier_reads(root, notifier_modules):
    env = root.locals["alert_function_env"]
    source = "\n".join(p.read_text() for p in FUNCTION_DIR.rglob("*.py"))
    for name in (
        "NOTIFIER_CONFIG",
        "NOTIFIER_STATE",
        "NOTIFIER_FIRESTORE_PROJECT",
        "NOTIFIER_FIRESTORE_DATABASE",
    ):
        assert name in env and f'"{name}"' in source, name
    assert re.search(r"NOTIFIER_STATE = \"firestore\"", env)
    assert notifier_modules["secrets"].RESOURCE_SUFFIX == "_SECRET"
    assert '"${name}_SECRET"' in env
    state = notifier_modules["state"]
    assert root.locals["alert_state_collections"] == [
        state.FIRESTORE_DELIVERIES,
        state.FIRESTORE_DEAD_LETTERS,
    ]


def test_the_example_routing_config_is_one_the_notifier_accepts(root, notifier_modules):
    routing = h.parse_file(TF / "terraform.tfvars.example")["alert_routing"]
    config = notifier_modules["config"].parse_config(json.loads(json.dumps(routing)))
    secrets = set(root.locals["alert_function_secrets"])
    assert set(config.secret_names()) <= secrets
    assert {"SMTP_PASSWORD", "WEBHOOK_SIGNING_KEY", "SLACK_WEBHOOK_URL"} == secrets


def test_the_function_archive_holds_what_the_function_deploys(root):
    excludes = root.locals["alert_function_excludes"]
    files = [p.relative_to(FUNCTION_DIR).as_posix() for p in FUNCTION_DIR.rglob("*") if p.is_file()]

    def excluded(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch("./" + path, pattern) for pattern in excludes
        )

    shipped = {f for f in files if not excluded(f)}
    assert {"main.py", "requirements.txt"} <= shipped
    assert any(f.startswith("notifier/") and f.endswith(".py") for f in shipped)
    assert not any(f.startswith(".ruff_cache/") or "__pycache__" in f or f == "README.md" for f in shipped), (
        shipped
    )
    ignored = [
        line.strip()
        for line in (FUNCTION_DIR / ".gcloudignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for pattern in ignored:  # what the function's own .gcloudignore keeps out stays out
        assert not any(fnmatch.fnmatch(f, pattern.rstrip("/")) or f.startswith(pattern) for f in shipped), (
            pattern
        )


# --- the rest of the system -------------------------------------------------------------------------------
def test_buckets_are_hardened_by_one_module(root, modules):
    bucket = modules[(TF / "modules" / "bucket").resolve()].resources_of("google_storage_bucket")["this"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["versioning"][0]["enabled"] == "${var.versioning}"
    assert "encryption" in bucket["dynamic"][0] or any("encryption" in d for d in bucket["dynamic"])
    calls = {n: m for n, m in root.modules.items() if m["source"] == "./modules/bucket"}
    assert set(calls) == {
        "lake_bucket",
        "staging_bucket",
        "function_bucket",
        "landing_bucket",
        "models_bucket",
    }
    for name, call in calls.items():
        assert call["kms_key_name"] == "${var.kms_key_name}", name
        assert call["lifecycle_rules"], name
    assert not root.resources_of("google_storage_bucket"), "buckets go through modules/bucket"


def test_scheduled_maintenance_and_admissions_run_the_repository_clis(root, names):
    maintenance = root.modules["maintenance_job"]
    assert maintenance["command"] == ["python", "-m", "vitals_lake.maintenance"]
    assert "--lake" in maintenance["args"] or "--lake" in str(maintenance["args"])
    admissions = root.modules["admissions_job"]
    assert admissions["command"] == ["python", "-m", "pipelines.load_admissions"]
    assert "--require-key" in admissions["args"]
    assert set(admissions["secret_env"]) == {"VITALS_PSEUDONYM_KEY"}
    for module in ("vitals_lake.maintenance", "pipelines.load_admissions"):
        cli = importlib.import_module(module)
        assert hasattr(cli, "main"), module
    flags = set(
        re.findall(r'"(--[a-z-]+)"', json.dumps(admissions["args"]) + json.dumps(maintenance["args"]))
    )
    maintenance_src = (h.REPO_ROOT / "vitals_lake" / "maintenance.py").read_text()
    admissions_src = (h.REPO_ROOT / "pipelines" / "load_admissions.py").read_text()
    for flag in flags:
        assert f'"{flag}"' in maintenance_src or f'"{flag}"' in admissions_src, flag


def test_kafka_is_managed_behind_a_variable_with_the_pubsub_sink_connector(root):
    kafka = root.modules["kafka"]
    assert kafka["count"] == "${local.kafka_managed ? 1 : 0}"
    assert root.locals["kafka_managed"] == '${var.kafka_mode == "managed"}'
    config = root.locals["pubsub_sink_connector_config"]
    assert config["connector.class"] == "com.google.pubsub.kafka.sink.CloudPubSubSinkConnector"
    assert config["cps.topic"] == "${google_pubsub_topic.vitals.name}"
    assert config["topics"] == "${local.names.kafka.vitals_topic}"
    assert kafka["topic_id"] == "${local.names.kafka.vitals_topic}"
    # The connector forwards the record bytes untouched (readings are JSON).
    assert config["value.converter"] == "org.apache.kafka.connect.converters.ByteArrayConverter"


def test_firestore_database_backs_the_notifiers_idempotency_records(root):
    db = root.resources_of("google_firestore_database")["alerts"]
    assert db["type"] == "FIRESTORE_NATIVE" and db["name"] == "${var.firestore_database}"
    ttl = root.resources_of("google_firestore_field")["alert_state_ttl"]
    assert ttl["field"] == "expire_at"
