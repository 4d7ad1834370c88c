"""Names and BigQuery schemas for Terraform, generated from the contract (one source, no copies).

Terraform cannot import Python, so the names it creates are written once from ``vitals_lake.contract``,
``warehouse.tables`` and ``sql/views/`` into ``infra/terraform/generated/``:

* ``names.json``: Pub/Sub topics and subscriptions, the Kafka topic, the lake prefix and tables, the
  BigQuery dataset, tables (partitioning, clustering, schema file) and views in creation order, and the
  Secret Manager secret ids. Terraform reads it with ``jsondecode(file(...))`` into ``local.names``
  (deliberately not a ``*.auto.tfvars.json``: Terraform only auto-loads those from the root module's
  own directory, and a variable could be overridden by a user's tfvars).
* ``bq_schemas/<table>.json``: each warehouse table's schema in the BigQuery API's JSON form, made by
  ``warehouse.bigquery.bigquery_schema`` (the same Arrow -> BigQuery mapping the sink
  checks tables against), so a Terraform-created table never drifts from what the pipeline writes.

Usage::

    python -m deploy.infra_names --write   # regenerate after changing the contract
    python -m deploy.infra_names --check   # exit 1 and list the stale files (tests run this)
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from pipelines import counters
from vitals_lake import access as lake_access
from vitals_lake import catalogue
from vitals_lake import contract as c
from warehouse import views
from warehouse.bigquery import bigquery_schema
from warehouse.settings import DEFAULT_DATASET
from warehouse.tables import DEAD_LETTER_SCHEMA, DEAD_LETTER_TABLE, WAREHOUSE_TABLES

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
GENERATED_DIR: Final = REPO_ROOT / "infra" / "terraform" / "generated"
NAMES_FILE: Final = "names.json"
SCHEMAS_DIR: Final = "bq_schemas"
GENERATED_BY: Final = "python -m deploy.infra_names --write (from vitals_lake/contract.py); do not edit"

# Names the code does not hold elsewhere; kept here so Terraform, the Flex Template and the docs share
# them. The pseudonym secret's id is the one vitals_lake/pseudonym.py documents.
VITALS_DEAD_LETTER_TOPIC: Final = f"{c.VITALS_TOPIC}-dead-letter"
VITALS_DEAD_LETTER_SUBSCRIPTION: Final = f"{VITALS_DEAD_LETTER_TOPIC}-inspect"
ALERTS_DEAD_LETTER_TOPIC: Final = f"{c.ALERTS_TOPIC}-dead-letter"
ALERTS_DEAD_LETTER_SUBSCRIPTION: Final = f"{ALERTS_DEAD_LETTER_TOPIC}-inspect"
LAKE_PREFIX: Final = "lake"
MODEL_PREFIX: Final = "anomaly"  # gs://<models bucket>/anomaly is the pipeline's --model-uri
ADMISSIONS_REFERENCE_PREFIX: Final = "reference"  # gs://<landing bucket>/reference/diagnosis_mapping.csv
ADMISSIONS_INCOMING_PREFIX: Final = "incoming"  # gs://<landing bucket>/incoming/patients_daily_file_*.csv
SECRETS: Final = {
    "pseudonym_key": "vitals-pseudonym-key",  # VITALS_PSEUDONYM_KEY (pipeline, admissions loader)
    "model_signing_key": "vitals-model-signing-key",  # VITALS_MODEL_SIGNING_KEY (training signs)
    "model_verify_key": "vitals-model-verify-key",  # VITALS_MODEL_VERIFY_KEY (the pipeline verifies)
    "smtp_password": "vitals-alert-smtp-password",  # the alert function's SMTP login
    "webhook_signing_key": "vitals-alert-webhook-signing-key",  # signs the function's webhook bodies
    "slack_webhook_url": "vitals-alert-slack-webhook-url",  # optional Slack incoming webhook
    "alert_routing": "vitals-alert-routing",  # the function's routing config (names clinicians)
}


# The alert notifier deploys from its own directory and imports nothing of the project's: the log
# messages and field its log-based metrics select are read from its source.
NOTIFIER_SERVICE: Final = REPO_ROOT / "functions" / "alert_notifier" / "notifier" / "service.py"
NOTIFIER_LOG_NAMES: Final = {
    "alert_handled": "LOG_ALERT_HANDLED",
    "delivery_gave_up": "LOG_DELIVERY_GAVE_UP",
    "latency_field": "LATENCY_FIELD",
}


def notifier_log_names(source: Path = NOTIFIER_SERVICE) -> dict[str, str]:
    """The notifier's log message and field constants (module-level string assignments)."""
    found: dict[str, str] = {}
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            value = node.value
            for target in targets:
                if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
                    found[target.id] = str(value.value)
    missing = sorted(set(NOTIFIER_LOG_NAMES.values()) - set(found))
    if missing:
        raise SystemExit(f"{source}: no module-level string constant(s) {', '.join(missing)}")
    return {key: found[name] for key, name in NOTIFIER_LOG_NAMES.items()}


