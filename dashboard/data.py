"""What each dashboard page shows, read from the warehouse views (never from the tables directly).

Every page is one function returning plain data (lists of dicts, ISO times): the HTML pages draw it
and the JSON endpoints return it as is. Each function names the views it reads in ``PAGE_VIEWS``,
which a test compares with the Looker Studio report definition: both dashboards read the same views.

Time windows are relative to the newest data, not the wall clock, so a replayed or finished demo
still shows its data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa

from vitals_lake import contract as c

Query = Callable[[str], pa.Table]
Row = dict[str, Any]

PATIENT_KEY_PATTERN: Final = re.compile(r"^[0-9a-f]{8,64}$")  # pseudonym.py: HMAC hex digest
PATIENT_HISTORY_MINUTES: Final = 360  # detail page: the patient's last six hours, minute by minute
SPARK_MINUTES: Final = 60  # high-risk table: NEWS2 over the last hour

# The views each page reads (the Looker Studio report's pages read the same: tests check it).
PAGE_VIEWS: Final[dict[str, tuple[str, ...]]] = {
    "patient_detail": ("patient_identity", "latest_vitals", "patient_risk_scores", "gold_windows"),
    "high_risk": ("patient_risk_scores", "latest_vitals"),
    "ward_overview": ("patient_risk_scores", "ward_alert_counts", "latest_vitals"),
    "hospital_trends": ("vital_signs_hourly_trend", "diagnosis_summary", "data_quality_daily"),
}
VITAL_COLUMNS: Final = c.VITAL_NAMES  # heart_rate, temperature, spo2, respiration_rate, systolic, diastolic


class NotFound(LookupError):
    """No such patient (or a malformed key)."""


def _rows(table: pa.Table) -> list[Row]:
    return [{k: _plain(v) for k, v in r.items()} for r in table.to_pylist()]


def _plain(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):  # JSON has no NaN
        return None
    if isinstance(v, Decimal):  # DuckDB's SUM of integers is a HUGEINT / DECIMAL
        return int(v) if v == v.to_integral_value() else float(v)
    return v


def jsonable(value: Any) -> Any:
    """Datetimes and dates as ISO strings, recursively (for the JSON endpoints)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _key(patient_key: str) -> str:
    if not PATIENT_KEY_PATTERN.match(patient_key):
        raise NotFound(patient_key)
    return patient_key  # hex only: safe to place in SQL


