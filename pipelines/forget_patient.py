"""``vitals-lake forget-patient``: remove one patient from the lake and the warehouse, with an audit row.

    python -m pipelines.forget_patient --lake LAKE --requested-by WHO --reason WHY
        [--patient-id ID | --patient-id-file FILE] [--warehouse var/demo/warehouse.duckdb]
        [--bigquery] [--vacuum-now] [--alert-ids-out FILE] [--json]

The id is read from ``--patient-id-file`` (or standard input with ``-``) when the shell history should
not keep it. Output names the pseudonymous key and the rows deleted per table, never the id. The lake
part is :func:`vitals_lake.erasure.forget_patient`. The warehouse part deletes the patient's rows from
the DuckDB warehouse (:meth:`warehouse.duck.DuckWarehouse.forget_patient`). ``--bigquery`` deletes
them from the BigQuery dataset the environment names (``warehouse/settings.py``: ``VITALS_GCP_PROJECT``,
``VITALS_BQ_DATASET``; :meth:`warehouse.bigquery.BigQuerySink.forget_patient`). BigQuery refuses to
delete rows still in its streaming buffer (up to about 90 minutes after they were streamed): those
tables are reported as pending and the command exits 3; run it again later (the lake part then finds
nothing more to delete). ``--vacuum-now`` also removes the lake's old files at once; use it only while
nothing else writes the lake. Without it, maintenance's vacuum removes them after its retention.

The alert notifier's records (idempotency records and dead letters, which hold alert ids, not the
patient id) are erased by the notifier itself, which deploys on its own: ``--alert-ids-out FILE``
writes the patient's alert ids, and ``python -m notifier.erase --alert-ids-file FILE`` (in
``functions/alert_notifier``, with the function's environment) deletes their records.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, lake_from_uri
from vitals_lake.erasure import forget_patient
from vitals_lake.lake import Lake
from vitals_lake.logs import configure as configure_logging
from vitals_lake.pseudonym import PseudonymKey
from warehouse.settings import BigQuerySettings

PROG = "python -m pipelines.forget_patient"
PENDING = 3  # exit status: BigQuery could not delete every row yet
log = logging.getLogger("forget_patient")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--lake", required=True, help="lake root: a local directory or gs://bucket/prefix")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--patient-id", help="the hospital's patient id")
    who.add_argument("--patient-id-file", help="a file holding the id ('-': standard input)")
    p.add_argument("--requested-by", required=True, help="who asked (kept in the audit row)")
    p.add_argument("--reason", required=True, help="why (kept in the audit row), e.g. a request reference")
    p.add_argument("--warehouse", type=Path, help="also delete from this DuckDB warehouse file")
    p.add_argument(
        "--bigquery",
        action="store_true",
        help="also delete from the BigQuery dataset of VITALS_GCP_PROJECT / VITALS_BQ_DATASET",
    )
    p.add_argument(
        "--vacuum-now",
        action="store_true",
        help="remove the old files at once (zero retention): only while nothing else writes the lake",
    )
    p.add_argument(
        "--alert-ids-out",
        type=Path,
        help="write the patient's alert ids here, one per line, for the notifier's erasure (notifier.erase)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def _patient_id(args: argparse.Namespace) -> str:
    if args.patient_id is not None:
        return str(args.patient_id).strip()
    if args.patient_id_file == "-":
        return sys.stdin.read().strip()
    return Path(args.patient_id_file).read_text(encoding="utf-8").strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(logging.INFO, fmt="%(levelname)s %(name)s: %(message)s")
    try:
        patient_id = _patient_id(args)
        if not patient_id:
            raise ConfigError("the patient id is empty")
        bigquery = BigQuerySettings.from_env() if args.bigquery else None  # checked before any delete
        if args.alert_ids_out is not None and not args.alert_ids_out.parent.is_dir():
            # Checked before any delete too: once the alerts rows are gone, so is the only list of ids.
            raise ConfigError(f"--alert-ids-out: no directory {args.alert_ids_out.parent}")
        lake = Lake(lake_from_uri(args.lake))
        key = PseudonymKey.from_env().secret
        report = forget_patient(
            lake,
            patient_id,
            key=key,
            requested_by=args.requested_by,
            reason=args.reason,
            vacuum_now=args.vacuum_now,
        )
    except (ConfigError, OSError, ValueError) as exc:
        return usage_error(parser, str(exc))
    if args.alert_ids_out is not None:
        # Added to what the file holds: a second run (BigQuery pending) finds no alerts left in the lake
        # and must not blank the ids the first one wrote.
        out = args.alert_ids_out
        held = out.read_text(encoding="utf-8").split() if out.exists() else []
        out.write_text("".join(f"{a}\n" for a in sorted({*held, *report.alert_ids})), encoding="utf-8")
    warehouse: dict[str, int] = {}
    if args.warehouse is not None:
        from warehouse.duck import DuckWarehouse  # noqa: PLC0415 - only with --warehouse (DuckDB: [local])

        with DuckWarehouse(args.warehouse) as wh:
            warehouse = wh.forget_patient(patient_id, report.patient_key)
    bq_deleted: dict[str, int] = {}
    pending: list[str] = []
    if bigquery is not None:
        from warehouse.bigquery import BigQuerySink  # noqa: PLC0415 - the BigQuery client only when asked

        with BigQuerySink(bigquery) as sink:
            erased = sink.forget_patient(patient_id, report.patient_key)
        bq_deleted, pending = erased.deleted, erased.pending
    out = {
        "patient_key": report.patient_key,
        "lake_rows_by_table": report.rows_by_table,
        "lake_rows_deleted": report.rows_deleted,
        "vacuumed_files": report.vacuumed_files,
        "alert_ids": len(report.alert_ids),
        "warehouse_rows_by_table": warehouse,
        "bigquery_rows_by_table": bq_deleted,
        "bigquery_pending_tables": pending,
    }
    # The warehouse's deletions, for the audit trail next to the lake's erasure_log row (key, not id).
    log.info(
        "patient forgotten",
        extra={"fields": {k: v for k, v in out.items() if k != "lake_rows_by_table"}},
    )
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(
            f"forgotten: patient {report.patient_key}: {report.rows_deleted} lake row(s) "
            f"({', '.join(f'{t} {n}' for t, n in report.rows_by_table.items() if n) or 'none'}), "
            f"{sum(warehouse.values())} warehouse row(s), {sum(bq_deleted.values())} BigQuery row(s); "
            + ("old files vacuumed" if report.vacuumed else "old files go at the next maintenance vacuum")
        )
    if report.alert_ids and args.alert_ids_out is None:
        print(
            f"the alert notifier still holds records of {len(report.alert_ids)} alert(s) until they"
            " expire (30 days): pass --alert-ids-out FILE and run python -m notifier.erase"
            " --alert-ids-file FILE in functions/alert_notifier to erase them now",
            file=sys.stderr,
        )
    if pending:
        print(
            f"BigQuery: {', '.join(pending)} still hold rows in the streaming buffer, which cannot be"
            " deleted yet: run the same command again in 90 minutes",
            file=sys.stderr,
        )
        return PENDING
    return 0


if __name__ == "__main__":
    sys.exit(main())
