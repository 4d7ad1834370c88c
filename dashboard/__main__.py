"""Serve the local dashboard over the DuckDB warehouse views.

    python -m dashboard --warehouse var/demo/warehouse.duckdb \\
        [--lake var/demo/lake --sync-seconds 5] [--host 127.0.0.1] [--port 8050] [--refresh-seconds 5]

With ``--lake`` this process owns the DuckDB file (DuckDB allows one writing process) and copies what
changed in the lake into it every ``--sync-seconds`` while it serves; without, it opens the file
read-only (then nothing else may hold it for writing). ``--port 0`` picks a free port. The URL is
printed on the first line of standard output; SIGTERM or Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from dashboard.server import DEFAULT_REFRESH_SECONDS, Dashboard, DashboardServer, LakeSync
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__.split("\n")[0])
    p.add_argument("--warehouse", required=True, help="DuckDB warehouse file, e.g. var/demo/warehouse.duckdb")
    p.add_argument(
        "--lake", default=None, help="lake root (local or gs://): sync it into the warehouse while serving"
    )
    p.add_argument("--sync-seconds", type=float, default=5.0, help="seconds between two syncs (with --lake)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8050, help="port (0: any free port)")
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name users reach the dashboard by (repeatable); requests for other names are refused"
        " (loopback and the --host address always pass)",
    )
    p.add_argument(
        "--refresh-seconds", type=int, default=DEFAULT_REFRESH_SECONDS, help="page auto-refresh (0: off)"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sync_seconds <= 0:
        return usage_error(parser, "--sync-seconds must be > 0")
    if args.refresh_seconds < 0 or not 0 <= args.port <= 65535:
        return usage_error(parser, "--refresh-seconds must be >= 0 and --port within 0..65535")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # the sync logs every table on every run; the server logs what changed
        logging.getLogger("warehouse.sync").setLevel(logging.WARNING)
    from warehouse.duck import DuckWarehouse, WarehouseError  # noqa: PLC0415 - heavy imports

    sync: LakeSync | None = None
    try:
        if args.lake:
            from vitals_lake.config import lake_from_uri  # noqa: PLC0415
            from vitals_lake.lake import Lake  # noqa: PLC0415
            from warehouse.sync import sync_lake  # noqa: PLC0415

            warehouse = DuckWarehouse(args.warehouse)
            warehouse.ensure()
            lake = Lake(lake_from_uri(args.lake))
            sync = LakeSync(lambda: sync_lake(lake, warehouse), seconds=args.sync_seconds)
        else:
            if not Path(args.warehouse).is_file():
                print(
                    f"error: no warehouse at {args.warehouse}; create it with "
                    "`python -m warehouse sync --lake LAKE --warehouse FILE`, or pass --lake",
                    file=sys.stderr,
                )
                return 2
            warehouse = DuckWarehouse(args.warehouse, read_only=True)
    except ConfigError as exc:  # e.g. a malformed --lake
        return usage_error(parser, str(exc))
    except (WarehouseError, OSError) as exc:
        print(f"error: cannot open the warehouse {args.warehouse}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - e.g. duckdb's lock error while another process writes
        print(
            f"error: cannot open the warehouse {args.warehouse}: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 2

    server = DashboardServer(
        Dashboard(warehouse, refresh_seconds=args.refresh_seconds, sync=sync),
        host=args.host,
        port=args.port,
        extra_hosts=args.allowed_host,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(f"Vitals Lake dashboard: {server.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        logging.getLogger(__name__).info("stopping")
        server.stop()
        warehouse.close()
    print("dashboard stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
