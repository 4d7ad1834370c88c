"""Dashboards: the Looker Studio report definition and its Linking API URL (the browser tests of the
local dashboard are in tests/e2e/test_dashboard.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from dashboard.data import PAGE_VIEWS
from dashboard.looker_link import LINKING_API_BASE, data_sources_of, linking_url
from dashboard.looker_link import main as looker_main
from dashboard.report import ReportError, load_report, parse_report
from warehouse import views

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "0b5c3c1e-4d7a-4f44-9b61-2a9d8f6e7c10"


# --- Looker Studio: report definition and Linking API URL ------------------------------------------


def test_report_definition_has_the_four_pages_over_the_views():
    report = load_report()
    assert [p.id for p in report.pages] == ["patient_detail", "high_risk", "ward_overview", "hospital_trends"]
    # Every public view is a data source of the report; the only other one is the identity view (the
    # patient-detail page's re-identification), and it is used on that page only.
    assert set(views.PUBLIC_VIEWS) <= set(report.views)
    assert set(report.views) - set(views.PUBLIC_VIEWS) == set(views.IDENTITY_VIEWS)
    for page in report.pages:
        if set(report.views_of(page.id)) & set(views.IDENTITY_VIEWS):
            assert page.id == "patient_detail"
    assert set(report.views) <= set(views.view_names())
    for page in report.pages:
        assert page.charts, page.id


def test_linking_url_wires_every_view_and_every_page():
    report = load_report()
    url = linking_url(report, project="vitals-lake-prod", dataset="vitals_lake", template=TEMPLATE)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == LINKING_API_BASE
    params = dict(parse_qsl(parts.query))
    assert params["c.reportId"] == TEMPLATE
    assert params["r.reportName"] == report.name
    sources = data_sources_of(url)
    assert set(sources) == {ds.alias for ds in report.data_sources}
    for ds in report.data_sources:
        got = sources[ds.alias]
        assert got == {
            "connector": "bigQuery",
            "datasourceName": ds.name,
            "type": "TABLE",
            "projectId": "vitals-lake-prod",
            # Each view in its dataset: the reporting views apart from the identity view.
            "datasetId": "vitals_lake_" + ("identity" if ds.view in views.IDENTITY_VIEWS else "reporting"),
            "tableId": ds.view,
        }, ds.alias
    wired = {got["tableId"] for got in sources.values()}
    assert set(views.PUBLIC_VIEWS) <= wired
    for page in report.pages:  # every chart's data source is in the URL, so every page gets data
        for chart in page.charts:
            assert sources[chart.data_source]["tableId"] == report.source(chart.data_source).view, chart.id
    # Nothing else in the URL: only documented Linking API parameters.
    assert {k.split(".")[0] for k in params} == {"c", "r", "ds"}


def test_linking_url_billing_project_and_validation():
    report = load_report()
    url = linking_url(report, project="vitals-lake-prod", dataset="vl", billing_project="billing-prj-1")
    assert "c.reportId" not in dict(parse_qsl(urlsplit(url).query))  # no template: Looker's default
    assert all(s["billingProjectId"] == "billing-prj-1" for s in data_sources_of(url).values())
    for bad in ({"project": "X"}, {"project": "ok-project", "dataset": "no-dashes"}):
        kwargs = {"project": "ok-project", "dataset": "vl", **bad}
        with pytest.raises(ValueError):
            linking_url(report, **kwargs)
    with pytest.raises(ValueError):
        linking_url(report, project="ok-project", dataset="vl", template="../evil")


def test_looker_link_command_prints_the_url(capsys):
    assert (
        looker_main(
            ["--project", "vitals-lake-prod", "--dataset", "vitals_lake", "--report-template", TEMPLATE]
        )
        == 0
    )
    out = capsys.readouterr().out.strip()
    assert out.startswith(LINKING_API_BASE + "?c.reportId=" + TEMPLATE)
    assert data_sources_of(out)["risk"]["tableId"] == "patient_risk_scores"
    assert looker_main(["--project", "Bad Project", "--dataset", "vitals_lake"]) == 2


def test_report_definition_is_validated():
    doc = {
        "data_sources": {"a": {"view": "latest_vitals"}, "b": {"view": "ward_alert_counts"}},
        "pages": [
            {
                "id": "p",
                "title": "P",
                "local_path": "/p",
                "charts": [{"id": "x", "type": "table", "data_source": "a"}],
            }
        ],
    }
    with pytest.raises(ReportError, match="used by no chart"):
        parse_report(doc)
    doc["data_sources"] = {"a.b": {"view": "latest_vitals"}}
    with pytest.raises(ReportError, match="alias"):
        parse_report(doc)


def test_local_dashboard_pages_read_the_same_views_as_the_report():
    report = load_report()
    for page in report.pages:
        assert set(PAGE_VIEWS[page.id]) == set(report.views_of(page.id)), page.id


def test_every_field_the_report_names_is_a_column_of_its_view(tmp_path):
    from warehouse.duck import DuckWarehouse  # noqa: PLC0415

    report = load_report()
    with DuckWarehouse(tmp_path / "w.duckdb") as wh:
        wh.ensure()
        for view, fields in report.fields_by_view().items():
            columns = set(wh.query(f'SELECT * FROM "{view}" LIMIT 0').column_names)
            assert fields <= columns, f"{view}: {sorted(fields - columns)} are not columns"


def test_lookml_views_are_generated_from_the_views():
    from dashboard import lookml  # noqa: PLC0415

    assert lookml.main(["--check"]) == 0, "looker/lookml is stale: python -m dashboard.lookml"
    files = {p.name for p in (ROOT / "looker" / "lookml").glob("*.lkml")}
    assert files == {"manifest.lkml", lookml.MODEL_FILE, *(f"{v}.view.lkml" for v in load_report().views)}
    # The dataset's default is the one Terraform creates (it said vitals_lake, Terraform vitals_warehouse).
    names = json.loads((ROOT / "infra" / "terraform" / "generated" / "names.json").read_text())
    manifest = (ROOT / "looker" / "lookml" / "manifest.lkml").read_text()
    assert f'value: "{names["bigquery"]["default_dataset"]}"' in manifest


def test_the_lookml_model_explores_every_view_and_identifies_patients_in_one_place_only():
    from dashboard import lookml  # noqa: PLC0415

    folder = ROOT / "looker" / "lookml"
    model = (folder / lookml.MODEL_FILE).read_text()
    manifest = (folder / "manifest.lkml").read_text()
    connection = re.search(r'^connection: "@\{(\w+)\}"$', model, flags=re.M)
    assert connection and f"constant: {connection.group(1)} {{" in manifest
    explores = dict(re.findall(r"^explore: (\w+) \{\n(.*?)^\}", model, flags=re.M | re.S))
    assert set(load_report().views) - set(views.IDENTITY_VIEWS) <= set(explores)
    for view, body in explores.items():
        shown = body if view == "patient_detail" else ""
        referenced = set(re.findall(r"\$\{(\w+)\.", body)) | set(re.findall(r"from: (\w+)", body))
        for name in (referenced | {view}) - {"patient_detail"}:
            if name in views.IDENTITY_VIEWS:  # the identity view joins the patient-detail explore only
                assert view == "patient_detail", f"explore {view} reads {name}"
            text = (folder / f"{name}.view.lkml").read_text()
            if "dimension: patient_id {" in text and not shown:
                assert f"-{name}.patient_id" in body, f"explore {view} shows {name}.patient_id"
    detail = explores["patient_detail"]
    assert f"required_access_grants: [{lookml.IDENTITY_GRANT}]" in detail
    assert f"access_grant: {lookml.IDENTITY_GRANT} {{" in model
