"""The four pages as HTML (the ``<main>`` content; ``layout.page`` wraps it), drawn from ``data``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape
from typing import Any, Final

from dashboard import charts
from dashboard.charts import RISK_COLOURS, Band, Marker, Series, Span
from dashboard.layout import risk_badge, risk_legend
from vitals_lake import contract as c

Row = dict[str, Any]

DISPLAY_UNITS: Final = {"/min": "/min", "Cel": "°C", "%": "%", "mm[Hg]": "mmHg"}
VITAL_LABELS: Final = {
    c.HEART_RATE: "Heart rate",
    c.SPO2: "SpO₂",
    c.RESPIRATION_RATE: "Respiration rate",
    c.TEMPERATURE: "Temperature",
    c.SYSTOLIC: "Systolic BP",
    c.DIASTOLIC: "Diastolic BP",
}
ABNORMAL_STYLE: Final = ' style="border-top:4px solid #c62828"'
SHORT_KEY: Final = 12  # characters of the pseudonymous key shown in lists (the full key on hover)
# NEWS2 aggregate bands (RCP 2017): 0-4 low, 5-6 medium, 7+ high.
NEWS2_BANDS: Final = (
    Band(0, 4.5, "#edf7ee", "NEWS2 0-4: low"),
    Band(4.5, 6.5, "#fff1e6", "NEWS2 5-6: medium"),
    Band(6.5, 20, "#fdecea", "NEWS2 ≥ 7: high"),
)


def unit(vital: str) -> str:
    return DISPLAY_UNITS.get(c.VITALS_BY_NAME[vital].unit, c.VITALS_BY_NAME[vital].unit)


def fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return escape(str(v))


def fmt_time(t: datetime | None, *, seconds: bool = False) -> str:
    if t is None:
        return "–"
    return t.strftime("%H:%M:%S" if seconds else "%H:%M")


def vital_value(vital: str, v: Any) -> str:
    return fmt(v, 1 if vital == c.TEMPERATURE else 0)


def out_of_range(vital: str, v: Any) -> bool:
    if v is None:
        return False
    lo, hi = c.VITALS_BY_NAME[vital].normal
    return bool(v < lo or v > hi)


def patient_link(key: str) -> str:
    return (
        f'<a class="key patient-key" href="/patient/{escape(key)}" title="{escape(key)}" '
        f'data-patient-key="{escape(key)}">{escape(key[:SHORT_KEY])}</a>'
    )


def trend_cell(trend: str | None, change: float | None) -> str:
    arrow = {"rising": "▲", "falling": "▼", "stable": "▬"}.get(trend or "", "·")
    detail = "" if change is None else f" {change:+.1f}".replace("-0.0", "±0.0").replace("+0.0", "±0.0")
    name = escape(trend or "unknown")
    return f'<span class="trend-{name}">{arrow} {name}{detail}</span>'


def kpi(label: str, value: Any, sub: str = "", colour: str | None = None) -> str:
    style = f' style="border-top:4px solid {colour}"' if colour else ""
    return (
        f'<div class="card kpi"{style}><h2>{escape(label)}</h2><div class="value">{fmt(value)}</div>'
        f'<div class="sub">{sub}</div></div>'
    )


def card(title: str, inner: str, *, extra_class: str = "") -> str:
    return f'<section class="card {extra_class}"><h2>{escape(title)}</h2>{inner}</section>'


def empty_state(what: str) -> str:
    return (
        f'<div class="card empty">No {escape(what)} yet. The page refreshes by itself as soon as the '
        "stream has written to the warehouse.</div>"
    )


def per_level_bars(chart_id: str, title: str, counts: dict[str, int], **kw: Any) -> str:
    levels = list(c.NEWS2_RESPONSES)
    stacks = [
        (lvl, RISK_COLOURS[lvl], [float(counts.get(lvl, 0)) if j == i else 0.0 for j in range(len(levels))])
        for i, lvl in enumerate(levels)
    ]
    return charts.bar_chart(chart_id, title, levels, stacks, legend=False, **kw)


# --- High-risk patients --------------------------------------------------------------------------


def high_risk(d: Row) -> str:
    patients: list[Row] = d["patients"]
    head = (
        '<h1>High-risk patients</h1><p class="lede">Every monitored patient, highest risk first, then NEWS2. '
        f"Latest reading {fmt_time(d['as_of'], seconds=True)} UTC. Patients are shown by pseudonymous key: "
        "open a patient for identity and history.</p>"
    )
    if not patients:
        return head + empty_state("patients")
    counts = d["by_risk_level"]
    bars = per_level_bars("patients-by-risk", "Patients by risk level", counts, width=360, height=150)
    kpis = (
        '<div class="grid kpis">'
        + "".join(
            [
                kpi("Patients monitored", len(patients)),
                kpi("High risk", counts.get("high", 0), "NEWS2 ≥ 7", RISK_COLOURS["high"]),
                kpi("Medium", counts.get("medium", 0), "NEWS2 5-6 or alert open", RISK_COLOURS["medium"]),
                kpi(
                    "Low-medium",
                    counts.get("low-medium", 0),
                    "a single parameter scores 3",
                    RISK_COLOURS["low-medium"],
                ),
                kpi("Alert open", d["alerts_open"], "patients with an open alert in their latest minute"),
                card("Patients by risk level", bars, extra_class="wide"),
            ]
        )
        + "</div>"
    )
    rows = []
    for p in patients:
        bp = f"{fmt(p[c.SYSTOLIC])}/{fmt(p[c.DIASTOLIC])}" if p[c.SYSTOLIC] is not None else "–"
        alert = '<span class="alert-open">● open</span>' if (p[c.ALERT_READINGS] or 0) > 0 else ""
        spark = charts.sparkline(
            f"news2-spark-{p[c.PATIENT_KEY][:SHORT_KEY]}",
            [None if v is None else float(v) for v in p["news2_history"]],
            colour=RISK_COLOURS.get(p[c.RISK_LEVEL] or "", "#37474f"),
        )
        vitals = "".join(
            f'<td class="num{" abn" if out_of_range(v, p[v]) else ""}">{vital_value(v, p[v])}</td>'
            for v in (c.HEART_RATE, c.SPO2, c.RESPIRATION_RATE, c.TEMPERATURE)
        )
        rows.append(
            f'<tr class="patient-row risk-row-{escape(p[c.RISK_LEVEL] or "unknown")}" '
            f'data-patient-key="{escape(p[c.PATIENT_KEY])}">'
            f"<td>{risk_badge(p[c.RISK_LEVEL])}</td><td>{fmt(p[c.WARD])}</td>"
            f'<td class="bed">{fmt(p[c.BED])}</td><td>{patient_link(p[c.PATIENT_KEY])}</td>'
            f'<td class="num"><b>{fmt(p["news2_score_max"])}</b></td>'
            f"<td>{trend_cell(p['news2_trend'], p['news2_change'])}</td><td>{spark}</td>"
            f'{vitals}<td class="num">{bp}</td><td class="num">{fmt(p["anomaly_score_max"], 1)}</td>'
            f"<td>{alert}</td><td>{fmt_time(p[c.LAST_READING_TIME], seconds=True)}</td></tr>"
        )
    table = (
        '<table class="patients"><thead><tr><th>Risk</th><th>Ward</th><th>Bed</th><th>Patient key</th>'
        '<th class="num">NEWS2</th><th>Trend (1 h)</th><th>NEWS2, last hour</th><th class="num">HR</th>'
        '<th class="num">SpO₂</th><th class="num">RR</th><th class="num">Temp</th><th class="num">BP</th>'
        '<th class="num">Anomaly</th><th>Alert</th><th>Last reading</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )
    return head + kpis + risk_legend() + card("Patients by risk", table, extra_class="scroll")


# --- Ward overview -----------------------------------------------------------------------------------


def wards(d: Row) -> str:
    head = (
        '<h1>Ward overview</h1><p class="lede">Patients per ward by current risk level, alerts raised by '
        "severity, and the bed board (each bed's latest NEWS2).</p>"
    )
    summary: list[Row] = d["wards"]
    if not summary:
        return head + empty_state("wards")
    names = [w["ward"] for w in summary]
    levels = list(c.NEWS2_RESPONSES)
    risk_mix = charts.bar_chart(
        "ward-risk-mix",
        "Patients per ward by risk level",
        names,
        [(lvl, RISK_COLOURS[lvl], [float(w["by_risk_level"][lvl]) for w in summary]) for lvl in levels],
        horizontal=True,
        width=440,
        height=60 + 34 * len(names),
    )
    alert_mix = charts.bar_chart(
        "ward-alerts-by-severity",
        "Alerts raised per ward by severity",
        names,
        [(lvl, RISK_COLOURS[lvl], [float(w["alerts_by_severity"][lvl]) for w in summary]) for lvl in levels],
        horizontal=True,
        width=440,
        height=60 + 34 * len(names),
    )
    per_hour: list[Row] = d["alerts_per_hour"]
    ward_names = sorted({r["ward"] for r in per_hour})
    series = [
        Series(
            w,
            [(r["hour_start"], float(r["opened_alerts"] or 0)) for r in per_hour if r["ward"] == w],
            colour=charts.SERIES_COLOURS[i % len(charts.SERIES_COLOURS)],
        )
        for i, w in enumerate(ward_names)
    ]
    hourly = charts.time_series(
        "ward-alerts-by-hour",
        "Alerts opened per hour by ward",
        series,
        y_min=0,
        width=440,
        height=60 + 34 * len(names),
    )
    table_rows = "".join(
        f'<tr><td><b>{escape(w["ward"])}</b></td><td class="num">{w["patients"]}</td>'
        + "".join(f'<td class="num">{w["by_risk_level"][lvl]}</td>' for lvl in levels)
        + f'<td class="num">{w["alerts_raised"]}</td><td class="num">{w["alerts_resolved"]}</td></tr>'
        for w in summary
    )
    ward_table = (
        '<table class="wards"><thead><tr><th>Ward</th><th class="num">Patients</th>'
        + "".join(f'<th class="num">{escape(lvl)}</th>' for lvl in levels)
        + '<th class="num">Alerts raised</th><th class="num">Resolved</th></tr></thead><tbody>'
        + table_rows
        + "</tbody></table>"
    )
    return (
        head
        + risk_legend()
        + '<div class="grid">'
        + card("Patients per ward by risk level", risk_mix)
        + card("Alerts raised per ward by severity", alert_mix)
        + card("Alerts opened per hour", hourly)
        + "</div>"
        + '<div style="margin-top:14px">'
        + card("Wards", ward_table)
        + "</div>"
        + '<h1 style="margin-top:20px;font-size:17px">Bed board</h1>'
        + bed_board(d["beds"])
    )


def bed_board(beds: Sequence[Row]) -> str:
    by_ward: dict[str, list[Row]] = {}
    for b in beds:
        by_ward.setdefault(b["ward"], []).append(b)
    out = []
    for ward, rows in by_ward.items():
        tiles = []
        for b in rows:
            level = b[c.RISK_LEVEL] or "unknown"
            colour = RISK_COLOURS.get(level, "#9aa5b1")
            key = escape(b[c.PATIENT_KEY])
            tiles.append(
                f'<a class="bed-tile" href="/patient/{key}" data-patient-key="{key}" '
                f'style="border-left:6px solid {colour}" title="{escape(level)}">'
                f'<div class="bed">{fmt(b[c.BED])}</div><div class="key">{key[:SHORT_KEY]}</div>'
                f'<div class="n2">NEWS2 <b style="color:{colour}">{fmt(b["news2_score_max"])}</b></div>'
                f'<div class="sub">HR {vital_value(c.HEART_RATE, b[c.HEART_RATE])} · SpO₂ '
                f"{vital_value(c.SPO2, b[c.SPO2])}</div></a>"
            )
        out.append(
            f'<section class="card ward-board" data-ward="{escape(ward)}"><h2>{escape(ward)} · {len(rows)} '
            f'beds</h2><div class="beds">{"".join(tiles)}</div></section>'
        )
    style = (
        "<style>.ward-board{margin-bottom:12px}.beds{display:grid;gap:8px;"
        "grid-template-columns:repeat(auto-fill,minmax(150px,1fr))}.bed-tile{display:block;padding:8px 10px;"
        "border:1px solid var(--line);border-radius:8px;color:inherit;text-decoration:none;background:#fff}"
        ".bed-tile:hover{background:#f8fafc}.bed-tile .sub{font-size:12px;color:var(--muted)}"
        ".bed-tile .key{font-size:11.5px;color:var(--muted)}</style>"
    )
    return style + "".join(out)


# --- Hospital-wide trends ---------------------------------------------------------------------------


def trends(d: Row) -> str:
    head = (
        '<h1>Hospital-wide trends</h1><p class="lede">All patients hour by hour (means of all readings), '
        "patients at high risk and alert load per hour, diagnoses, and data quality per rule.</p>"
    )
    hourly: list[Row] = d["hourly"]
    if not hourly and not d["diagnoses"]:
        return head + empty_state("hourly trends")
    small = []
    for vital in (c.HEART_RATE, c.SPO2, c.RESPIRATION_RATE, c.TEMPERATURE, c.SYSTOLIC):
        col = c.gold_column(vital, "mean")
        lo, hi = c.VITALS_BY_NAME[vital].normal
        series = [Series(VITAL_LABELS[vital], [(r["hour_start"], r[col]) for r in hourly])]
        if vital == c.SYSTOLIC:
            dia = c.gold_column(c.DIASTOLIC, "mean")
            series.append(Series("Diastolic", [(r["hour_start"], r[dia]) for r in hourly], colour="#6a1b9a"))
        small.append(
            card(
                f"{VITAL_LABELS[vital]} ({unit(vital)}), hourly mean",
                charts.time_series(
                    f"hospital-{vital}",
                    f"{VITAL_LABELS[vital]} hourly mean, all patients",
                    series,
                    bands=[Band(lo, hi, "#edf7ee", "adult reference range")],
                    width=440,
                    height=190,
                ),
            )
        )
    load = charts.time_series(
        "hospital-risk-load",
        "Patients monitored and high-risk patients per hour",
        [
            Series("patients", [(r["hour_start"], float(r["patients"])) for r in hourly], colour="#1565c0"),
            Series(
                "high-risk patients",
                [(r["hour_start"], float(r["high_risk_patients"])) for r in hourly],
                colour=RISK_COLOURS["high"],
            ),
        ],
        y_min=0,
        width=440,
        height=190,
    )
    diagnoses: list[Row] = d["diagnoses"][:12]
    dx_chart = charts.bar_chart(
        "diagnosis-load",
        "Patients by diagnosis (high risk in red)",
        [r[c.DIAGNOSIS_CODE] for r in diagnoses],
        [
            (
                "not high risk",
                "#90a4ae",
                [float(r["patients"] - r["high_risk_patients"]) for r in diagnoses],
            ),
            ("high risk", RISK_COLOURS["high"], [float(r["high_risk_patients"]) for r in diagnoses]),
        ],
        horizontal=True,
        height=50 + 26 * max(1, len(diagnoses)),
    )
    dx_rows = "".join(
        f"<tr><td><b>{escape(r[c.DIAGNOSIS_CODE])}</b></td>"
        f'<td class="wrap">{fmt(r[c.DIAGNOSIS_DESCRIPTION])}</td>'
        f'<td class="num">{r["patients"]}</td><td class="num">{r["high_risk_patients"]}</td>'
        f'<td class="num">{fmt(r["news2_score_max"])}</td></tr>'
        for r in diagnoses
    )
    dx_table = (
        '<table><thead><tr><th>Code</th><th>Diagnosis</th><th class="num">Patients</th>'
        '<th class="num">High risk</th><th class="num">Worst NEWS2</th></tr></thead><tbody>'
        + dx_rows
        + "</tbody></table>"
    )
    return (
        head
        + '<div class="grid">'
        + card("Patients and high-risk patients per hour", load)
        + "".join(small)
        + "</div>"
        + '<div class="grid" style="margin-top:14px">'
        + card("Diagnoses", dx_chart + dx_table)
        + card("Data quality", data_quality(d["data_quality"]))
        + "</div>"
    )


def data_quality(rows: Sequence[Row]) -> str:
    if not rows:
        return '<p class="empty">No data-quality metrics yet.</p>'
    latest_day = max(r["day"] for r in rows)
    today = [r for r in rows if r["day"] == latest_day]
    by_rule: dict[str, Row] = {}
    for r in today:
        agg = by_rule.setdefault(
            r[c.RULE], {"rule": r[c.RULE], "action": r[c.ACTION], "failed": 0, "checked": 0}
        )
        agg["failed"] += int(r["failed_rows"] or 0)
        agg["checked"] += int(r["checked_rows"] or 0)
    failing = sorted((r for r in by_rule.values() if r["failed"]), key=lambda r: -r["failed"])[:10]
    colours = {"drop": "#c62828", "warn": "#f2a900", "fail": "#6a1b9a"}
    chart = charts.bar_chart(
        "dq-failed-by-rule",
        f"Rows failing each rule on {latest_day}",
        [r["rule"] for r in failing],
        [
            (action, colour, [float(r["failed"]) if r["action"] == action else 0.0 for r in failing])
            for action, colour in colours.items()
        ],
        horizontal=True,
        height=50 + 24 * max(1, len(failing)),
    )
    checked = max((r["checked"] for r in by_rule.values()), default=0)
    table = "".join(
        f"<tr><td>{escape(r['rule'])}</td><td>{escape(r['action'])}</td>"
        f'<td class="num">{r["failed"]:,}</td><td class="num">{r["failed"] / r["checked"]:.2%}</td></tr>'
        for r in failing
        if r["checked"]
    )
    return (
        f'<p class="lede">{latest_day}: {len(by_rule)} rules checked on up to {checked:,} rows; '
        f"{len(failing)} with failures (drop: quarantined, warn: kept and flagged).</p>"
        + chart
        + '<table><thead><tr><th>Rule</th><th>Action</th><th class="num">Failed rows</th>'
        '<th class="num">Failure rate</th></tr></thead><tbody>' + table + "</tbody></table>"
    )


# --- Patient detail ------------------------------------------------------------------------------------


def _spans(minutes: Sequence[Row]) -> list[Span]:
    """Alert periods: runs of minutes with readings while an alert was open."""
    spans: list[Span] = []
    start: datetime | None = None
    end: datetime | None = None
    for m in minutes:
        if (m[c.ALERT_READINGS] or 0) > 0:
            if start is None:
                start = m[c.WINDOW_START]
            end = m[c.WINDOW_END]
        elif start is not None and end is not None:
            spans.append(Span(start, end, label="alert open"))
            start = end = None
    if start is not None and end is not None:
        spans.append(Span(start, end, label="alert open"))
    return spans


def _anomaly_markers(minutes: Sequence[Row], col: str) -> list[Marker]:
    return [
        Marker(
            m[c.WINDOW_START] + timedelta(seconds=30),
            float(m[col]),
            "anomaly",
            f"anomaly score {m['anomaly_score_max']:.1f} at {fmt_time(m[c.WINDOW_START])}",
        )
        for m in minutes
        if (m[c.ANOMALOUS_READINGS] or 0) > 0 and m[col] is not None and m["anomaly_score_max"] is not None
    ]


def patient_picker(choices: Sequence[Row], current: str | None) -> str:
    opts = "".join(
        f'<option value="{escape(p[c.PATIENT_KEY])}"{" selected" if p[c.PATIENT_KEY] == current else ""}>'
        f"{escape(p[c.WARD] or 'UNKNOWN')} · {escape(p[c.BED] or '–')} · "
        f"{escape(p[c.PATIENT_KEY][:SHORT_KEY])} "
        f"({escape(p[c.RISK_LEVEL] or '?')})</option>"
        for p in choices
    )
    return (
        '<form class="picker" onsubmit="return false" style="float:right">'
        '<label style="color:var(--muted);font-size:12px">Patient&nbsp;'
        "<select onchange=\"window.location.href='/patient/'+this.value\">"
        f"{opts}</select></label></form>"
    )


def patient(d: Row, choices: Sequence[Row]) -> str:
    p: Row = d["patient"]
    risk: Row = d["risk"]
    minutes: list[Row] = d["minutes"]
    key = p[c.PATIENT_KEY]
    identity = "".join(
        f'<div class="field"><div class="label">{label}</div><div class="v {cls}">{value}</div></div>'
        for label, value, cls in (
            ("Patient id", f'<span class="patient-id">{fmt(p.get(c.PATIENT_ID))}</span>', ""),
            ("Ward", fmt(p[c.WARD]), ""),
            ("Bed", fmt(p[c.BED]), "bed"),
            ("Age band", fmt(p[c.AGE_BAND]), ""),
            ("Diagnosis (ICD-10)", fmt(p[c.DIAGNOSIS_CODE]), ""),
            ("Risk", risk_badge(p[c.RISK_LEVEL]), ""),
            ("NEWS2 now", f"<b>{fmt(p['news2_score_max'])}</b>", ""),
            ("NEWS2 trend (1 h)", trend_cell(risk.get("news2_trend"), risk.get("news2_change")), ""),
            ("Last reading", f"{fmt_time(p[c.LAST_READING_TIME], seconds=True)} UTC", ""),
        )
    )
    tiles = []
    for vital in (c.HEART_RATE, c.SPO2, c.RESPIRATION_RATE, c.TEMPERATURE, c.SYSTOLIC, c.DIASTOLIC):
        v = p[vital]
        abn = out_of_range(vital, v)
        lo, hi = c.VITALS_BY_NAME[vital].normal
        tiles.append(
            f'<div class="card kpi vital-tile{" abnormal" if abn else ""}" data-vital="{vital}"'
            f"{ABNORMAL_STYLE if abn else ''}><h2>{VITAL_LABELS[vital]}</h2>"
            f'<div class="value">{vital_value(vital, v)} <span style="font-size:13px;font-weight:400">'
            f'{unit(vital)}</span></div><div class="sub">reference {lo:g}-{hi:g} · measured '
            f"{fmt_time(p[f'{vital}_minute'])}</div></div>"
        )
    spans = _spans(minutes)
    news2_col = c.gold_column(c.NEWS2_SCORE, "max")
    news2_chart = charts.time_series(
        "patient-news2",
        "NEWS2 (worst per minute)",
        [Series("NEWS2", [(m[c.WINDOW_START], _num(m[news2_col])) for m in minutes], colour="#263238")],
        bands=NEWS2_BANDS,
        spans=spans,
        markers=_anomaly_markers(minutes, news2_col),
        y_min=0,
        y_max=10,
        width=1320,
        height=230,
    )
    vital_charts = []
    for vital, pair in (
        (c.HEART_RATE, None),
        (c.SPO2, None),
        (c.RESPIRATION_RATE, None),
        (c.TEMPERATURE, None),
        (c.SYSTOLIC, c.DIASTOLIC),
    ):
        col = c.gold_column(vital, "mean")
        lo, hi = c.VITALS_BY_NAME[vital].normal
        series = [Series(VITAL_LABELS[vital], [(m[c.WINDOW_START], _num(m[col])) for m in minutes])]
        if pair:
            series.append(
                Series(
                    VITAL_LABELS[pair],
                    [(m[c.WINDOW_START], _num(m[c.gold_column(pair, "mean")])) for m in minutes],
                    colour="#6a1b9a",
                )
            )
        vital_charts.append(
            card(
                f"{VITAL_LABELS[vital] if not pair else 'Blood pressure'} ({unit(vital)})",
                charts.time_series(
                    f"patient-{vital}",
                    f"{VITAL_LABELS[vital]} per minute",
                    series,
                    bands=[Band(lo, hi, "#edf7ee", "adult reference range")],
                    spans=spans,
                    markers=_anomaly_markers(minutes, col),
                    width=440,
                    height=200,
                ),
            )
        )
    legend = (
        '<div class="legend"><span><i style="background:#edf7ee;border:1px solid #c8e6c9"></i>'
        "adult reference range</span>"
        '<span><i style="background:#c62828;height:4px;vertical-align:3px"></i>alert open (shaded)</span>'
        '<span><i class="diamond"></i>anomaly (model flagged a reading in that minute)</span>'
        "<span>NEWS2 shading: green 0-4, orange 5-6, red ≥ 7</span></div>"
    )
    first = fmt_time(minutes[0][c.WINDOW_START]) if minutes else "–"
    return (
        patient_picker(choices, key)
        + f'<h1>Patient detail · <span class="bed">{fmt(p[c.BED])}</span></h1>'
        + f'<p class="lede">Pseudonymous key <span class="key patient-key" data-patient-key="{escape(key)}">'
        f"{escape(key)}</span> · {len(minutes)} minutes since {first} UTC</p>"
        + f'<section class="card identity">{identity}</section>'
        + '<div class="grid tight" style="margin-top:14px">'
        + "".join(tiles)
        + "</div>"
        + legend
        + card("NEWS2 and alerts", news2_chart)
        + '<div class="grid" style="margin-top:14px">'
        + "".join(vital_charts)
        + "</div>"
    )


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def not_found(key: str) -> str:
    return (
        f'<h1>Patient not found</h1><p class="lede">No monitored patient has the key '
        f'<span class="key">{escape(key)}</span>. <a href="/high-risk">Back to the patient list</a>.</p>'
    )