class DashboardData:
    """The four pages' data over a warehouse's ``query(sql) -> pa.Table``."""

    def __init__(self, query: Query) -> None:
        self.query = query

    def q(self, sql: str) -> list[Row]:
        return _rows(self.query(sql))

    # --- High-risk patients ------------------------------------------------------------------
    def high_risk(self) -> Row:
        patients = self.q(
            """
            SELECT r.patient_key, r.ward, r.bed, r.age_band, r.diagnosis_code, r.risk_level, r.risk_rank,
                   r.news2_score_max, r.news2_trend, r.news2_change, r.news2_last_hour,
                   r.anomaly_score_max, r.anomaly_last_hour, r.alert_readings, r.last_reading_time,
                   v.heart_rate, v.spo2, v.respiration_rate, v.temperature, v.systolic, v.diastolic
            FROM patient_risk_scores AS r
            LEFT JOIN latest_vitals AS v ON v.patient_key = r.patient_key
            ORDER BY r.risk_rank DESC NULLS LAST, r.news2_score_max DESC NULLS LAST,
                     r.anomaly_score_max DESC NULLS LAST, r.ward, r.bed, r.patient_key
            """
        )
        spark = self._news2_history(SPARK_MINUTES)
        for p in patients:
            p["news2_history"] = spark.get(p[c.PATIENT_KEY], [])
        counts = {level: 0 for level in c.NEWS2_RESPONSES}
        for p in patients:
            if p[c.RISK_LEVEL] in counts:
                counts[p[c.RISK_LEVEL]] += 1
        return {
            "patients": patients,
            "by_risk_level": counts,
            "alerts_open": sum(1 for p in patients if (p[c.ALERT_READINGS] or 0) > 0),
            "as_of": max((p[c.LAST_READING_TIME] for p in patients if p[c.LAST_READING_TIME]), default=None),
        }

    def _news2_history(self, minutes: int) -> dict[str, list[int | None]]:
        rows = self.q(
            f"""
            WITH latest AS (SELECT max(window_start) AS t FROM gold_windows WHERE window_seconds = 60)
            SELECT g.patient_key, g.window_start, g.news2_score_max
            FROM gold_windows AS g, latest
            WHERE g.window_seconds = 60 AND g.window_start > latest.t - INTERVAL {int(minutes)} MINUTE
            ORDER BY g.patient_key, g.window_start
            """
        )
        out: dict[str, list[int | None]] = {}
        for r in rows:
            out.setdefault(r[c.PATIENT_KEY], []).append(r["news2_score_max"])
        return out

    # --- Ward overview ---------------------------------------------------------------------------
    def wards(self) -> Row:
        mix = self.q(
            """
            SELECT COALESCE(ward, 'UNKNOWN') AS ward, risk_level, count(DISTINCT patient_key) AS patients
            FROM patient_risk_scores GROUP BY 1, 2 ORDER BY 1, 2
            """
        )
        alerts = self.q(
            """
            SELECT ward, severity, sum(raised_alerts) AS raised_alerts, sum(opened_alerts) AS opened_alerts,
                   sum(resolved_alerts) AS resolved_alerts
            FROM ward_alert_counts GROUP BY 1, 2 ORDER BY 1, 2
            """
        )
        hourly = self.q(
            """
            SELECT ward, hour_start, sum(opened_alerts) AS opened_alerts,
                   sum(resolved_alerts) AS resolved_alerts
            FROM ward_alert_counts GROUP BY 1, 2 ORDER BY 2, 1
            """
        )
        beds = self.q(
            """
            SELECT COALESCE(ward, 'UNKNOWN') AS ward, bed, patient_key, risk_level, news2_score_max,
                   heart_rate, spo2, respiration_rate, temperature, systolic, last_reading_time
            FROM latest_vitals ORDER BY 1, bed, patient_key
            """
        )
        wards = sorted({r["ward"] for r in mix} | {r["ward"] for r in alerts} | {r["ward"] for r in beds})
        summary = []
        for w in wards:
            levels = {lvl: 0 for lvl in c.NEWS2_RESPONSES}
            for r in mix:
                if r["ward"] == w and r[c.RISK_LEVEL] in levels:
                    levels[r[c.RISK_LEVEL]] += int(r["patients"])
            raised = {lvl: 0 for lvl in c.NEWS2_RESPONSES}
            for r in alerts:
                if r["ward"] == w and r[c.SEVERITY] in raised:
                    raised[r[c.SEVERITY]] += int(r["raised_alerts"] or 0)
            summary.append(
                {
                    "ward": w,
                    "patients": sum(levels.values()),
                    "by_risk_level": levels,
                    "alerts_by_severity": raised,
                    "alerts_raised": sum(raised.values()),
                    "alerts_resolved": sum(int(r["resolved_alerts"] or 0) for r in alerts if r["ward"] == w),
                }
            )
        return {"wards": summary, "alerts_per_hour": hourly, "beds": beds}

    # --- Hospital-wide trends ------------------------------------------------------------------
    def trends(self) -> Row:
        hourly = self.q(
            """
            SELECT hour_start, patients, readings, heart_rate_mean, temperature_mean, spo2_mean,
                   respiration_rate_mean, systolic_mean, diastolic_mean, news2_score_max,
                   anomaly_score_mean, alert_readings, high_risk_patients
            FROM vital_signs_hourly_trend WHERE scope = 'hospital' ORDER BY hour_start
            """
        )
        diagnoses = self.q(
            """
            SELECT diagnosis_code, diagnosis_description, patients, readings, news2_score_max,
                   high_risk_patients, high_risk_share
            FROM diagnosis_summary ORDER BY patients DESC, high_risk_patients DESC, diagnosis_code
            """
        )
        dq = self.q(
            """
            SELECT day, layer, rule, action, batches, checked_rows, passed_rows, failed_rows, failure_rate
            FROM data_quality_daily ORDER BY day DESC, failed_rows DESC, rule
            """
        )
        return {"hourly": hourly, "diagnoses": diagnoses, "data_quality": dq}

    # --- Patient detail ---------------------------------------------------------------------------
    def top_patient_key(self) -> str | None:
        rows = self.q(
            """
            SELECT patient_key FROM patient_risk_scores
            ORDER BY risk_rank DESC NULLS LAST, news2_score_max DESC NULLS LAST,
                     anomaly_score_max DESC NULLS LAST, patient_key
            LIMIT 1
            """
        )
        return rows[0][c.PATIENT_KEY] if rows else None

    def patient_choices(self) -> list[Row]:
        return self.q(
            """
            SELECT patient_key, ward, bed, risk_level FROM patient_risk_scores
            ORDER BY risk_rank DESC NULLS LAST, ward, bed, patient_key
            """
        )

    def patient(self, patient_key: str, *, identify: bool = False) -> Row:
        """One patient's page data, by key. ``identify``: add the raw ``patient_id`` from the identity
        view (the detail page does, for the bedside check; the JSON API does not)."""
        key = _key(patient_key)
        latest = self.q(f"SELECT * FROM latest_vitals WHERE patient_key = '{key}'")
        if not latest:
            raise NotFound(patient_key)
        # The one re-identification: the detail page reads the identity view, explicitly; every other
        # view names the patient by key only.
        if identify:
            identity = self.q(f"SELECT patient_id FROM patient_identity WHERE patient_key = '{key}'")
            latest[0][c.PATIENT_ID] = identity[0][c.PATIENT_ID] if identity else None
        risk = self.q(
            f"""
            SELECT risk_level, risk_rank, news2_score_max, news2_trend, news2_change, news2_last_hour,
                   news2_previous_hour, anomaly_score_max, anomaly_last_hour, anomaly_change, alert_readings
            FROM patient_risk_scores WHERE patient_key = '{key}'
            """
        )
        vitals = ", ".join(f"{c.gold_column(v, 'mean')}, {c.gold_column(v, 'last')}" for v in VITAL_COLUMNS)
        minutes = self.q(
            f"""
            WITH latest AS (
              SELECT max(window_start) AS t FROM gold_windows
              WHERE window_seconds = 60 AND patient_key = '{key}'
            )
            SELECT g.window_start, g.window_end, g.reading_count, {vitals}, g.news2_score_max, g.risk_level,
                   g.anomaly_score_max, g.anomalous_readings, g.scored_readings, g.alert_readings
            FROM gold_windows AS g, latest
            WHERE g.window_seconds = 60 AND g.patient_key = '{key}'
              AND g.window_start > latest.t - INTERVAL {PATIENT_HISTORY_MINUTES} MINUTE
            ORDER BY g.window_start
            """
        )
        return {"patient": latest[0], "risk": risk[0] if risk else {}, "minutes": minutes}
