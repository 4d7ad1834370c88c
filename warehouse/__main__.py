"""The local warehouse from the command line.

    python -m warehouse query "SELECT * FROM patient_risk_scores" \\
        [--warehouse var/demo/warehouse.duckdb] [--format table|csv|json] [--max-rows N]
    python -m warehouse sync --lake var/demo/lake --warehouse var/demo/warehouse.duckdb \\
        [--follow SECONDS]
    python -m warehouse views --bigquery --project P --dataset D   # DDL into D, D_reporting, D_identity
    python -m warehouse views                                      # the DuckDB SQL

DuckDB lets one process open a file for writing, or several read-only: ``query`` opens the file
read-only, so it fails while a ``sync --follow`` holds it (query through that process instead).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
import sys
import threading
from datetime import date, datetime
from types import FrameType
from typing import Any, Final, TextIO

import duckdb
import pyarrow as pa

from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, lake_from_uri
from vitals_lake.lake import Lake
from warehouse import views
from warehouse.duck import DuckWarehouse, WarehouseError
from warehouse.sync import sync_lake

DEFAULT_WAREHOUSE: Final = "var/demo/warehouse.duckdb"
_CELL_WIDTH: Final = 40


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) sends data out).
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """One CSV cell: NULL as empty, text that a spreadsheet would run as a formula prefixed with ``'``
    (OWASP's CSV-injection rule). Numbers are written as numbers, a negative one included."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return _text(value)


def print_table(table: pa.Table, out: TextIO, *, max_rows: int | None = None) -> None:
    """Columns aligned, numbers right-aligned, long cells cut; then the row count."""
    rows = table.to_pylist() if max_rows is None else table.slice(0, max_rows).to_pylist()
    names = table.column_names
    cells = [[_text(r[n]) for n in names] for r in rows]
    cells = [[v if len(v) <= _CELL_WIDTH else v[: _CELL_WIDTH - 1] + "…" for v in row] for row in cells]
    widths = [max([len(n), *(len(row[i]) for row in cells)]) for i, n in enumerate(names)]
    numeric = [
        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        for f in table.schema
    ]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return " | ".join(parts).rstrip()

    out.write(line(names) + "\n")
    out.write("-+-".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write(line(row) + "\n")
    shown = f" ({len(rows)} shown)" if len(rows) < table.num_rows else ""
    out.write(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}{shown})\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _query(args: argparse.Namespace) -> int:
    with DuckWarehouse(args.warehouse, read_only=True) as wh:
        table = wh.query(args.sql)
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(table.column_names)
        for row in table.to_pylist():
            writer.writerow([csv_cell(v) for v in row.values()])
    elif args.format == "json":
        for row in table.to_pylist():
            sys.stdout.write(json.dumps(row, default=_json_default) + "\n")
    else:
        print_table(table, sys.stdout, max_rows=args.max_rows)
    return 0


def _sync(args: argparse.Namespace) -> int:
    lake = Lake(lake_from_uri(args.lake))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if args.follow:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
    with DuckWarehouse(args.warehouse) as wh:
        wh.ensure()
        while True:
            if not args.follow:
                print(json.dumps({"copied": sync_lake(lake, wh)}), flush=True)
                break
            # Following, a failed round (e.g. a file vacuumed while being read) is logged and retried.
            try:
                print(json.dumps({"copied": sync_lake(lake, wh)}), flush=True)
            except Exception:
                logging.getLogger(__name__).exception("sync failed; retrying in %s s", args.follow)
            if stop.wait(args.follow):
                break
    return 0


def _views(args: argparse.Namespace) -> int:
    if args.bigquery:
        if not (args.project and args.dataset):
            raise ConfigError("views --bigquery needs --project and --dataset")
        for name in views.view_names():
            print(views.bigquery_ddl(name, args.project, args.dataset) + "\n")
    else:
        for name in views.view_names():
            print(views.duckdb_ddl(name) + ";\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warehouse", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("query", help="run SQL on the local warehouse (views included)")
    q.add_argument("sql")
    q.add_argument("--warehouse", default=DEFAULT_WAREHOUSE)
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q.add_argument("--max-rows", type=int, default=None, help="table format: print at most N rows")
    q.set_defaults(run=_query, parser=q)
    s = sub.add_parser("sync", help="copy new lake rows into the local warehouse")
    s.add_argument("--lake", required=True, help="lake directory or gs://bucket/prefix")
    s.add_argument("--warehouse", default=DEFAULT_WAREHOUSE)
    s.add_argument("--follow", type=float, default=None, metavar="SECONDS", help="sync again every N s")
    s.set_defaults(run=_sync, parser=s)
    v = sub.add_parser("views", help="print the views' DDL (DuckDB, or BigQuery with --bigquery)")
    v.add_argument("--bigquery", action="store_true")
    v.add_argument("--project")
    v.add_argument("--dataset")
    v.set_defaults(run=_views, parser=v)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "follow", None) is not None and args.follow <= 0:
        return usage_error(args.parser, "--follow must be > 0 seconds")
    if getattr(args, "max_rows", None) is not None and args.max_rows < 0:
        return usage_error(args.parser, "--max-rows must be >= 0")
    try:
        return int(args.run(args))
    except ConfigError as exc:  # a bad setting: the usage of the subcommand, exit 2
        return usage_error(args.parser, str(exc))
    except (WarehouseError, views.ViewError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:  # e.g. a mistake in the user's SQL: say it, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