def retention_days(table: str) -> int | None:
    """Days a BigQuery table keeps a partition: the lake table of the same name's retention (the dead
    letters, rows the warehouse refused: as long as quarantine keeps its rows)."""
    if table == DEAD_LETTER_TABLE:
        return c.TABLES["quarantine"].retention_days
    by_name = {spec.name: spec for spec in c.TABLES.values()}
    return by_name[table].retention_days if table in by_name else None


def _table_entry(name: str, partition: str | None, clustering: Sequence[str]) -> dict[str, Any]:
    return {
        "description": catalogue.table_description(name),
        "partition": partition or None,
        "clustering": list(clustering),
        "schema_file": f"{SCHEMAS_DIR}/{name}.json",
        "retention_days": retention_days(name) if partition else None,
    }


def bigquery_tables() -> dict[str, tuple[pa.Schema, str | None, tuple[str, ...]]]:
    """Every table Terraform creates in the dataset: (schema, partition column, clustering)."""
    tables: dict[str, tuple[pa.Schema, str | None, tuple[str, ...]]] = {
        t.name: (t.schema, t.partition or None, t.clustering) for t in WAREHOUSE_TABLES.values()
    }
    # The sink's dead-letter table (BigQuerySink.ensure creates it the same way: day partitions on
    # failed_at, clustered by table_name).
    tables[DEAD_LETTER_TABLE] = (DEAD_LETTER_SCHEMA, "failed_at", ("table_name",))
    return dict(sorted(tables.items()))


def view_levels() -> list[list[str]]:
    """Views grouped for creation: level 0 reads only tables, level n reads views of levels below n.

    Terraform creates each level as one ``for_each`` resource that depends on the level before it
    (instances of one resource cannot depend on each other).
    """
    ordered = views.view_names()
    level: dict[str, int] = {}
    for name in ordered:  # dependencies first, so every view it reads already has its level
        below = [level[dep] for dep in views.dependencies(name) if dep in level]
        level[name] = 1 + max(below) if below else 0
    return [[n for n in ordered if level[n] == i] for i in range(max(level.values(), default=-1) + 1)]


