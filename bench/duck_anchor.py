"""An independent-engine anchor for ``pipeline_core``: the comparable part of the pipeline in DuckDB SQL.

How fast does an independent, single-threaded engine (DuckDB, ``SET threads = 1``) do the part of
our pipeline that any engine would have to do, on the same simulated NDJSON readings file? It reads
the file with ``read_ndjson`` against an explicit column schema (``contract.READING_JSON_SCHEMA``),
applies the Silver "drop" expectations (built from the contract's regexes, ranges and unit lists, not
hard-coded numbers), splits ``"120/80"`` blood pressure, converts °F temperatures, narrows integral
vitals, scores NEWS2 (scale 1) as SQL ``CASE`` expressions, derives MAP and shock index, drops
repeated ``event_id`` s (first in file order wins), writes Silver to Parquet, then one-minute Gold per
patient (reading count, the contract's per-vital stats, worst NEWS2) to Parquet.

What it does NOT do, compared with our pipeline: no anomaly model, no alert state or alert flags, no
Delta commits (plain Parquet files), no Bronze or quarantine tables (quarantine is a count), no
hourly Gold, no trend tables, no enrichment or pseudonymisation (no patient key, ward or age band),
no FHIR records, no de-duplication horizon (de-duplication is over the whole file), no per-rule
quarantine reasons or dq metrics.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa

from vitals_lake import contract as c
from vitals_lake import expectations as ex
from vitals_lake.readings import TimeRules

SILVER_FILE: Final = "silver.parquet"
GOLD_MINUTES_FILE: Final = "gold_minutes.parquet"
_NUMBER_TYPES: Final = ("UBIGINT", "BIGINT", "DOUBLE")  # json_type() of a JSON number
_LINE: Final = "__line"
_COPIES: Final = "__copies"

# NEWS2 (RCP 2017) as (upper edges, points), written out once; vitals_lake.news2 keeps its bands
# private. A value scores points[i] for the first edge it is <= to, else points[-1]: the half-open
# bands (previous upper edge, upper edge] of news2.py, on inputs rounded to 6 decimals. The unit test
# checks every sub-score against vitals_lake.news2.score_news2.
_NEWS2_BANDS: Final[dict[str, tuple[tuple[float, ...], tuple[int, ...]]]] = {
    c.RESPIRATION_RATE: ((8, 11, 20, 24), (3, 1, 0, 2, 3)),
    c.SPO2: ((91, 93, 95), (3, 2, 1, 0)),  # scale 1: no admissions in the benchmark, so every patient
    c.SYSTOLIC: ((90, 100, 110, 219), (3, 2, 1, 0, 3)),
    c.HEART_RATE: ((40, 50, 90, 110, 130), (3, 1, 0, 1, 2, 3)),
    c.TEMPERATURE: ((35.0, 36.0, 38.0, 39.0), (3, 1, 0, 1, 2)),
}
_ACVPU_POINTS: Final = {"A": 0, "C": 3, "V": 3, "P": 3, "U": 3}
_OXYGEN_POINTS: Final = 2
_MEDIUM_FROM, _HIGH_FROM, _RED = 5, 7, 3
_GOLD_STAT_SQL: Final = {  # c.GOLD_STATS -> SQL over one vital column {v}
    "mean": "avg({v})",
    "min": "min({v})::DOUBLE",
    "max": "max({v})::DOUBLE",
    "last": "arg_max({v}, {ts}) FILTER (WHERE {v} IS NOT NULL)::DOUBLE",
    "count": "count({v})::INTEGER",
}


@dataclass(frozen=True)
class AnchorCounts:
    silver: int  # rows written to Silver parquet
    quarantined: int  # lines rejected (unparseable or failing a rule)
    duplicates: int  # valid rows dropped as repeated event_id
    gold_minutes: int  # one-minute Gold rows written


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in(expr: str, values: tuple[str, ...] | tuple[float, ...]) -> str:
    items = ", ".join(_lit(v) if isinstance(v, str) else repr(float(v)) for v in values)
    return f"{expr} IN ({items})"


def _read_columns() -> tuple[str, list[str]]:
    """The ``columns`` struct for ``read_ndjson``, and the names read as JSON for a type check.

    Strings are read as VARCHAR. Numbers and booleans are read as JSON and checked with ``json_type``:
    read straight as DOUBLE, ``ignore_errors`` would turn ``"heart_rate": "seventy-two"`` into a NULL
    and keep the row, where our parser quarantines it (``wrong_type``)."""
    columns: list[str] = []
    typed: list[str] = []
    for f in c.READING_JSON_SCHEMA:
        if pa.types.is_string(f.type):
            sql_type = "VARCHAR"
        elif pa.types.is_floating(f.type) or pa.types.is_boolean(f.type):
            sql_type = "JSON"
            typed.append(f.name)
        else:
            raise TypeError(f"no DuckDB column type for {f.name}: {f.type}")
        columns.append(f"{_lit(f.name)}: {_lit(sql_type)}")
    return "{" + ", ".join(columns) + "}", typed


def _normalised_sql(readings: Path) -> str:
    """One row per JSON line (an unparseable line is an all-NULL row), typed and normalised as our
    parser does: blood pressure text split, °F converted (rounded half to even, like Arrow)."""
    columns, typed = _read_columns()
    json_numbers = [f.name for f in c.READING_JSON_SCHEMA if f.name in typed and pa.types.is_floating(f.type)]
    wrong_type = [
        f"NOT {_in(f'json_type({_q(name)})', _NUMBER_TYPES)}"
        if name in json_numbers
        else f"json_type({_q(name)}) <> 'BOOLEAN'"
        for name in typed
    ]
    groups = re.compile(ex.BLOOD_PRESSURE_RE).groupindex
    bp = _q(c.BLOOD_PRESSURE)
    out = [
        f"{_LINE}",
        *(_q(f.name) for f in c.READING_JSON_SCHEMA if f.name not in typed),
        f"coalesce({' OR '.join(wrong_type)}, false) AS __wrong_type",
        f"TRY_CAST({_q(c.SUPPLEMENTAL_OXYGEN)} AS BOOLEAN) AS {_q(c.SUPPLEMENTAL_OXYGEN)}",
    ]
    fahrenheit = _in(_q(c.TEMPERATURE_UNIT), ex.FAHRENHEIT_UNITS)
    for name in json_numbers:
        value = f"TRY_CAST({_q(name)} AS DOUBLE)"
        if name in (c.SYSTOLIC, c.DIASTOLIC):
            from_text = (
                f"TRY_CAST(regexp_extract({bp}, {_lit(ex.BLOOD_PRESSURE_RE)}, {groups[name]}) AS DOUBLE)"
            )
            value = f"coalesce({value}, {from_text})"
        elif name == c.TEMPERATURE:
            converted = f"coalesce({fahrenheit} AND {value} IS NOT NULL, false)"
            out.append(f"{converted} AS {_q(c.TEMPERATURE_CONVERTED)}")
            value = f"CASE WHEN {converted} THEN round_even(({value} - 32.0) * 5.0 / 9.0, 2) ELSE {value} END"
        out.append(f"{value} AS {_q(name)}")
    # With one thread the scan runs in file order, so row_number() over the scan is the line order.
    source = f"read_ndjson({_lit(str(readings))}, columns = {columns}, ignore_errors = true)"
    return f"SELECT {', '.join(out)} FROM (SELECT row_number() OVER () AS {_LINE}, * FROM {source})"


def _failures(ingest_us: int, time_rules: TimeRules) -> list[str]:
    """One SQL predicate per "drop" rule, TRUE when a row fails it (NULL counts as passing)."""

    def present_not_matching(name: str, pattern: str) -> str:
        return f"{_q(name)} IS NOT NULL AND NOT regexp_matches({_q(name)}, {_lit(pattern)})"

    ts = _q(c.TIMESTAMP)
    floor_us = int(c.PLAUSIBLE_AFTER.timestamp() * 1_000_000)
    skew_us = int(time_rules.clock_skew.total_seconds() * 1_000_000)
    vitals = [_q(v.name) for v in c.VITAL_SIGNS]
    rules = [
        "__wrong_type",
        f"{_q(c.PATIENT_ID)} IS NULL OR {_q(c.PATIENT_ID)} = ''",
        *(present_not_matching(n, ex.ID_RE) for n in (c.PATIENT_ID, c.DEVICE_ID, c.EVENT_ID, c.SUPERSEDES)),
        # Required, ISO 8601 with an offset, a real date (no 30 February), after the floor, not ahead.
        f"{ts} IS NULL OR NOT regexp_matches({ts}, {_lit(ex.ISO_TIMESTAMP_RE)}) OR __ts IS NULL",
        f"epoch_us(__ts) < {floor_us}",
        f"epoch_us(__ts) > {ingest_us + skew_us}",
        present_not_matching(c.BLOOD_PRESSURE, ex.BLOOD_PRESSURE_RE),
        " AND ".join(f"{v} IS NULL" for v in [*vitals, _q(c.BLOOD_PRESSURE)]),
        f"{_q(c.TEMPERATURE_UNIT)} IS NOT NULL AND NOT "
        + _in(_q(c.TEMPERATURE_UNIT), ex.CELSIUS_UNITS + ex.FAHRENHEIT_UNITS),
        f"{_q(c.CONSCIOUSNESS)} IS NOT NULL AND NOT "
        + _in(_q(c.CONSCIOUSNESS), ex.ACVPU + tuple(x.lower() for x in ex.ACVPU)),
        f"{_q(c.SYSTOLIC)} <= {_q(c.DIASTOLIC)}",
    ]
    for v in c.VITAL_SIGNS:
        lo, hi = v.possible
        rules.append(f"NOT isfinite({_q(v.name)}) OR {_q(v.name)} < {lo!r} OR {_q(v.name)} > {hi!r}")
        if v.no_reading_codes:
            rules.append(_in(_q(v.name), v.no_reading_codes))
    return rules


def _banded(expr: str, edges: tuple[float, ...], points: tuple[int, ...]) -> str:
    value = f"round_even({expr}::DOUBLE, 6)"
    whens = " ".join(f"WHEN {value} <= {float(e)!r} THEN {p}" for e, p in zip(edges, points, strict=False))
    return f"CASE WHEN {expr} IS NULL THEN NULL {whens} ELSE {points[-1]} END::TINYINT"


def _news2_subscores() -> dict[str, str]:
    """SQL per ``contract.NEWS2_PARAMETERS``: NULL when the parameter cannot be scored."""
    subs = {name: _banded(_q(name), *bands) for name, bands in _NEWS2_BANDS.items()}
    subs[c.SUPPLEMENTAL_OXYGEN] = (
        f"CASE WHEN coalesce({_q(c.SUPPLEMENTAL_OXYGEN)}, false) THEN {_OXYGEN_POINTS} ELSE 0 END::TINYINT"
    )
    level = f"upper(trim({_q(c.CONSCIOUSNESS)}))"
    whens = " ".join(f"WHEN {level} = {_lit(k)} THEN {p}" for k, p in _ACVPU_POINTS.items())
    subs[c.CONSCIOUSNESS] = f"CASE WHEN {_q(c.CONSCIOUSNESS)} IS NULL THEN 0 {whens} END::TINYINT"
    if set(subs) != set(c.NEWS2_PARAMETERS):
        raise RuntimeError(f"NEWS2 parameters {sorted(subs)} != contract {sorted(c.NEWS2_PARAMETERS)}")
    return subs


def _silver_sql(readings: Path, ingest_us: int, time_rules: TimeRules) -> str:
    """Valid rows, first per event_id (``__copies``: how many valid rows had it), with NEWS2."""
    checked = (
        f"SELECT *, coalesce({' OR '.join(f'({r})' for r in _failures(ingest_us, time_rules))}, false)"
        f" AS __drop FROM (SELECT *, TRY_CAST({_q(c.TIMESTAMP)} AS TIMESTAMPTZ) AS __ts"
        f" FROM ({_normalised_sql(readings)}))"
    )
    # A reading without an event_id gets the pipeline's derived id (readings._validated_rows):
    # "derived:<device_id or patient_id>:<epoch microseconds>", so a resend is still a duplicate.
    event_id = (
        f"coalesce({_q(c.EVENT_ID)}, 'derived:' || coalesce({_q(c.DEVICE_ID)}, {_q(c.PATIENT_ID)})"
        f" || ':' || epoch_us(__ts)::VARCHAR)"
    )
    items = [_LINE, f"{event_id} AS {_q(c.EVENT_ID)}", _q(c.PATIENT_ID), _q(c.DEVICE_ID)]
    items.append(f"__ts AS {_q(c.TIMESTAMP)}")
    for v in c.VITAL_SIGNS:  # integral vitals rounded half to even and narrowed, as our parser does
        items.append(f"round_even({_q(v.name)}, 0)::SMALLINT AS {_q(v.name)}" if v.integral else _q(v.name))
    items += [_q(c.SUPERSEDES), _q(c.TEMPERATURE_CONVERTED), _q(c.SUPPLEMENTAL_OXYGEN)]
    items.append(f"upper({_q(c.CONSCIOUSNESS)}) AS {_q(c.CONSCIOUSNESS)}")
    narrowed = f"SELECT {', '.join(items)} FROM ({checked}) WHERE NOT __drop"
    subs = _news2_subscores()
    sub_cols = [_q(c.news2_subscore_column(p)) for p in c.NEWS2_PARAMETERS]
    hr, sbp, dbp = _q(c.HEART_RATE), _q(c.SYSTOLIC), _q(c.DIASTOLIC)
    scored = (
        f"SELECT *, {' + '.join(f'coalesce({s}, 0)' for s in sub_cols)} AS __score,"
        f" ({' + '.join(f'({s} IS NULL)::INTEGER' for s in sub_cols)})::TINYINT AS {_q(c.NEWS2_MISSING)},"
        f" greatest({', '.join(f'coalesce({s}, 0)' for s in sub_cols)}) AS __worst"
        f" FROM (SELECT *, ({sbp}::DOUBLE + 2.0 * {dbp}::DOUBLE) / 3.0 AS {_q(c.MEAN_ARTERIAL_PRESSURE)},"
        f" {hr}::DOUBLE / {sbp} AS {_q(c.SHOCK_INDEX)}, 1::TINYINT AS {_q(c.SPO2_SCALE)},"
        f" {', '.join(f'{subs[p]} AS {s}' for p, s in zip(c.NEWS2_PARAMETERS, sub_cols, strict=True))},"
        f" count(*) OVER (PARTITION BY {_q(c.EVENT_ID)}) AS {_COPIES} FROM ({narrowed})"
        f" QUALIFY row_number() OVER (PARTITION BY {_q(c.EVENT_ID)} ORDER BY {_LINE}) = 1)"
    )
    low, low_medium, medium, high = (_lit(r) for r in c.NEWS2_RESPONSES)
    response = (
        f"CASE WHEN __score >= {_HIGH_FROM} THEN {high} WHEN __score >= {_MEDIUM_FROM} THEN {medium}"
        f" WHEN __worst = {_RED} THEN {low_medium} ELSE {low} END"
    )
    return (
        f"SELECT * EXCLUDE (__score, __worst, {_LINE}), __score::TINYINT AS {_q(c.NEWS2_SCORE)},"
        f" {response} AS {_q(c.NEWS2_RESPONSE)}, make_timestamptz({ingest_us}) AS {_q(c.INGEST_TIME)},"
        f" {_q(c.TIMESTAMP)}::DATE AS {_q(c.EVENT_DATE)} FROM ({scored})"
    )


def _gold_minutes_sql() -> str:
    ts = _q(c.TIMESTAMP)
    start = f"date_trunc('minute', {ts})"
    stats = []
    for v in c.VITAL_SIGNS:
        for stat in c.GOLD_STATS:
            sql = _GOLD_STAT_SQL[stat].format(v=_q(v.name), ts=ts)
            stats.append(f"{sql} AS {_q(c.gold_column(v.name, stat))}")
    return (
        f"SELECT {_q(c.PATIENT_ID)}, 60::INTEGER AS {_q(c.WINDOW_SECONDS)}, {start} AS {_q(c.WINDOW_START)},"
        f" {start} + INTERVAL 60 SECOND AS {_q(c.WINDOW_END)}, count(*)::INTEGER AS {_q(c.READING_COUNT)},"
        f" {', '.join(stats)}, max({_q(c.NEWS2_SCORE)}) AS {_q(c.gold_column(c.NEWS2_SCORE, 'max'))},"
        f" max({ts}) AS {_q(c.LAST_READING_TIME)}, {start}::DATE AS {_q(c.EVENT_DATE)}"
        f" FROM silver GROUP BY {_q(c.PATIENT_ID)}, {start}"
    )


def _count_lines(path: Path) -> int:
    """Lines as ``for line in file`` counts them (a last line without a newline counts)."""
    lines, last = 0, b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def run_duckdb_anchor(readings: Path, out_dir: Path, *, time_rules: TimeRules | None = None) -> AnchorCounts:
    """Silver and one-minute Gold of ``readings`` (NDJSON) in DuckDB on one thread, written to
    ``out_dir / SILVER_FILE`` and ``out_dir / GOLD_MINUTES_FILE``. ``time_rules``: the future-timestamp
    tolerance (a file is never judged by age); default ``TimeRules()``."""
    rules = time_rules or TimeRules()
    ingest_us = time.time_ns() // 1000
    lines = _count_lines(readings)
    with duckdb.connect(":memory:", config={"threads": 1}) as con:
        con.execute("SET TimeZone = 'UTC'")  # minute windows and event dates in UTC
        con.execute(f"CREATE TEMP TABLE silver AS {_silver_sql(readings, ingest_us, rules)}")
        copied = con.execute(
            f"COPY (SELECT * EXCLUDE ({_COPIES}) FROM silver) TO {_lit(str(out_dir / SILVER_FILE))}"
            " (FORMAT parquet)"
        ).fetchone()
        gold = con.execute(
            f"COPY ({_gold_minutes_sql()}) TO {_lit(str(out_dir / GOLD_MINUTES_FILE))} (FORMAT parquet)"
        ).fetchone()
        valid = con.execute(f"SELECT coalesce(sum({_COPIES}), 0)::BIGINT FROM silver").fetchone()
    assert copied is not None and gold is not None and valid is not None
    silver, n_valid = int(copied[0]), int(valid[0])
    return AnchorCounts(
        silver=silver, quarantined=lines - n_valid, duplicates=n_valid - silver, gold_minutes=int(gold[0])
    )
