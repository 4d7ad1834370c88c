"""The warehouse views: BigQuery standard SQL in ``sql/views/*.sql``, the one source for both engines.

Each file is one view's query. Tables and other views are named ``${project}.${dataset}.NAME`` inside
backticks; that placeholder is what Terraform's ``templatefile()`` fills in, and what
:func:`bigquery_sql` fills in here. Locally, :func:`duckdb_sql` drops the qualifier (the DuckDB
warehouse keeps every table and view in its default schema) and transpiles the query with sqlglot
from BigQuery to DuckDB. No SQL is ever copied by hand between the two.

The files are package data, read through :mod:`importlib.resources` (never a path into a checkout), so
an installed wheel has them: ``warehouse/view_sql`` is a link to ``sql/views``, which setuptools copies
into the wheel (pyproject.toml's package-data). sqlglot, a local-only dependency, is imported only by
:func:`duckdb_sql`: the BigQuery side (:func:`bigquery_ddl`) needs the runtime dependencies only.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final, Literal

from vitals_lake import contract as c

# The views' files: the package's view_sql (in a checkout, the link to sql/views).
VIEWS_DIR: Final[Traversable] = resources.files("warehouse") / "view_sql"

# Base views: one warehouse table de-duplicated by its key (newest version first). The key and version
# must match warehouse/tables.py (tests/unit/test_views.py checks it).
BASE_VIEWS: Final[dict[str, str]] = {
    "gold_latest": c.GOLD_TABLE,
    "alerts_dedup": c.ALERTS_TABLE,
    "dq_metrics_dedup": c.DQ_METRICS_TABLE,
    "diagnosis_latest": c.DIAGNOSIS_TABLE,
}
# The views analysts and dashboards query: they name patients by the pseudonymous patient_key only.
PUBLIC_VIEWS: Final = (
    "patient_risk_scores",
    "ward_alert_counts",
    "vital_signs_hourly_trend",
    "diagnosis_summary",
    "latest_vitals",
    "data_quality_daily",
    "gold_windows",
)
# The views that re-identify a patient (patient_key -> patient_id), for the roles that may.
IDENTITY_VIEWS: Final = ("patient_identity",)

# Where each kind of view lives in BigQuery: the base views beside the tables in the restricted
# warehouse dataset; the public views in a reporting dataset that analysts read; the identity views
# in an identity dataset of their own. Both other datasets are authorised on the warehouse dataset,
# so their views read its tables without their readers being able to. Locally (DuckDB) every view
# is in one schema: there is no IAM to separate.
DatasetRole = Literal["warehouse", "reporting", "identity"]
DATASET_SUFFIX: Final[dict[DatasetRole, str]] = {
    "warehouse": "",
    "reporting": "_reporting",
    "identity": "_identity",
}

_QUALIFIED: Final = re.compile(r"`\$\{project\}\.\$\{dataset\}\.(\w+)`")
_PLACEHOLDER: Final = re.compile(r"[$%]\{")
_PROJECT_RE: Final = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_DATASET_RE: Final = re.compile(r"^\w{1,1024}$")


class ViewError(ValueError):
    """A view file is missing, malformed, or uses a placeholder other than ``${project}.${dataset}``."""


def view_names() -> list[str]:
    """Every view in ``sql/views``, in creation order (a view after the views it reads)."""
    files = sorted(p.name.removesuffix(".sql") for p in VIEWS_DIR.iterdir() if p.name.endswith(".sql"))
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in path:
            raise ViewError(f"views depend on each other in a cycle: {' -> '.join((*path, name))}")
        for dep in sorted(dependencies(name) & set(files)):
            visit(dep, (*path, name))
        ordered.append(name)

    for name in files:
        visit(name, ())
    for name in ordered:
        # A reporting or identity view names what it reads in the warehouse dataset.
        outside = {d for d in dependencies(name) if d in ordered and dataset_role(d) != "warehouse"}
        if dataset_role(name) != "warehouse" and outside:
            raise ViewError(f"{name} reads {sorted(outside)}, which live outside the warehouse dataset")
    return ordered


@cache
def source(name: str) -> str:
    """The view's file as written (BigQuery SQL with the ``${project}.${dataset}`` placeholder)."""
    path = VIEWS_DIR / f"{name}.sql"
    if not re.fullmatch(r"\w+", name) or not path.is_file():
        raise ViewError(f"no view {name!r} in sql/views (the package's {VIEWS_DIR})")
    sql = path.read_text(encoding="utf-8").strip().rstrip(";")
    leftover = _PLACEHOLDER.search(_QUALIFIED.sub("", sql))
    if leftover:
        raise ViewError(
            f"{path.name}: only `${{project}}.${{dataset}}.name` placeholders are allowed "
            f"(Terraform templatefile() would try to fill {sql[leftover.start() : leftover.start() + 20]!r})"
        )
    return sql