def names() -> dict[str, Any]:
    """The content of ``names.json``."""
    ordered_views = views.view_names()
    return {
        "generated_by": GENERATED_BY,
        "pubsub": {
            "vitals_topic": c.VITALS_TOPIC,
            "vitals_subscription": c.VITALS_SUBSCRIPTION,
            "vitals_dead_letter_topic": VITALS_DEAD_LETTER_TOPIC,
            "vitals_dead_letter_subscription": VITALS_DEAD_LETTER_SUBSCRIPTION,
            "alerts_topic": c.ALERTS_TOPIC,
            "alerts_dead_letter_topic": ALERTS_DEAD_LETTER_TOPIC,
            "alerts_dead_letter_subscription": ALERTS_DEAD_LETTER_SUBSCRIPTION,
        },
        "kafka": {"vitals_topic": c.VITALS_TOPIC},
        "lake": {
            "prefix": LAKE_PREFIX,
            "model_prefix": MODEL_PREFIX,
            "tables": sorted(spec.name for spec in c.TABLES.values()),
            # Each table a managed folder; who gets which role on it (vitals_lake/access.py).
            "grants": lake_access.grants(),
        },
        "admissions": {
            "incoming_prefix": ADMISSIONS_INCOMING_PREFIX,
            "reference_prefix": ADMISSIONS_REFERENCE_PREFIX,
            "file_glob": c.ADMISSION_FILE_GLOB,
            "diagnosis_mapping_file": c.DIAGNOSIS_MAPPING_FILE,
        },
        "bigquery": {
            "default_dataset": DEFAULT_DATASET,
            "tables": {
                name: _table_entry(name, partition, clustering)
                for name, (_, partition, clustering) in bigquery_tables().items()
            },
            # Creation order: a view after the tables and views it reads.
            "views": ordered_views,
            "view_levels": view_levels(),
            "view_dependencies": {name: sorted(views.dependencies(name)) for name in ordered_views},
            "view_descriptions": {name: views.description(name) for name in ordered_views},
            # Which dataset each view lives in (warehouse, reporting or identity), and the suffix
            # each dataset adds to the warehouse dataset's name.
            "view_datasets": {name: views.dataset_role(name) for name in ordered_views},
            "dataset_suffixes": dict(views.DATASET_SUFFIX),
        },
        "secrets": dict(SECRETS),
        # What the alert policies and log-based metrics of monitoring.tf select.
        "monitoring": {
            "pipeline_counters": counters.monitoring_names(),
            "notifier_logs": notifier_log_names(),
        },
    }


def schema_json(schema: pa.Schema) -> list[dict[str, Any]]:
    """A table schema as the BigQuery API (and Terraform's ``schema`` argument) spells it."""
    return [field.to_api_repr() for field in bigquery_schema(schema)]


def _dump(doc: object) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def rendered() -> dict[Path, str]:
    """Every generated file (relative to GENERATED_DIR) and its content."""
    out = {Path(NAMES_FILE): _dump(names())}
    for name, (schema, _, _) in bigquery_tables().items():
        out[Path(SCHEMAS_DIR) / f"{name}.json"] = _dump(schema_json(schema))
    return out


def stale(directory: Path = GENERATED_DIR) -> list[str]:
    """Generated files that are missing, differ, or should no longer be there (empty: up to date)."""
    want = rendered()
    problems = []
    for rel, text in want.items():
        path = directory / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{rel}: differs from the contract")
    schema_dir = directory / SCHEMAS_DIR
    if schema_dir.is_dir():
        for path in sorted(schema_dir.glob("*.json")):
            if path.relative_to(directory) not in want:
                problems.append(f"{path.relative_to(directory)}: no such warehouse table any more")
    return problems


def write(directory: Path = GENERATED_DIR) -> list[str]:
    """Write every generated file, remove schemas of tables that are gone; return what changed."""
    changed = stale(directory)
    want = rendered()
    for rel, text in want.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    for path in sorted((directory / SCHEMAS_DIR).glob("*.json")):
        if path.relative_to(directory) not in want:
            path.unlink()
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.infra_names", description=(__doc__ or "").split("\n")[0]
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"(re)write {GENERATED_DIR}")
    mode.add_argument("--check", action="store_true", help="exit 1 if any generated file is stale")
    parser.add_argument("--dir", type=Path, default=GENERATED_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write:
        changed = write(args.dir)
        print("\n".join(f"updated {p}" for p in changed) or f"{args.dir}: up to date")
        return 0
    problems = stale(args.dir)
    if problems:
        print(
            "infra/terraform/generated is stale (run: python -m deploy.infra_names --write):\n  "
            + "\n  ".join(problems),
            file=sys.stderr,
        )
        return 1
    print(f"{args.dir}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
