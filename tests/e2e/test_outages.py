"""Downstream outages on the real local stack (harness.faults.outages, quick mode): BigQuery unreachable
mid-stream, and the notifier's SMTP server and webhook down; after recovery everything is delivered, once.

Each scenario starts its own services (Pub/Sub emulator, BigQuery emulator from .venv-bq, SMTP server,
webhook receiver, functions-framework); a missing prerequisite fails the test with what to install.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.faults import FaultReport
from harness.faults.outages import run_notifier_outage, run_warehouse_outage
from harness.stack import MissingPrerequisite

pytestmark = pytest.mark.timeout(420)


def _explain(report: FaultReport) -> str:
    return (
        f"{report.scenario}: failed {report.failed()}; figures "
        f"{json.dumps(report.figures, default=str)}; seconds {report.seconds}"
    )


def _run(run: object, tmp_path: Path) -> FaultReport:
    assert callable(run)
    try:
        report = run(tmp_path, quick=True)
    except MissingPrerequisite as exc:
        pytest.fail(f"outage scenario prerequisite missing: {exc}", pytrace=False)
    assert isinstance(report, FaultReport)
    print(f"\n{report.scenario}: {json.dumps(report.figures, default=str)} in {report.seconds} s")
    return report


def test_bigquery_outage_mid_stream_every_row_lands_once(tmp_path: Path) -> None:
    report = _run(run_warehouse_outage, tmp_path)
    assert report.ok, _explain(report)
    f = report.figures
    assert f["retries"] > 0 and f["rows_during_outage"] > 0, _explain(report)
    assert f["bq_gold_rows"] == f["lake_gold_rows"] > 0, _explain(report)
    assert f["bq_alert_rows"] == f["lake_alert_rows"] > 0, _explain(report)
    assert f["bq_dq_rows"] == f["lake_dq_rows"] > 0, _explain(report)
    assert (f["duplicates"], f["lost"], f["unexpected"]) == (0, 0, 0), _explain(report)


def test_notifier_targets_down_every_alert_delivered_once(tmp_path: Path) -> None:
    report = _run(run_notifier_outage, tmp_path)
    assert report.ok, _explain(report)
    f = report.figures
    assert f["emails_delivered"] == f["webhooks_delivered"] == f["events"], _explain(report)
    assert f["duplicate_deliveries"] == 0 and f["dead_letters"] == 0, _explain(report)
    assert f["webhook_requests_refused_during_outage"] > 0 and f["redeliveries"] > 0, _explain(report)
