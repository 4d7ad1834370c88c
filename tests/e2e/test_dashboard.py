"""Dashboards: the local dashboard in a real browser (the Looker Studio report definition and Linking API
URL are checked in tests/unit/test_looker_report.py).

The browser tests serve the local dashboard over a DuckDB warehouse written through
``DuckWarehouse.write`` (a seeded simulated cohort through the real Silver and Gold code,
``harness.dashboard_sample``) and open each page in headless Chromium: the DOM dumped after the page's
own script ran must hold charts WITH data (points, bars, markers) and the expected patients. Chromium
is installed with apt-get when missing; if that fails the tests FAIL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dashboard import browser
from harness.waiting import wait_until
from vitals_lake import contract as c

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chromium():
    try:
        return browser.ensure_chromium()
    except browser.ChromiumUnavailable as exc:
        pytest.fail(f"headless Chromium is required and could not be installed: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def sample():
    from harness.dashboard_sample import build_sample  # noqa: PLC0415

    return build_sample(patients=24, hours=3.0, seed=11)


@pytest.fixture(scope="module")
def warehouse_file(tmp_path_factory, sample):
    from warehouse.duck import DuckWarehouse  # noqa: PLC0415

    path = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    with DuckWarehouse(path) as wh:
        wh.ensure()
        for table, rows in sample.tables.items():
            result = wh.write(table, rows)
            assert result.inserted == rows.num_rows and not result.rejected, (table, result)
    return path


@pytest.fixture(scope="module")
def served(warehouse_file):
    from dashboard.server import Dashboard, DashboardServer  # noqa: PLC0415
    from warehouse.duck import DuckWarehouse  # noqa: PLC0415

    wh = DuckWarehouse(warehouse_file, read_only=True)
    dashboard = Dashboard(wh, refresh_seconds=1)
    partials: list[str] = []
    handle = dashboard.handle

    def counting(path: str):
        if "partial=1" in path:
            partials.append(path)
        return handle(path)

    dashboard.handle = counting  # type: ignore[method-assign]
    server = DashboardServer(dashboard, port=0)
    server.start()
    try:
        yield server.url, dashboard, partials
    finally:
        server.stop()
        wh.close()


class _Dom(HTMLParser):
    """Start tags with their attributes, and the text, of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, *, class_: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and class_ in a.get("class", "").split()]

    def charts(self) -> dict[str, dict[str, str]]:
        return {a["data-chart"]: a for t, a in self.tags if t == "svg" and "data-chart" in a}

    def count(self, tag: str, cls: str) -> int:
        return sum(1 for t, a in self.tags if t == tag and cls in a.get("class", "").split())


def _open(url: str) -> _Dom:
    dom = _Dom()
    dom.feed(browser.dump_dom(url, virtual_time_ms=3000))
    return dom


def _latest_minute_risk(sample) -> dict[str, str]:
    """patient_key -> risk level of the patient's latest one-minute Gold window (from the sample rows)."""
    gold = sample.tables[c.GOLD_TABLE].to_pylist()
    latest: dict[str, dict] = {}
    for row in gold:
        if row[c.WINDOW_SECONDS] == 60:
            k = row[c.PATIENT_KEY]
            if k not in latest or row[c.WINDOW_START] > latest[k][c.WINDOW_START]:
                latest[k] = row
    return {k: r[c.RISK_LEVEL] for k, r in latest.items()}


@pytest.mark.timeout(600)
def test_high_risk_page_lists_every_patient_by_risk(chromium, served, sample):
    url, _, _ = served
    dom = _open(f"{url}high-risk")
    risk = _latest_minute_risk(sample)
    keys = [a["data-patient-key"] for a in dom.find("tr", class_="patient-row")]
    assert sorted(keys) == sorted(sample.patient_keys.values())
    ranks = [c.NEWS2_RESPONSES.index(risk[k]) for k in keys]
    assert ranks == sorted(ranks, reverse=True), "highest risk first"
    assert risk[keys[0]] in ("high", "medium"), "the sample has deteriorating patients"
    # The bar chart has one bar per risk level present, with the right counts.
    bars = [a for t, a in dom.tags if t == "rect" and "bar" in a.get("class", "").split()]
    counts = {a["data-series"]: int(float(a["data-value"])) for a in bars}
    expected = {lvl: list(risk.values()).count(lvl) for lvl in c.NEWS2_RESPONSES if lvl in risk.values()}
    assert counts == expected
    # A NEWS2 sparkline per patient with a line through its points.
    sparks = [a for a in dom.charts().values() if a["data-chart"].startswith("news2-spark-")]
    assert len(sparks) >= len(keys) - 2 and all(int(a["data-points"]) >= 2 for a in sparks)
    # Pseudonymous keys only: no patient id anywhere on the page.
    text = "".join(dom.text)
    assert not any(pid in text for pid in sample.patient_ids)


@pytest.mark.timeout(600)
def test_ward_overview_has_charts_and_a_bed_per_patient(chromium, served, sample):
    url, _, _ = served
    dom = _open(f"{url}wards")
    charts = dom.charts()
    for chart_id in ("ward-risk-mix", "ward-alerts-by-severity", "ward-alerts-by-hour"):
        assert chart_id in charts and charts[chart_id].get("data-empty") != "true", chart_id
    assert int(charts["ward-risk-mix"]["data-bars"]) >= 5  # five wards, at least one bar each
    mix = [a for t, a in dom.tags if t == "rect" and a.get("data-category") and "bar" in a.get("class", "")]
    assert sum(int(float(a["data-value"])) for a in mix if a["data-series"] in c.NEWS2_RESPONSES) >= len(
        sample.patient_ids
    )
    assert int(charts["ward-alerts-by-hour"]["data-points"]) > 0
    tiles = [a["data-patient-key"] for t, a in dom.tags if t == "a" and "bed-tile" in a.get("class", "")]
    assert sorted(tiles) == sorted(sample.patient_keys.values())
    assert {a["data-ward"] for t, a in dom.tags if "data-ward" in a} == {
        "CARDIO",
        "GENMED",
        "ICU",
        "RESP",
        "SURG",
    }