def description(name: str) -> str:
    """The view's description: the first sentence of its leading ``--`` comment."""
    lines = []
    for line in source(name).splitlines():
        if not line.startswith("--") or not line.removeprefix("--").strip() or line.startswith("--  "):
            break  # the end of the first paragraph, or an indented listing of columns
        lines.append(line.removeprefix("--").strip())
    text = " ".join(lines)
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(":")
    if not first:
        raise ViewError(f"{name}.sql: no leading comment to describe the view")
    return first if first.endswith(".") else first + "."


def dependencies(name: str) -> set[str]:
    """The tables and views a view reads."""
    return set(_QUALIFIED.findall(source(name)))


def dataset_role(name: str) -> DatasetRole:
    """Which dataset the view belongs in (:data:`DATASET_SUFFIX`)."""
    if name in PUBLIC_VIEWS:
        return "reporting"
    if name in IDENTITY_VIEWS:
        return "identity"
    return "warehouse"


def view_dataset(name: str, dataset: str) -> str:
    """The BigQuery dataset holding view ``name`` when the warehouse dataset is ``dataset``."""
    return dataset + DATASET_SUFFIX[dataset_role(name)]


def bigquery_sql(name: str, project: str, dataset: str) -> str:
    """The view's query for BigQuery, with the project and dataset filled in."""
    if not _PROJECT_RE.match(project):
        raise ViewError(f"GCP project id is malformed: {project!r}")
    if not _DATASET_RE.match(dataset):
        raise ViewError(f"BigQuery dataset name is malformed: {dataset!r}")
    return _QUALIFIED.sub(lambda m: f"`{project}.{dataset}.{m.group(1)}`", source(name))


def bigquery_ddl(name: str, project: str, dataset: str) -> str:
    """``CREATE OR REPLACE VIEW`` for BigQuery (the emulators ignore a PATCH of a view's query), in the
    view's own dataset (:func:`view_dataset`); what it reads stays in ``dataset``."""
    where = f"{project}.{view_dataset(name, dataset)}.{name}"
    return f"CREATE OR REPLACE VIEW `{where}` AS\n{bigquery_sql(name, project, dataset)};"


@cache
def duckdb_sql(name: str) -> str:
    """The view's query transpiled for DuckDB (run it on a connection with ``TimeZone='UTC'``)."""
    import sqlglot  # noqa: PLC0415 - the local warehouse's dependency ([local]), not the runtime's
    from sqlglot.errors import ErrorLevel  # noqa: PLC0415

    local = _QUALIFIED.sub(lambda m: m.group(1), source(name))
    try:
        tree = sqlglot.parse_one(local, read="bigquery")
        return tree.sql(dialect="duckdb", pretty=True, unsupported_level=ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as exc:
        raise ViewError(f"{name}.sql does not transpile from BigQuery to DuckDB: {exc}") from exc


def duckdb_ddl(name: str) -> str:
    return f'CREATE OR REPLACE VIEW "{name}" AS\n{duckdb_sql(name)}'
