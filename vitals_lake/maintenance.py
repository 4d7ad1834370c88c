"""Delta table maintenance: expire old partitions, compact and z-order finished ones, checkpoint,
vacuum, clean the log.

Retention: a table's date partitions older than its retention (``TableSpec.retention_days`` in the
contract, or ``--retention-days TABLE=DAYS``) are deleted (a partition delete removes whole files, no
rewrite); vacuum then removes their files once ``retention_hours`` have passed, and from then on the
rows are gone from the table's history too. ``--keep-expired`` turns this off.

Safe while the stream writes:

* Only **finished** date partitions are rewritten (strictly before today UTC, minus ``older_than_days``):
  the live partition the stream appends to is never touched. Unpartitioned tables (small reference and
  commit-log tables) are compacted whole.
* OPTIMIZE does not change data, so delta-rs rebases it over concurrent blind appends by itself
  (``max_commit_retries``). A real conflict (a MERGE or delete that touched the same files) raises
  ``CommitFailedError``: the partition is re-planned on a fresh snapshot and retried with backoff.
  Appends are never lost: a losing OPTIMIZE is simply retried, it never rewrites what it did not read.
  The other way round, a writer's MERGE into a partition being rewritten (a late Gold correction) can
  lose with ``CommitFailedError``: writers that MERGE must retry, or run this after their lateness.
* Vacuum keeps 168 h by default (in-flight writers' uncommitted files and time travel stay safe);
  shorter only with ``allow_short_retention`` (``enforce_retention_duration=False``). Vacuum only
  lists what it would delete unless ``vacuum_delete`` is set.

CLI::

    python -m vitals_lake.maintenance --lake var/lake|gs://bucket/prefix [--service-account FILE]
        [--table silver ...] [--older-than-days N] [--retention-hours H [--allow-short-retention]]
        [--vacuum-delete] [--no-z-order] [--retention-days TABLE=DAYS ...] [--keep-expired]
        [--dry-run] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal, TypeVar

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import CommitProperties

from vitals_lake import contract as c
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, lake_from_uri
from vitals_lake.lake import Lake, writer_properties
from vitals_lake.logs import configure as configure_logging
from vitals_lake.logs import log_format

log = logging.getLogger(__name__)

DEFAULT_RETENTION_HOURS: Final = 168  # delta-rs refuses less unless enforce_retention_duration=False
SMALL_FILE_BYTES: Final = 32 * 1024 * 1024  # a partition needs work when it holds 2+ files below this
MIN_SMALL_FILES: Final = 2
CONFLICT_ATTEMPTS: Final = 6  # re-plans of one partition after a real commit conflict
BACKOFF_BASE_S: Final = 0.1  # doubled per attempt, with jitter so two maintainers do not stay in step
BACKOFF_MAX_S: Final = 5.0
DELTA_COMMIT_RETRIES: Final = 30  # delta-rs's own rebase over compatible (append) commits
# Z-order by the patient alone (its id where the table keeps it, else its key; the first that the
# table has). Measured (100k rows, 1,000 patients, one day, 10 files): z-order on (patient_id,
# timestamp) left every file spanning every patient (a patient lookup read 9 of 9 files, an hour read
# 7 of 9), while patient_id alone put each patient in 1 file of 10. Time needs no help: a finished
# partition is one day, and compaction keeps the arrival (time) order.
ZORDER_COLUMNS: Final = (c.PATIENT_ID, c.PATIENT_KEY)

Operation = Literal["compact", "z_order", "skipped"]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class MaintenanceOptions:
    older_than_days: int = 0  # partitions with date < today - N are finished (0: everything before today)
    retention_hours: int = DEFAULT_RETENTION_HOURS
    allow_short_retention: bool = False
    vacuum_delete: bool = False  # False: vacuum only lists the files it would delete
    dry_run: bool = False  # True: plan and list only, change nothing
    z_order: bool = True
    expire: bool = True  # delete partitions older than their table's retention
    retention_days: Mapping[c.Layer, int | None] = field(default_factory=dict)  # overrides the contract's

    def keep_days(self, layer: c.Layer) -> int | None:
        """How many days of this table's partitions are kept (None: all)."""
        return self.retention_days.get(layer, c.TABLES[layer].retention_days)

    def __post_init__(self) -> None:
        for layer, days in self.retention_days.items():
            if days is not None and days < 1:
                raise ConfigError(f"retention of {layer} must be at least 1 day, got {days}")
        if self.older_than_days < 0:
            raise ConfigError(f"older_than_days must be >= 0, got {self.older_than_days}")
        if self.retention_hours < 0:
            raise ConfigError(f"retention_hours must be >= 0, got {self.retention_hours}")
        if self.retention_hours < DEFAULT_RETENTION_HOURS and not self.allow_short_retention:
            raise ConfigError(
                f"retention_hours={self.retention_hours} is below {DEFAULT_RETENTION_HOURS} h: a running "
                "writer's not-yet-committed files and time travel could be deleted; pass "
                "allow_short_retention (--allow-short-retention) to do it anyway"
            )