@pytest.mark.timeout(600)
def test_hospital_trends_have_hourly_lines_diagnoses_and_data_quality(chromium, served):
    url, _, _ = served
    dom = _open(f"{url}trends")
    charts = dom.charts()
    for vital in (c.HEART_RATE, c.SPO2, c.RESPIRATION_RATE, c.TEMPERATURE, c.SYSTOLIC):
        chart = charts[f"hospital-{vital}"]
        assert int(chart["data-points"]) >= 3, vital  # three hours and the current one
    assert int(charts["hospital-risk-load"]["data-points"]) >= 6
    assert int(charts["diagnosis-load"]["data-bars"]) >= 5
    assert int(charts["dq-failed-by-rule"]["data-bars"]) >= 1
    assert dom.count("path", "series") >= 7


@pytest.mark.timeout(600)
def test_patient_detail_shows_vitals_news2_anomalies_and_identity(chromium, served, sample):
    url, dashboard, _ = served
    top = dashboard.data.top_patient_key()
    dom = _open(f"{url}patient")  # redirects to the highest-risk patient
    assert dom.find("span", class_="patient-key")[0]["data-patient-key"] == top
    pid = next(p for p, k in sample.patient_keys.items() if k == top)
    assert pid in "".join(dom.text), "the detail page shows the patient id"
    charts = dom.charts()
    for vital in (c.HEART_RATE, c.SPO2, c.RESPIRATION_RATE, c.TEMPERATURE, c.SYSTOLIC):
        assert int(charts[f"patient-{vital}"]["data-points"]) >= 60, vital  # minute by minute
    news2 = charts["patient-news2"]
    assert int(news2["data-points"]) >= 60
    assert int(news2["data-markers"]) > 0, "the deteriorating patient has anomaly markers"
    assert dom.count("path", "marker-anomaly") > 0
    assert dom.count("g", "span") > 0, "alert periods are shaded"
    # The series paths really go through the points (one M/L command per point).
    paths = [a for t, a in dom.tags if t == "path" and "series" in a.get("class", "").split()]
    assert paths and all(a["d"].count("M") + a["d"].count("L") == int(a["data-points"]) for a in paths)
    # An unknown key is a 404 page, not an error.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{url}patient/{'0' * 32}", timeout=10)
    assert err.value.code == 404


@pytest.mark.timeout(600)
def test_pages_refresh_themselves_and_json_endpoints_answer(chromium, served, sample):
    url, _, partials = served
    before = len(partials)
    dom = _open(f"{url}high-risk")  # 3 s of virtual time with a 1 s refresh: the script fetches
    assert len(partials) > before, "the page's script fetched its content again"
    assert dom.find("span", class_="when")
    assert "updated" in "".join(dom.text)
    for path in ("high-risk", "wards", "trends", f"patient/{sample.patient_keys[sample.patient_ids[0]]}"):
        with urllib.request.urlopen(f"{url}api/{path}", timeout=10) as resp:
            assert resp.headers["Content-Type"] == "application/json"
            doc = json.load(resp)
        assert doc, path
    with urllib.request.urlopen(f"{url}api/high-risk", timeout=10) as resp:
        doc = json.load(resp)
    assert len(doc["patients"]) == len(sample.patient_ids)
    assert all(c.PATIENT_ID not in p for p in doc["patients"])
    # The patient API names the patient by key: only the HTML detail page reads the identity view.
    first = sample.patient_ids[0]
    with urllib.request.urlopen(f"{url}api/patient/{sample.patient_keys[first]}", timeout=10) as resp:
        body = resp.read().decode()
    assert json.loads(body)["patient"][c.PATIENT_KEY] == sample.patient_keys[first]
    assert not any(pid in body for pid in sample.patient_ids)


@pytest.mark.timeout(600)
def test_command_syncs_the_lake_while_serving_and_stops_on_sigterm(tmp_path, sample):
    from vitals_lake.config import LocalLake  # noqa: PLC0415
    from vitals_lake.lake import Lake  # noqa: PLC0415

    lake = Lake(LocalLake(root=tmp_path / "lake"))
    lake.append("gold", sample.tables[c.GOLD_TABLE])
    lake.append("dq_metrics", sample.tables[c.DQ_METRICS_TABLE])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dashboard",
            "--warehouse",
            str(tmp_path / "warehouse.duckdb"),
            "--lake",
            str(tmp_path / "lake"),
            "--sync-seconds",
            "1",
            "--port",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("Vitals Lake dashboard: http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[-1]
        patients: list = []

        def every_patient_listed() -> bool:
            nonlocal patients
            with urllib.request.urlopen(f"{url}api/high-risk", timeout=10) as resp:
                patients = json.load(resp)["patients"]
            return len(patients) >= len(sample.patient_ids)

        with contextlib.suppress(TimeoutError):  # the assertion below says what is missing
            wait_until(every_patient_listed, timeout=120, interval=0.5, what="every patient on the page")
        assert len(patients) == len(sample.patient_ids), "the sync thread filled the warehouse"
        with urllib.request.urlopen(f"{url}healthz", timeout=10) as resp:
            health = json.load(resp)
        assert health["ok"] and health["sync"]["runs"] >= 1 and health["sync"]["last_error"] is None
        assert health["sync"]["inserted"][c.GOLD_TABLE] == sample.tables[c.GOLD_TABLE].num_rows
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert "dashboard stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
