"""``vitals-lake replay-dead-letters``: insert the rows BigQuery refused into their tables again.

    VITALS_GCP_PROJECT=P VITALS_BQ_DATASET=vitals_warehouse \\
        python -m pipelines.warehouse_replay [--table gold_patient_summary] \\
        [--since 2026-12-04T08:00:00Z] [--json]

The pipeline's warehouse writer sends a row BigQuery refuses (a table that drifted from the contract,
a row over the request limit) to the dataset's ``dead_letter`` table with the error, and goes on.
Once the cause is fixed, this reads the dead letters (one table's with ``--table``, those that failed
at or after ``--since``) and inserts each row again under its original insert id
(:meth:`warehouse.bigquery.BigQuerySink.replay_dead_letters`). Rows refused again stay in
``dead_letter`` and are counted, with their errors; the command exits 1 if any were. The dead letters
are not deleted: the report gives the failure times it covered, so the next replay can start past
them with ``--since``. The settings come from the environment (``warehouse/settings.py``), so
``VITALS_BQ_ENDPOINT`` points it at the local emulator.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Final

from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError
from vitals_lake.logs import configure as configure_logging
from warehouse.settings import BigQuerySettings
from warehouse.tables import WAREHOUSE_TABLES

PROG: Final = "python -m pipelines.warehouse_replay"
log = logging.getLogger("warehouse_replay")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n")[0])
    p.add_argument("--table", choices=sorted(WAREHOUSE_TABLES), help="only this table's dead letters")
    p.add_argument(
        "--since", help="only letters that failed at or after this ISO 8601 time (UTC if no offset)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        since = _since(args.since)
    except ValueError:
        return usage_error(parser, f"--since must be an ISO 8601 time: {args.since!r}")
    try:
        settings = BigQuerySettings.from_env()
    except ConfigError as exc:
        return usage_error(parser, str(exc))
    configure_logging(logging.INFO, fmt="%(levelname)s %(name)s: %(message)s")
    from warehouse.bigquery import BigQuerySink  # noqa: PLC0415 - the BigQuery client only when it runs

    with BigQuerySink(settings) as sink:
        report = sink.replay_dead_letters(table=args.table, since=since)
    fields = {
        "dataset": settings.dataset,
        "read": report.read,
        "replayed": report.replayed,
        "refused_again": report.refused_again,
        "unrecoverable": report.unrecoverable,
    }
    log.info("dead letters replayed", extra={"fields": fields})
    if args.json:
        print(json.dumps({**asdict(report), **fields}, indent=2, default=str))
    else:
        span = (
            f" (failed {report.first_failed_at} .. {report.last_failed_at})" if report.first_failed_at else ""
        )
        print(
            f"{settings.dataset}.dead_letter: {report.read} read{span}, {report.replayed} replayed,"
            f" {report.refused_again} refused again, {report.unrecoverable} unrecoverable"
        )
        for error in report.errors:
            print(f"  refused again: {error}")
    return 1 if report.refused_again else 0


if __name__ == "__main__":
    sys.exit(main())
