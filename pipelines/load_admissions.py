"""Load admission CSV drops and the diagnosis mapping into the lake (the Auto Loader stand-in).

    python -m pipelines.load_admissions --landing var/sim/landing \\
        --reference var/sim/reference/diagnosis_mapping.csv --lake var/lake [--watch 30]

One pass by default; with ``--watch SECONDS`` it polls until SIGTERM/SIGINT (finishing the pass in
progress). Each loaded file and each pass's summary is printed. The pseudonym key comes from
``VITALS_PSEUDONYM_KEY`` / ``VITALS_PSEUDONYM_KEY_FILE`` (see ``vitals_lake.pseudonym``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from vitals_lake.admissions import LoadReport, refresh
from vitals_lake.backfill import backfill_gold
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, lake_from_uri
from vitals_lake.lake import Lake
from vitals_lake.pseudonym import PseudonymKey

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
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _print_load(path: str, rows: int) -> None:
    print(f"loaded {path}: {rows} rows", flush=True)


def _print_report(report: LoadReport) -> None:
    print(report.summary(), flush=True)
    if report.patient_ids:
        # A count, never the ids: job logs are read far more widely than the identity table.
        print(f"changed patients: {len(report.patient_ids)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.watch is not None and args.watch <= 0:
        return usage_error(parser, "--watch must be > 0 seconds")
    try:
        key = PseudonymKey.from_env(allow_development_default=not args.require_key)
        lake = Lake(lake_from_uri(args.lake))
    except ConfigError as exc:
        return usage_error(parser, str(exc))

    def once() -> LoadReport:
        report = refresh(args.landing, args.reference, lake, key=key.secret, on_load=_print_load)
        _print_report(report)
        if report.patient_ids:
            updated = backfill_gold(lake, report.patient_ids)
            print(f"gold back-filled: {updated} rows of {len(report.patient_ids)} patients", flush=True)
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
