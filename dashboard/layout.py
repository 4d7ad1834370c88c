"""The page shell: header, navigation, styles and the auto-refresh script (all inline, nothing fetched)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Final

from dashboard.charts import RISK_COLOURS, RISK_TEXT_COLOURS

STYLE: Final = """
:root { --ink:#1f2a37; --muted:#6b7688; --line:#e3e7ee; --bg:#f4f6f9; --card:#fff; --accent:#1565c0; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#102a43; color:#fff; padding:10px 20px; display:flex; align-items:center; gap:24px;
         flex-wrap:wrap; }
header .brand { font-weight:700; font-size:16px; letter-spacing:.2px; }
header nav a { color:#cfe0f5; text-decoration:none; padding:6px 10px; border-radius:6px; margin-right:2px; }
header nav a.active, header nav a:hover { background:#243b53; color:#fff; }
header .status { margin-left:auto; font-size:12px; color:#9fb3c8; }
header .status .dot { display:inline-block; width:8px; height:8px; border-radius:50%; background:#3ebd93;
                      margin-right:6px; vertical-align:middle; }
header .status.stale .dot { background:#f0b429; }
main { padding:18px 20px 40px; max-width:1400px; margin:0 auto; }
h1 { font-size:20px; margin:0 0 4px; }
p.lede { color:var(--muted); margin:0 0 16px; }
.grid { display:grid; gap:14px; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); }
.grid.tight { grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); }
.grid.kpis { grid-template-columns:repeat(auto-fill,minmax(170px,1fr)); margin-bottom:4px; }
.grid.kpis .wide { grid-column:span 2; }
td, th { white-space:nowrap; }
td.wrap { white-space:normal; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
.card h2 { font-size:13px; text-transform:uppercase; letter-spacing:.5px; color:var(--muted); margin:0 0 8px;
           font-weight:600; }
.kpi .value { font-size:26px; font-weight:700; }
.kpi .sub { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:7px 8px; border-bottom:1px solid var(--line); vertical-align:middle; }
th { font-size:12px; color:var(--muted); font-weight:600; text-transform:uppercase; letter-spacing:.4px; }
tr:hover td { background:#f8fafc; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.risk { display:inline-block; min-width:82px; text-align:center; padding:2px 8px; border-radius:999px;
        font-weight:600; font-size:12px; }
.key { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
a.key { color:var(--accent); text-decoration:none; } a.key:hover { text-decoration:underline; }
.bed { font-weight:600; }
.trend-rising { color:#c62828; font-weight:600; } .trend-falling { color:#2e7d32; font-weight:600; }
.trend-stable, .trend-unknown { color:var(--muted); }
.alert-open { color:#c62828; font-weight:700; }
.legend { display:flex; gap:14px; flex-wrap:wrap; font-size:12px; color:var(--muted); margin:4px 0 10px; }
.legend i { display:inline-block; width:11px; height:11px; border-radius:2px; margin-right:5px;
            vertical-align:-1px; }
.legend i.diamond { transform:rotate(45deg); background:#c62828; width:9px; height:9px; border-radius:0; }
.identity { display:flex; gap:28px; flex-wrap:wrap; align-items:center; }
.identity .field .label { font-size:11px; color:var(--muted); text-transform:uppercase; letter-spacing:.4px; }
.identity .field .v { font-size:16px; font-weight:600; }
.empty { color:var(--muted); padding:30px; text-align:center; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:14px; }
svg.chart { display:block; font-family:inherit; }
td.abn { color:#c62828; font-weight:700; }
.scroll { overflow-x:auto; }
"""

# Auto-refresh without a reload: fetch the same page's main content every few seconds and swap it in
# (no flicker, scroll kept). Pauses while the tab is hidden; marks the status stale after failures.
SCRIPT: Final = """
(function () {
  var every = %(seconds)d * 1000, fails = 0;
  var status = document.getElementById('status');
  function stamp(ok) {
    if (!status) return;
    status.classList.toggle('stale', !ok);
    var t = new Date();
    status.querySelector('.when').textContent = ok
      ? 'updated ' + t.toLocaleTimeString()
      : 'connection lost: retrying';
  }
  function tick() {
    if (document.hidden) return;
    var url = new URL(window.location.href);
    url.searchParams.set('partial', '1');
    fetch(url.toString(), {cache: 'no-store'}).then(function (r) {
      if (!r.ok) throw new Error(r.status);
      return r.text();
    }).then(function (html) {
      var main = document.querySelector('main');
      if (main && main.innerHTML !== html) main.innerHTML = html;
      fails = 0; stamp(true);
    }).catch(function () { fails += 1; if (fails > 1) stamp(false); });
  }
  stamp(true);
  if (every > 0) setInterval(tick, every);
})();
"""

NAV: Final = (
    ("high_risk", "/high-risk", "High-risk patients"),
    ("ward_overview", "/wards", "Ward overview"),
    ("hospital_trends", "/trends", "Hospital-wide trends"),
    ("patient_detail", "/patient", "Patient detail"),
)


def risk_badge(level: str | None) -> str:
    level = level or "unknown"
    bg = RISK_COLOURS.get(level, "#9aa5b1")
    fg = RISK_TEXT_COLOURS.get(level, "#fff")
    return (
        f'<span class="risk risk-{escape(level)}" style="background:{bg};color:{fg}">{escape(level)}</span>'
    )


def risk_legend() -> str:
    items = "".join(
        f'<span><i style="background:{colour}"></i>{escape(level)}</span>'
        for level, colour in RISK_COLOURS.items()
    )
    return f'<div class="legend">NEWS2 response / risk level: {items}</div>'


def page(
    *,
    title: str,
    active: str,
    body: str,
    refresh_seconds: int,
    data_url: str,
    nav: Sequence[tuple[str, str, str]] = NAV,
) -> str:
    links = "".join(
        f'<a href="{href}" class="{"active" if pid == active else ""}" data-page="{pid}">{escape(label)}</a>'
        for pid, href, label in nav
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · Vitals Lake</title>
<style>{STYLE}</style></head>
<body data-page="{escape(active)}">
<header><span class="brand">Vitals Lake</span><nav>{links}</nav>
<span class="status" id="status"><span class="dot"></span><span class="when">live</span> ·
<a href="{escape(data_url)}" style="color:#9fb3c8">JSON</a></span></header>
<main>{body}</main>
<footer>Local dashboard over the DuckDB warehouse views (the same views Looker Studio reads in BigQuery).
Patients are shown by pseudonymous key; the patient id appears on the detail page only.</footer>
<script>{SCRIPT % {"seconds": refresh_seconds}}</script>
</body></html>"""
