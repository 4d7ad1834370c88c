"""``vitals-lake migrate-lake``: copy a lake into a new prefix under the current contract.

The one way past a change that is not additive. delta-rs cannot drop a column in place, and a rebuild
from Bronze reaches back only as far as Bronze's 30 days, where Silver keeps 730. So this copies every
table of the old lake, batch by batch (a batch's memory, not a table's), keeping the contract's
columns: a column the contract no longer has is left behind (``patient_id`` of Silver, Gold, the
alerts and the rolling means, dropped for minimum necessary), and a nullable column it has gained is
filled with nulls. Before Silver's ``patient_id`` is left behind, every key it held goes to the new
lake's identity map (``patient_keys``), so that each key can still be mapped back to its patient.

The old lake is not changed: stop the pipeline, migrate, point the pipeline (and the maintenance,
admissions and warehouse jobs) at the new prefix, check it, then delete the old prefix, whose files
still hold the dropped columns. The new lake must be empty: a half-done migration is started again
into a fresh prefix, never resumed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from vitals_lake import contract as c
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, lake_from_uri
from vitals_lake.lake import Lake
from vitals_lake.logs import configure as configure_logging
from vitals_lake.patient_keys import KnownKeys

log = logging.getLogger(__name__)
PROG: Final = "vitals-lake migrate-lake"
BATCH_ROWS: Final = 500_000  # rows per read batch and per append (one commit each)


class MigrationError(RuntimeError):
    """The target lake already holds rows, or a table cannot be brought to the contract by copying."""


def migrate_lake(old: Lake, new: Lake, *, batch_rows: int = BATCH_ROWS) -> dict[str, int]:
    """Copy every table of ``old`` into the empty ``new`` under the current contract; return the rows
    written per table (the identity map's include the keys taken from the old Silver)."""
    busy = [layer for layer in c.TABLES if new.exists(layer) and new.count(layer)]
    if busy:
        raise MigrationError(
            f"the new lake already holds rows in {', '.join(busy)}: migrate into an empty prefix"
        )
    written: dict[str, int] = {}
    known = KnownKeys()
    # The identity map first (a lake that has one), so Silver's keys add only the ones it lacks.
    layers = sorted(c.TABLES, key=lambda layer: layer != "patient_keys")
    for layer in layers:
        if not old.exists(layer):
            continue
        spec = c.TABLES[layer]
        written[spec.name] = 0
        for batch in _batches(old, layer, batch_rows):
            if layer == "silver" and c.PATIENT_ID in batch.column_names:
                pairs = {n: pc.cast(batch[n], pa.string()) for n in (c.PATIENT_KEY, c.PATIENT_ID)}
                keys = known.new_rows(pa.table({**pairs, c.TIMESTAMP: batch[c.TIMESTAMP]}))
                new.append("patient_keys", keys)
                written[c.PATIENT_KEYS_TABLE] = written.get(c.PATIENT_KEYS_TABLE, 0) + keys.num_rows
            elif layer == "patient_keys":
                known.keys = pa.concat_arrays(
                    [known.keys, batch[c.PATIENT_KEY].combine_chunks().cast(pa.string())]
                )
            new.append(layer, _conformed(batch, spec.schema))
            written[spec.name] += batch.num_rows
        new.ensure(layer)  # an empty table too: the new lake has what the old one had
        log.info("migrated %s: %d rows", spec.name, written[spec.name])
    return written


def _batches(lake: Lake, layer: c.Layer, batch_rows: int) -> Iterator[pa.Table]:
    """The table's rows in batches of at most ``batch_rows``, whatever its schema (it is the old one)."""
    dt = DeltaTable(lake.uri(layer), storage_options=lake.settings.storage_options)
    for batch in dt.to_pyarrow_dataset().to_batches(batch_size=batch_rows):
        if batch.num_rows:
            yield pa.Table.from_batches([batch])


def _conformed(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` with the nullable columns ``schema`` has gained, as nulls (``Lake.append`` keeps the
    contract's columns, leaving the dropped ones behind, and casts string views back to strings)."""
    for f in schema:
        if f.name not in rows.column_names:
            if not f.nullable:
                raise MigrationError(f"{f.name} is required by the contract and not in the old table")
            rows = rows.append_column(f, pa.nulls(rows.num_rows, f.type))
    return rows


# --- CLI -------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Copy a lake into a new, empty prefix under the current contract (columns it dropped"
        " left behind, the identity map filled from Silver). The old lake is not changed.",
    )
    p.add_argument(
        "--from", dest="source", required=True, help="the old lake (directory or gs://bucket/prefix)"
    )
    p.add_argument("--to", dest="target", required=True, help="the new lake: an empty prefix")
    p.add_argument("--batch-rows", type=int, default=BATCH_ROWS, help="rows per read batch and per append")
    p.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, fmt="%(levelname)s %(name)s: %(message)s")
    if args.batch_rows <= 0:
        return usage_error(parser, "--batch-rows must be > 0")
    try:
        old, new = Lake(lake_from_uri(args.source)), Lake(lake_from_uri(args.target))
    except ConfigError as exc:
        return usage_error(parser, str(exc))
    if old.uri("silver") == new.uri("silver"):
        return usage_error(parser, "--from and --to are the same lake")
    try:
        written = migrate_lake(old, new, batch_rows=args.batch_rows)
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"rows_by_table": written}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