@dataclass
class PartitionReport:
    partition: str  # "event_date=2026-11-21", or "" for a whole unpartitioned table
    operation: Operation
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int
    seconds: float = 0.0
    attempts: int = 0  # optimize calls made (more than 1: it lost a commit race and was re-planned)
    reason: str = ""


@dataclass
class TableReport:
    layer: str
    table: str
    exists: bool = True
    version_before: int = -1
    version_after: int = -1
    partitions: list[PartitionReport] = field(default_factory=list)
    live_partitions: list[str] = field(default_factory=list)  # left alone: today's (or not finished yet)
    expired_partitions: list[str] = field(default_factory=list)  # older than the retention: deleted
    expired_rows: int = 0
    checkpoint_version: int | None = None
    vacuum_files: list[str] = field(default_factory=list)
    vacuum_deleted: bool = False
    metadata_cleaned: bool = False
    seconds: float = 0.0


@dataclass
class MaintenanceReport:
    started_at: str
    cutoff: str  # partitions strictly before this date were finished
    dry_run: bool
    tables: list[TableReport] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [
            f"maintenance {'(dry run) ' if self.dry_run else ''}at {self.started_at}: "
            f"finished partitions are before {self.cutoff}; {self.seconds:.2f} s"
        ]
        for t in self.tables:
            if not t.exists:
                lines.append(f"  {t.table}: no table")
                continue
            lines.append(
                f"  {t.table}: version {t.version_before} -> {t.version_after}, "
                f"checkpoint {t.checkpoint_version}, vacuum {len(t.vacuum_files)} file(s) "
                f"{'deleted' if t.vacuum_deleted else 'listed'}, {t.seconds:.2f} s"
            )
            for p in t.partitions:
                lines.append(
                    f"    {p.partition or '(table)'}: {p.operation} "
                    f"files {p.files_before} -> {p.files_after}, "
                    f"bytes {p.bytes_before} -> {p.bytes_after}, {p.seconds:.2f} s"
                    + (f", {p.attempts} attempts" if p.attempts > 1 else "")
                    + (f" ({p.reason})" if p.reason else "")
                )
            if t.expired_partitions:
                done = f"{t.expired_rows} row(s) deleted" if not self.dry_run else "would be deleted"
                lines.append(f"    past retention: {', '.join(t.expired_partitions)} ({done})")
            if t.live_partitions:
                lines.append(f"    left alone: {', '.join(t.live_partitions)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Partition:
    column: str | None
    value: date | None
    files: int
    bytes: int
    small_files: int

    @property
    def label(self) -> str:
        return "" if self.column is None or self.value is None else f"{self.column}={self.value.isoformat()}"

    @property
    def filters(self) -> list[tuple[str, str, Any]] | None:
        if self.column is None or self.value is None:
            return None
        return [(self.column, "=", self.value.isoformat())]


def zorder_columns(layer: c.Layer) -> list[str]:
    """The first of ``ZORDER_COLUMNS`` the table has (none: compact only)."""
    spec = c.TABLES[layer]
    names = set(spec.schema.names) - set(spec.partition_by)
    return [col for col in ZORDER_COLUMNS if col in names][:1]


def finished_cutoff(today: date, older_than_days: int) -> date:
    """Partitions with a date strictly before this are finished (the stream no longer writes them)."""
    return today - timedelta(days=older_than_days)


def utc_now() -> datetime:
    """The clock that decides which partitions are finished or expired (one seam, so a test that
    dates its rows once is not broken by midnight UTC passing while it runs)."""
    return datetime.now(UTC)


def maintain(
    lake: Lake,
    layers: Iterable[c.Layer] | None = None,
    options: MaintenanceOptions | None = None,
    *,
    now: datetime | None = None,
) -> MaintenanceReport:
    """Maintain the given tables (default: all of the contract's tables) and return what was done."""
    opts = options or MaintenanceOptions()
    started = now or utc_now()
    cutoff = finished_cutoff(started.astimezone(UTC).date(), opts.older_than_days)
    report = MaintenanceReport(
        started_at=started.isoformat(), cutoff=cutoff.isoformat(), dry_run=opts.dry_run
    )
    t0 = time.perf_counter()
    today = started.astimezone(UTC).date()
    for layer in layers or c.TABLES:
        report.tables.append(maintain_table(lake, layer, opts, cutoff=cutoff, today=today))
    report.seconds = time.perf_counter() - t0
    return report


def maintain_table(
    lake: Lake, layer: c.Layer, opts: MaintenanceOptions, *, cutoff: date, today: date | None = None
) -> TableReport:
    spec = c.TABLES[layer]
    report = TableReport(layer=layer, table=spec.name)
    t0 = time.perf_counter()
    if not lake.exists(layer):
        report.exists = False
        return report
    uri, storage = lake.uri(layer), lake.settings.storage_options
    report.version_before = DeltaTable(uri, storage_options=storage).version()
    columns = zorder_columns(layer) if opts.z_order else []
    _expire(uri, storage, spec, opts, layer=layer, today=today or utc_now().date(), report=report)

    for part in _partitions(DeltaTable(uri, storage_options=storage), spec):
        if part.value is not None and part.value >= cutoff:
            report.live_partitions.append(part.label)
        elif part.small_files < MIN_SMALL_FILES:
            report.partitions.append(
                PartitionReport(
                    part.label,
                    "skipped",
                    part.files,
                    part.files,
                    part.bytes,
                    part.bytes,
                    reason="already compact",
                )
            )
        elif opts.dry_run:
            op: Operation = "z_order" if columns else "compact"
            report.partitions.append(
                PartitionReport(
                    part.label, op, part.files, part.files, part.bytes, part.bytes, reason="dry run"
                )
            )
        else:
            report.partitions.append(_optimize_partition(uri, storage, spec, part, columns))

    dt = DeltaTable(uri, storage_options=storage)
    if not opts.dry_run:
        # After the rewrite: readers replay one checkpoint instead of every JSON commit since the last.
        dt.create_checkpoint()
        report.checkpoint_version = dt.version()
    report.vacuum_files, report.vacuum_deleted = _vacuum(uri, storage, opts)
    if not opts.dry_run:
        # Removes log files older than delta.logRetentionDuration that a checkpoint already covers.
        DeltaTable(uri, storage_options=storage).cleanup_metadata()
        report.metadata_cleaned = True
    report.version_after = DeltaTable(uri, storage_options=storage).version()
    report.seconds = time.perf_counter() - t0
    return report


def expiry_date(today: date, keep_days: int) -> date:
    """Partitions dated strictly before this are past their retention (today and ``keep_days - 1`` days
    before it are kept)."""
    return today - timedelta(days=keep_days - 1)


def _expire(
    uri: str,
    storage: dict[str, str],
    spec: c.TableSpec,
    opts: MaintenanceOptions,
    *,
    layer: c.Layer,
    today: date,
    report: TableReport,
) -> None:
    """Delete the date partitions past the table's retention (whole files: a partition delete)."""
    keep = opts.keep_days(layer)
    column = spec.date_partition
    if not opts.expire or keep is None or column is None:
        return
    oldest = expiry_date(today, keep)
    parts = _partitions(DeltaTable(uri, storage_options=storage), spec)
    report.expired_partitions = [p.label for p in parts if p.value is not None and p.value < oldest]
    if not report.expired_partitions or opts.dry_run:
        return

    def delete() -> dict[str, Any]:
        return DeltaTable(uri, storage_options=storage).delete(f"{column} < '{oldest.isoformat()}'")

    metrics, _ = with_conflict_retries(delete, what=f"{spec.name}: expire before {oldest}")
    report.expired_rows = int(metrics.get("num_deleted_rows", 0))
    log.info(
        "%s: %d row(s) in %d partition(s) before %s expired",
        spec.name,
        report.expired_rows,
        len(report.expired_partitions),
        oldest,
    )


def _partitions(dt: DeltaTable, spec: c.TableSpec) -> list[_Partition]:
    """File count, bytes and small-file count per date partition (one entry for an unpartitioned table)."""
    column = spec.partition_by[0] if spec.partition_by else None
    actions = pa.table(dt.get_add_actions(flatten=True))
    sizes = actions.column("size_bytes").to_pylist()
    values: list[date | None] = (
        actions.column(f"partition.{column}").to_pylist() if column else [None] * len(sizes)
    )
    grouped: dict[date | None, list[int]] = {}
    for value, size in zip(values, sizes, strict=True):
        grouped.setdefault(value, []).append(int(size))
    if not grouped and column is None:
        grouped[None] = []
    return [
        _Partition(column, value, len(s), sum(s), sum(1 for b in s if b < SMALL_FILE_BYTES))
        for value, s in sorted(grouped.items(), key=lambda kv: (kv[0] is not None, kv[0] or date.min))
    ]


def _optimize_partition(
    uri: str, storage: dict[str, str], spec: c.TableSpec, part: _Partition, zorder: list[str]
) -> PartitionReport:
    """Compact (or z-order) one finished partition, re-planning on a fresh snapshot after a conflict."""
    t0 = time.perf_counter()
    commit = CommitProperties(max_commit_retries=DELTA_COMMIT_RETRIES)

    def run() -> dict[str, Any]:
        optimizer = DeltaTable(uri, storage_options=storage).optimize
        props = writer_properties(spec)  # compaction keeps the table's compression
        if zorder:
            return optimizer.z_order(
                zorder, partition_filters=part.filters, commit_properties=commit, writer_properties=props
            )
        return optimizer.compact(
            partition_filters=part.filters, commit_properties=commit, writer_properties=props
        )

    metrics, attempts = with_conflict_retries(run, what=f"{spec.name} {part.label or '(table)'}")
    after = {p.value: p for p in _partitions(DeltaTable(uri, storage_options=storage), spec)}.get(part.value)
    log.info("%s %s: %s", spec.name, part.label, metrics)
    return PartitionReport(
        partition=part.label,
        operation="z_order" if zorder else "compact",
        files_before=part.files,
        files_after=after.files if after else 0,
        bytes_before=part.bytes,
        bytes_after=after.bytes if after else 0,
        seconds=time.perf_counter() - t0,
        attempts=attempts,
    )


def _vacuum(uri: str, storage: dict[str, str], opts: MaintenanceOptions) -> tuple[list[str], bool]:
    delete = opts.vacuum_delete and not opts.dry_run

    def run() -> list[str]:
        return list(
            DeltaTable(uri, storage_options=storage).vacuum(
                retention_hours=opts.retention_hours,
                dry_run=not delete,
                enforce_retention_duration=not opts.allow_short_retention,
                commit_properties=CommitProperties(max_commit_retries=DELTA_COMMIT_RETRIES),
            )
        )

    files, _ = with_conflict_retries(run, what=f"vacuum {uri}")
    return files, delete


def with_conflict_retries(
    action: Callable[[], T],
    *,
    what: str,
    attempts: int = CONFLICT_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, int]:
    """Run ``action`` (which must re-read the table itself) until it commits; back off on conflicts."""
    for attempt in range(1, attempts + 1):
        try:
            return action(), attempt
        except CommitFailedError as exc:
            if attempt == attempts:
                raise
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)) * (1 + random.random())
            log.warning("%s: commit conflict (%s); retry %d in %.2f s", what, exc, attempt, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def resolve_layers(names: Sequence[str]) -> list[c.Layer]:
    """Accept layer keys (``silver``) or table names (``silver_patient_vitals``)."""
    by_table = {spec.name: layer for layer, spec in c.TABLES.items()}
    layers: list[c.Layer] = []
    for name in names:
        if name in c.TABLES:
            layers.append(name)
        elif name in by_table:
            layers.append(by_table[name])
        else:
            known = ", ".join([*c.TABLES, *by_table])
            raise ConfigError(f"unknown table {name!r}; known: {known}")
    return layers


def parse_retention(specs: Sequence[str]) -> dict[c.Layer, int | None]:
    """``["bronze=14", "silver=forever"]`` -> {layer: days or None}."""
    out: dict[c.Layer, int | None] = {}
    for spec in specs:
        name, sep, days = spec.partition("=")
        if not sep:
            raise ConfigError(f"--retention-days {spec!r}: expected TABLE=DAYS")
        [layer] = resolve_layers([name])
        if days == "forever":
            out[layer] = None
        elif days.isdigit():
            out[layer] = int(days)
        else:
            raise ConfigError(f"--retention-days {spec!r}: DAYS must be a whole number or 'forever'")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vitals_lake.maintenance",
        description="Compact / z-order finished partitions, checkpoint, vacuum and clean the Delta log.",
    )
    p.add_argument("--lake", required=True, help="lake root: a local directory or gs://bucket/prefix")
    p.add_argument("--service-account", help="service-account JSON for a gs:// lake (default: ADC)")
    p.add_argument(
        "--table", action="append", default=[], help="layer or table name (repeatable; default all)"
    )
    p.add_argument(
        "--older-than-days",
        type=int,
        default=0,
        help="optimize partitions dated before today UTC minus N days (default 0: all before today)",
    )
    p.add_argument("--retention-hours", type=int, default=DEFAULT_RETENTION_HOURS)
    p.add_argument(
        "--allow-short-retention",
        action="store_true",
        help=f"allow --retention-hours below {DEFAULT_RETENTION_HOURS} (enforce_retention_duration=False)",
    )
    p.add_argument(
        "--vacuum-delete", action="store_true", help="delete the files vacuum lists (default: list)"
    )
    p.add_argument("--no-z-order", action="store_true", help="compact only, never z-order")
    p.add_argument(
        "--retention-days",
        action="append",
        default=[],
        metavar="TABLE=DAYS",
        help="keep this many days of a table's partitions (repeatable; DAYS 'forever' keeps all;"
        " default: the contract's retention per table)",
    )
    p.add_argument("--keep-expired", action="store_true", help="delete no partition past its retention")
    p.add_argument("--dry-run", action="store_true", help="plan and list only; change nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING, fmt="%(levelname)s %(name)s: %(message)s")
    try:
        options = MaintenanceOptions(
            older_than_days=args.older_than_days,
            retention_hours=args.retention_hours,
            allow_short_retention=args.allow_short_retention,
            vacuum_delete=args.vacuum_delete,
            dry_run=args.dry_run,
            z_order=not args.no_z_order,
            expire=not args.keep_expired,
            retention_days=parse_retention(args.retention_days),
        )
        layers = resolve_layers(args.table) if args.table else None
        lake = Lake(lake_from_uri(args.lake, service_account_path=args.service_account))
    except ConfigError as exc:
        return usage_error(parser, str(exc))
    report = maintain(lake, layers, options)
    for table in report.tables:  # one entry per table, with the fields an operator filters on
        fields = {
            "table": table.table,
            "version": table.version_after,
            "expired_partitions": len(table.expired_partitions),
            "expired_rows": table.expired_rows,
            "vacuum_files": len(table.vacuum_files),
            "seconds": round(table.seconds, 3),
        }
        # Expiry deletes data: it is logged at the CLI's level (warning), the rest at info.
        level = logging.WARNING if table.expired_rows else logging.INFO
        log.log(level, "table maintained", extra={"fields": fields})
    # One line in the cloud (a JSON document per line is one log entry there), indented otherwise.
    indent = None if log_format() == "json" else 2
    print(json.dumps(report.to_dict(), indent=indent) if args.json else report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
