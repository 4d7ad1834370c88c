"""Regenerate the dashboard screenshots in docs/images/ (used by docs/dashboards.md and looker/README.md).

    python -m harness.screenshots [--out docs/images] [--warehouse FILE]

Without ``--warehouse`` it builds the sample warehouse (``harness.dashboard_sample``: a seeded
simulated cohort through the real Silver/Gold code) in a temporary directory. It serves the dashboard
on a free loopback port and photographs the four pages with headless Chromium (installed with apt-get
when missing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from dashboard import browser
from dashboard.server import Dashboard, DashboardServer

# (file name, path, window height): heights fit the sample's 24 patients.
SHOTS: Final = (
    ("dashboard-high-risk.png", "high-risk", 1600),
    ("dashboard-ward-overview.png", "wards", 1900),
    ("dashboard-hospital-trends.png", "trends", 2000),
    ("dashboard-patient-detail.png", "patient", 1300),
)
DEFAULT_OUT: Final = Path(__file__).resolve().parents[1] / "docs" / "images"


def sample_warehouse(path: Path) -> None:
    from harness.dashboard_sample import build_sample  # noqa: PLC0415
    from warehouse.duck import DuckWarehouse  # noqa: PLC0415

    sample = build_sample()
    with DuckWarehouse(path) as wh:
        wh.ensure()
        for table, rows in sample.tables.items():
            wh.write(table, rows)


def take(url: str, out: Path, *, width: int = 1400) -> list[Path]:
    written = []
    for name, path, height in SHOTS:
        written.append(browser.screenshot(f"{url}{path}", out / name, width=width, height=height))
        print(f"wrote {out / name}", flush=True)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.screenshots", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--warehouse", type=Path, default=None, help="an existing DuckDB warehouse (read-only)")
    p.add_argument("--width", type=int, default=1400)
    args = p.parse_args(argv)
    try:
        browser.ensure_chromium()
    except browser.ChromiumUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from warehouse.duck import DuckWarehouse  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="dashboard-shots-") as tmp:
        path = args.warehouse
        if path is None:
            path = Path(tmp) / "warehouse.duckdb"
            sample_warehouse(path)
        warehouse = DuckWarehouse(path, read_only=True)
        server = DashboardServer(Dashboard(warehouse, refresh_seconds=0))
        server.start()
        try:
            take(server.url, args.out, width=args.width)
        finally:
            server.stop()
            warehouse.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
