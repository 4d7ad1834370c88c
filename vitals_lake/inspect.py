"""Look into a lake: ``python -m vitals_lake.inspect --lake var/demo/lake [TABLE] [--limit N]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pyarrow as pa

from vitals_lake import contract as c
from vitals_lake.audit import count_lake
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, lake_from_uri
from vitals_lake.lake import Lake

LAYERS: dict[str, c.Layer] = {spec.name: layer for layer, spec in c.TABLES.items()} | {
    layer: layer for layer in c.TABLES
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitals_lake.inspect", description=__doc__)
    parser.add_argument(
        "--lake",
        default="var/demo/lake",
        help="lake root: a local directory or gs://bucket/prefix (default var/demo/lake)",
    )
    parser.add_argument(
        "table",
        nargs="?",
        choices=sorted(LAYERS),
        metavar="TABLE",
        help=f"show rows of this table: a layer ({', '.join(c.TABLES)}) or its table name",
    )
    parser.add_argument("--limit", type=int, default=10, help="rows to show with TABLE (default 10)")
    args = parser.parse_args(argv)
    if args.limit < 0:
        return usage_error(parser, f"--limit must be >= 0, got {args.limit}")
    try:
        lake = Lake(lake_from_uri(args.lake))
    except ConfigError as exc:
        return usage_error(parser, str(exc))
    if args.table is None:
        counts = count_lake(lake)
        for layer, spec in c.TABLES.items():
            print(f"{spec.name:<28} {lake.count(layer):>10,} rows   {lake.uri(layer)}")
        print(f"duplicates removed: {counts.duplicates_removed:,}")
        print(f"quarantine by rule: {counts.quarantine_by_rule}")
        return 0
    layer = LAYERS[args.table]
    table = lake.read(layer)
    sort = {"gold": c.WINDOW_START, "silver": c.TIMESTAMP}.get(layer, c.INGEST_TIME)
    if sort in table.column_names and table.num_rows:
        table = table.sort_by([(sort, "descending")])
    print(f"{c.TABLES[layer].name}: {table.num_rows:,} rows (latest {min(args.limit, table.num_rows)})")
    _print(table.slice(0, args.limit))
    return 0


def _print(table: pa.Table) -> None:
    for row in table.to_pylist():
        print("  " + ", ".join(f"{k}={v!r}" for k, v in row.items() if v is not None))


if __name__ == "__main__":
    sys.exit(main())
