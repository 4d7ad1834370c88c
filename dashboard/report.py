"""The report definition in ``looker/report.yaml``: pages, charts and the views they read.

The package reads it as package data (``dashboard/report.yaml``, a link to ``looker/report.yaml`` that
setuptools copies into the wheel), so an installed dashboard has it without a checkout.

One definition serves both dashboards: the Looker Studio template is laid out from it (and the
Linking API URL wires one data source per view it names), and the local dashboard serves the same
pages with the same titles over the same views in DuckDB. ``load_report`` validates it: unique ids,
every chart's data source declared, every declared data source used.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final

import yaml

REPORT_FILE: Final[Traversable] = resources.files("dashboard") / "report.yaml"
ALIAS_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]{0,29}$")  # no dots: the URL's ds.<alias>.<param>
VIEW_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]*$")
CHART_TYPES: Final = frozenset({"time_series", "table", "bar", "stacked_bar", "scorecard", "line"})


class ReportError(ValueError):
    """The report definition is inconsistent."""


@dataclass(frozen=True)
class DataSource:
    alias: str  # the data source's alias in the Looker Studio template
    view: str  # the BigQuery view it reads (tableId)
    name: str  # the data source's display name


@dataclass(frozen=True)
class Chart:
    id: str
    type: str
    data_source: str  # alias
    title: str
    dimensions: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    breakdown: str | None = None
    sort: str | None = None
    markers: tuple[str, ...] = ()  # fields drawn as point markers on a time series
    colour_by: str | None = None
    filters: tuple[str, ...] = ()  # chart filters, "field = value" / "field in (a, b)"


@dataclass(frozen=True)
class Page:
    id: str
    title: str
    local_path: str  # the local dashboard's page
    description: str
    charts: tuple[Chart, ...]
    controls: tuple[tuple[str, str], ...] = ()  # (alias, field) of the page's filter controls

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*(ch.data_source for ch in self.charts), *(a for a, _ in self.controls)]))


@dataclass(frozen=True)
class Report:
    name: str
    template_report_id: str | None
    data_sources: tuple[DataSource, ...]
    pages: tuple[Page, ...]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def source(self, alias: str) -> DataSource:
        for ds in self.data_sources:
            if ds.alias == alias:
                return ds
        raise KeyError(alias)

    def page(self, page_id: str) -> Page:
        for p in self.pages:
            if p.id == page_id:
                return p
        raise KeyError(page_id)

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(ds.view for ds in self.data_sources)

    def views_of(self, page_id: str) -> tuple[str, ...]:
        return tuple(self.source(a).view for a in self.page(page_id).aliases)

    def fields_by_view(self) -> dict[str, set[str]]:
        """Every field a chart or filter names, per view (for checking against the views' columns)."""
        out: dict[str, set[str]] = {ds.view: set() for ds in self.data_sources}
        for p in self.pages:
            for ch in p.charts:
                names = {*ch.dimensions, *ch.metrics, *ch.markers}
                names |= {n for n in (ch.breakdown, ch.sort, ch.colour_by) if n}
                names |= {_filter_field(f) for f in ch.filters}
                out[self.source(ch.data_source).view] |= {n.lstrip("-") for n in names}
            for alias, name in p.controls:
                out[self.source(alias).view].add(name)
        return out


_FILTER: Final = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(=|!=|<|>|<=|>=|in|not in)\s*(.+)$")


def _filter_field(text: str) -> str:
    m = _FILTER.match(text)
    if not m:
        raise ReportError(f"filter {text!r} is not 'field op value'")
    return m.group(1)


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReportError(f"{what} must be a string or a list of strings")
    return tuple(value)


def _opt(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReportError(f"{what} must be a string")
    return value


def parse_report(doc: dict[str, Any]) -> Report:
    """A ``Report`` from the YAML document; raises ``ReportError`` on any inconsistency."""
    if not isinstance(doc, dict):
        raise ReportError("the report definition must be a mapping")
    meta = doc.get("report") or {}
    sources: list[DataSource] = []
    for alias, spec in (doc.get("data_sources") or {}).items():
        if not ALIAS_PATTERN.match(str(alias)):
            raise ReportError(f"data source alias {alias!r} must match {ALIAS_PATTERN.pattern}")
        view = str(spec.get("view", ""))
        if not VIEW_PATTERN.match(view):
            raise ReportError(f"data source {alias!r}: view {view!r} is not a plain view name")
        sources.append(DataSource(alias=str(alias), view=view, name=str(spec.get("name") or view)))
    if not sources:
        raise ReportError("no data sources")
    if len({ds.view for ds in sources}) != len(sources):
        raise ReportError("two data sources read the same view")
    aliases = {ds.alias for ds in sources}
    pages: list[Page] = []
    for p in doc.get("pages") or []:
        charts = []
        for ch in p.get("charts") or []:
            chart = Chart(
                id=str(ch["id"]),
                type=str(ch["type"]),
                data_source=str(ch["data_source"]),
                title=str(ch.get("title") or ch["id"]),
                dimensions=_strs(ch.get("dimensions"), f"{ch['id']}.dimensions"),
                metrics=_strs(ch.get("metrics"), f"{ch['id']}.metrics"),
                breakdown=_opt(ch.get("breakdown"), f"{ch['id']}.breakdown"),
                sort=_opt(ch.get("sort"), f"{ch['id']}.sort"),
                markers=_strs(ch.get("markers"), f"{ch['id']}.markers"),
                colour_by=_opt(ch.get("colour_by"), f"{ch['id']}.colour_by"),
                filters=_strs(ch.get("filters"), f"{ch['id']}.filters"),
            )
            for flt in chart.filters:
                _filter_field(flt)
            if chart.type not in CHART_TYPES:
                raise ReportError(
                    f"chart {chart.id!r}: unknown type {chart.type!r} (one of {sorted(CHART_TYPES)})"
                )
            if chart.data_source not in aliases:
                raise ReportError(f"chart {chart.id!r}: data source {chart.data_source!r} is not declared")
            charts.append(chart)
        controls = []
        for ctl in p.get("controls") or []:
            alias, _, name = str(ctl).partition(".")
            if alias not in aliases or not name:
                raise ReportError(f"page {p.get('id')!r}: control {ctl!r} must be '<alias>.<field>'")
            controls.append((alias, name))
        if not charts:
            raise ReportError(f"page {p.get('id')!r} has no charts")
        pages.append(
            Page(
                id=str(p["id"]),
                title=str(p["title"]),
                local_path=str(p["local_path"]),
                description=str(p.get("description") or ""),
                charts=tuple(charts),
                controls=tuple(controls),
            )
        )
    if not pages:
        raise ReportError("no pages")
    if len({p.id for p in pages}) != len(pages):
        raise ReportError("duplicate page ids")
    chart_ids = [ch.id for p in pages for ch in p.charts]
    if len(set(chart_ids)) != len(chart_ids):
        raise ReportError("duplicate chart ids")
    used = {a for p in pages for a in p.aliases}
    if unused := aliases - used:
        raise ReportError(f"data sources declared but used by no chart: {sorted(unused)}")
    template = meta.get("template_report_id")
    return Report(
        name=str(meta.get("name") or "Vitals Lake"),
        template_report_id=str(template) if template else None,
        data_sources=tuple(sources),
        pages=tuple(pages),
        raw=doc,
    )


def load_report(path: str | os.PathLike[str] | Traversable = REPORT_FILE) -> Report:
    if isinstance(path, str | os.PathLike):
        with open(path, encoding="utf-8") as fh:
            return parse_report(yaml.safe_load(fh))
    return parse_report(yaml.safe_load(path.read_text(encoding="utf-8")))
