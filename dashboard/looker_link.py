"""Print the Looker Studio Linking API URL that creates the Vitals Lake report over your BigQuery views.

    python -m dashboard.looker_link --project P --dataset D [--report-template ID]

The URL (https://lookerstudio.google.com/reporting/create?...) copies the template report
(``c.reportId``), names the copy (``r.reportName``) and points each of the template's data sources,
by its alias, at one view: ``ds.<alias>.connector=bigQuery``, ``ds.<alias>.type=TABLE``,
``ds.<alias>.projectId``, ``ds.<alias>.datasetId``, ``ds.<alias>.tableId`` (and the optional
``ds.<alias>.billingProjectId``, ``ds.<alias>.datasourceName``). Parameter names are those of the
Linking API reference (developers.google.com/looker-studio/integrate/linking-api). Aliases, views
and pages come from ``looker/report.yaml``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from dashboard.report import REPORT_FILE, Report, load_report
from vitals_lake.cli import usage_error
from warehouse import views

LINKING_API_BASE: Final = "https://lookerstudio.google.com/reporting/create"
CONNECTOR: Final = "bigQuery"
# Project ids: 6-30 lowercase letters, digits, hyphens (optionally domain-scoped "example.com:proj").
PROJECT_PATTERN: Final = re.compile(r"^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
DATASET_PATTERN: Final = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
REPORT_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def linking_url(
    report: Report,
    *,
    project: str,
    dataset: str,
    template: str | None = None,
    billing_project: str | None = None,
    report_name: str | None = None,
) -> str:
    """The Linking API URL: one BigQuery TABLE data source per alias in ``report``, each in its view's
    dataset (``dataset`` is the warehouse's; the reporting and identity views are in its suffixed
    datasets, :func:`warehouse.views.view_dataset`)."""
    if not PROJECT_PATTERN.match(project):
        raise ValueError(f"not a Google Cloud project id: {project!r}")
    if billing_project is not None and not PROJECT_PATTERN.match(billing_project):
        raise ValueError(f"not a Google Cloud project id: {billing_project!r}")
    if not DATASET_PATTERN.match(dataset):
        raise ValueError(f"not a BigQuery dataset id: {dataset!r}")
    template = template or report.template_report_id
    if template is not None and not REPORT_ID_PATTERN.match(template):
        raise ValueError(f"not a Looker Studio report id: {template!r}")
    params: list[tuple[str, str]] = []
    if template:
        params.append(("c.reportId", template))
    params.append(("r.reportName", report_name or report.name))
    for ds in report.data_sources:
        prefix = f"ds.{ds.alias}"
        params += [
            (f"{prefix}.connector", CONNECTOR),
            (f"{prefix}.datasourceName", ds.name),
            (f"{prefix}.type", "TABLE"),
            (f"{prefix}.projectId", project),
            (f"{prefix}.datasetId", views.view_dataset(ds.view, dataset)),
            (f"{prefix}.tableId", ds.view),
        ]
        if billing_project:
            params.append((f"{prefix}.billingProjectId", billing_project))
    return f"{LINKING_API_BASE}?{urlencode(params, quote_via=quote)}"


def data_sources_of(url: str) -> dict[str, dict[str, str]]:
    """Parse a Linking API URL back: alias -> {param: value} (for checks and the README)."""
    parts = urlsplit(url)
    out: dict[str, dict[str, str]] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.startswith("ds."):
            _, alias, param = key.split(".", 2)
            out.setdefault(alias, {})[param] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dashboard.looker_link",
        description="Print the Looker Studio Linking API URL for the Vitals Lake report over BigQuery views.",
    )
    p.add_argument("--project", required=True, help="Google Cloud project holding the dataset")
    p.add_argument(
        "--dataset",
        required=True,
        help="the warehouse's BigQuery dataset (the views are in DATASET_reporting and DATASET_identity)",
    )
    p.add_argument(
        "--report-template",
        default=None,
        help="id of the published template report (default: report.template_report_id in the definition)",
    )
    p.add_argument("--billing-project", default=None, help="project billed for the report's queries")
    p.add_argument("--report-name", default=None, help="name of the created report")
    p.add_argument("--definition", type=Path, default=REPORT_FILE, help="report definition (YAML)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = load_report(args.definition)
    except OSError as exc:
        return usage_error(parser, f"--definition: {exc}")
    try:
        url = linking_url(
            report,
            project=args.project,
            dataset=args.dataset,
            template=args.report_template,
            billing_project=args.billing_project,
            report_name=args.report_name,
        )
    except ValueError as exc:
        return usage_error(parser, str(exc))
    if not (args.report_template or report.template_report_id):
        print(
            "note: no --report-template: the URL has no c.reportId, so Looker Studio starts from its default "
            "template, not the Vitals Lake pages; build and publish the template (looker/README.md)",
            file=sys.stderr,
        )
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
