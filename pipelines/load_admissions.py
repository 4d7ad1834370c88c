"""Load admission CSV drops and the diagnosis mapping into the lake (the Auto Loader stand-in).

    python -m pipelines.load_admissions --landing var/sim/landing \\
        --reference var/sim/reference/diagnosis_mapping.csv --lake var/lake [--watch 30]

One pass by default; with ``--watch SECONDS`` it polls until SIGTERM/SIGINT (finishing the pass in
progress). Each loaded file and each pass's summary is printed. The pseudonym key comes from
``VITALS_PSEUDONYM_KEY`` / ``VITALS_PSEUDONYM_KEY_FILE`` (see ``vitals_lake.pseudonym``).

``--bigquery`` also keeps the warehouse's ``ref_diagnosis_mapping`` current (the views join it; the
pipeline streams only Gold, alerts and data quality): each pass sends the lake's diagnosis rows loaded
after the newest load BigQuery holds, so a pass with nothing new sends nothing and a failed pass is
made up by the next. It also sends the Gold rows a pass back-filled (an admission that arrived after
the patient's readings), stamped with the pass's ``updated_at``, so the views take them over the rows
the stream sent before. The warehouse is the one ``VITALS_GCP_PROJECT`` / ``VITALS_BQ_DATASET`` (and
``VITALS_BQ_ENDPOINT`` for an emulator) name.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.admissions import LoadReport, refresh
from vitals_lake.backfill import backfill_gold, gold_rows_updated_at
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, lake_from_uri
from vitals_lake.lake import Lake
from vitals_lake.logs import configure as configure_logging
from vitals_lake.pseudonym import PseudonymKey
from warehouse.sync import send
from warehouse.tables import WAREHOUSE_TABLES

if TYPE_CHECKING:
    from warehouse.bigquery import BigQuerySink

log = logging.getLogger("pipelines.load_admissions")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.load_admissions", description=__doc__.split("\n")[0]
    )
    p.add_argument("--landing", required=True, help="folder (or gs:// prefix) of patients_daily_file_*.csv")
    p.add_argument("--reference", required=True, help="diagnosis_mapping.csv (local path or gs://)")
    p.add_argument("--lake", required=True, help="lake root: a local directory or gs://bucket/prefix")
    p.add_argument(
        "--watch", type=float, metavar="SECONDS", help="poll every SECONDS until SIGTERM (default: one pass)"
    )
    p.add_argument(
        "--require-key", action="store_true", help="refuse the development pseudonym key (use in the cloud)"
    )
    p.add_argument(
        "--bigquery",
        action="store_true",
        help="keep ref_diagnosis_mapping current in BigQuery too (VITALS_GCP_PROJECT, VITALS_BQ_DATASET)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _print_load(path: str, rows: int) -> None:
    print(f"loaded {path}: {rows} rows", flush=True)


def _print_report(report: LoadReport) -> None:
    print(report.summary(), flush=True)
    fields = {
        "files": len(report.files),
        "rows": report.rows,
        "patients_recomputed": report.patients_recomputed,
        "patients_changed": report.patients_changed,
        "diagnoses_reloaded": report.diagnoses_reloaded,
        "failed_files": len(report.failed),
    }
    log.log(logging.ERROR if report.failed else logging.INFO, "admissions pass", extra={"fields": fields})
    if report.patient_ids:
        # A count, never the ids: job logs are read far more widely than the identity table.
        print(f"changed patients: {len(report.patient_ids)}", flush=True)


def send_new_diagnoses(lake: Lake, sink: BigQuerySink) -> int:
    """Send the lake's diagnosis rows loaded after the newest load BigQuery holds; rows inserted."""
    spec = WAREHOUSE_TABLES[c.DIAGNOSIS_TABLE]
    assert spec.version is not None  # loaded_at: the reference is appended load by load
    rows = lake.read("diagnoses")
    newest = sink.newest(spec.name, spec.version)
    if newest is not None:
        rows = rows.filter(pc.field(spec.version) > pa.scalar(newest, rows.schema.field(spec.version).type))
    return send(sink, spec.name, rows).inserted if rows.num_rows else 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level.upper(), fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.watch is not None and args.watch <= 0:
        return usage_error(parser, "--watch must be > 0 seconds")
    try:
        key = PseudonymKey.from_env(allow_development_default=not args.require_key)
        lake = Lake(lake_from_uri(args.lake))
        warehouse: BigQuerySink | None = None
        if args.bigquery:
            from warehouse.bigquery import BigQuerySink  # noqa: PLC0415 - the BigQuery client only when asked

            warehouse = BigQuerySink.from_env()
    except ConfigError as exc:
        return usage_error(parser, str(exc))

    def once() -> LoadReport:
        report = refresh(args.landing, args.reference, lake, key=key.secret, on_load=_print_load)
        _print_report(report)
        if report.patient_ids:
            stamp = time.time_ns() // 1000
            updated = backfill_gold(lake, report.patient_ids, updated_at_us=stamp)
            print(f"gold back-filled: {updated} rows of {len(report.patient_ids)} patients", flush=True)
            if warehouse is not None and updated:
                gold = gold_rows_updated_at(lake, report.patient_ids, stamp)
                gold_sent = send(warehouse, c.GOLD_TABLE, gold)
                print(f"{c.GOLD_TABLE} -> BigQuery: {gold_sent.inserted} back-filled row(s)", flush=True)
        if warehouse is not None:
            sent = send_new_diagnoses(lake, warehouse)
            print(f"{c.DIAGNOSIS_TABLE} -> BigQuery: {sent} new row(s)", flush=True)
        return report

    if args.watch is None:
        return 1 if once().failed else 0

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping after the current pass", signal.Signals(signum).name)
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    while not stop.is_set():
        try:
            once()
        except Exception:  # a bad pass (storage hiccup, broken file) must not end the watch
            log.exception("admissions pass failed; retrying in %.0f s", args.watch)
        stop.wait(args.watch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
