"""Growth: what happens to the lake's costs as it fills, measured side by side in one run.

* ``gold MERGE``: ``Lake.upsert`` on ``c.GOLD_KEY`` of one batch of minute rows (half updates of the
  newest minutes, half new minutes; same shape every time) into a Gold table holding N rows and one
  holding 10N rows (older minutes, written in appends of N rows). Each timed run starts from a fresh
  copy of the table. Flat means the ratio is about 1x: the MERGE predicate bounds ``window_start``
  and the date partitions, so older history is pruned rather than rewritten.
* ``files``: Delta files per date partition after K small appends (Silver rows and their Gold minute
  rows, one commit each, as a stream without maintenance writes them) versus after
  ``vitals_lake.maintenance.maintain`` (compaction + z-order of the finished partition).
* ``read a day``: one day's Silver and Gold read back before versus after that maintenance.
* ``commit``: the CPU of a small commit (one row of ``silver_commits``, with its batch marker, as a
  stream makes every commit interval) among the first and among the last of ``commits`` made through
  one ``Lake``, and the same through one delta-rs ``DeltaTable`` object kept open (the control: what
  the Lake used to do). Flat means about 1x.

How the whole batch engine's CPU per reading (Silver, Gold, trends) grows with the lake it writes
into is the ``lake_age`` benchmark (``bench/lake_age.py``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from bench.runner import Context, Result, Variant, benchmark
from ml import evaluate, train
from simulator import read_jsonl
from vitals_lake import contract as c
from vitals_lake.config import lake_from_uri
from vitals_lake.engine import silver_commit_row
from vitals_lake.lake import BatchMarker, Lake
from vitals_lake.maintenance import MaintenanceOptions, maintain
from vitals_lake.summaries import gold_from_silver

NAME: Final = "growth"
TITLE: Final = "Growth: Gold MERGE as Gold grows tenfold, files per partition and day reads with maintenance"
START: Final = datetime(2026, 10, 1, tzinfo=UTC)
LAYERS: Final[tuple[c.Layer, ...]] = ("silver", "gold")


@dataclass(frozen=True)
class Sizes:
    gold_n: int  # Gold rows in the smaller table (the larger holds 10x)
    patients: int  # patients in the synthetic Gold history and in the MERGE batch
    batch_minutes: int  # minutes per patient in the MERGE batch (half existing, half new)
    sim_patients: int  # the simulated day for the file-count / read part
    sim_hours: float
    appends: int  # K small appends into one date partition
    commits: int  # small commits through one Lake (and one DeltaTable object), first vs last timed
    seed: int = 7


FULL: Final = Sizes(
    gold_n=20_000, patients=50, batch_minutes=20, sim_patients=100, sim_hours=2, appends=60, commits=600
)
QUICK: Final = Sizes(
    gold_n=2_000, patients=20, batch_minutes=10, sim_patients=10, sim_hours=1, appends=12, commits=60
)
COMMITS_TIMED: Final = 0.1  # the first and the last tenth of the commits are compared


def synthetic_gold(patients: int, minutes: int, *, first_minute: int, seed: int) -> pa.Table:
    """Minute rows for ``patients`` x ``minutes`` consecutive minutes from ``START + first_minute``."""
    rng = np.random.default_rng(seed + first_minute)
    n = patients * minutes
    pid = np.repeat(np.array([f"P{i:06d}" for i in range(patients)], dtype=object), minutes)
    minute = np.tile(np.arange(first_minute, first_minute + minutes, dtype=np.int64), patients)
    start_us = int(START.timestamp() * 1e6) + minute * 60_000_000
    columns: dict[str, pa.Array] = {}
    for f in c.GOLD_SCHEMA:
        if f.name in (c.PATIENT_ID, c.PATIENT_KEY):
            columns[f.name] = pa.array(pid, pa.string())
        elif pa.types.is_boolean(f.type):
            columns[f.name] = pa.array(np.ones(n, bool))
        elif f.name == c.WINDOW_SECONDS:
            columns[f.name] = pa.array(np.full(n, 60, np.int32))
        elif f.name in (c.WINDOW_START, c.LAST_READING_TIME, c.UPDATED_AT):
            columns[f.name] = pa.array(start_us).cast(f.type)
        elif f.name == c.WINDOW_END:
            columns[f.name] = pa.array(start_us + 60_000_000).cast(f.type)
        elif f.name == c.EVENT_DATE:
            columns[f.name] = pa.array((start_us // 86_400_000_000).astype(np.int32)).cast(pa.date32())
        elif pa.types.is_floating(f.type):
            columns[f.name] = pa.array(rng.normal(80, 10, n)).cast(f.type)
        elif pa.types.is_integer(f.type):
            columns[f.name] = pa.array(np.ones(n, np.int64)).cast(f.type)
        elif f.name == c.RISK_LEVEL:
            columns[f.name] = pa.array([c.NEWS2_RESPONSES[0]] * n, f.type)
        else:
            columns[f.name] = pa.nulls(n, f.type)
    return pa.table(columns, schema=c.GOLD_SCHEMA)


def _files_per_partition(uri: str) -> dict[str, int]:
    actions = pa.table(DeltaTable(uri).get_add_actions(flatten=True))
    counts: dict[str, int] = {}
    for value in actions.column(f"partition.{c.EVENT_DATE}").to_pylist():
        counts[str(value)] = counts.get(str(value), 0) + 1
    return dict(sorted(counts.items()))


@benchmark(NAME, TITLE)
def growth(ctx: Context) -> Result:
    sizes = QUICK if ctx.quick else FULL
    result = Result(NAME, TITLE)
    result.config = asdict(sizes)
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp_name:
        tmp = Path(tmp_name)
        _merge_variants(ctx, result, tmp, sizes)
        _maintenance_variants(ctx, result, tmp, sizes)
        _commit_variants(ctx, result, tmp, sizes)
    return result


def _gold_lake(root: Path, sizes: Sizes, chunks: int) -> Lake:
    """A Gold table of ``chunks`` x N rows, one append per N rows, the newest minutes last."""
    lake = Lake(lake_from_uri(str(root)))
    lake.ensure("gold")
    minutes = sizes.gold_n // sizes.patients
    total = minutes * chunks
    for k in range(chunks):
        # Both tables end at the same minute, so the batch below has the same shape against each.
        first = 10 * minutes - total + k * minutes
        lake.append("gold", synthetic_gold(sizes.patients, minutes, first_minute=first, seed=sizes.seed))
    DeltaTable(lake.uri("gold")).create_checkpoint()
    return lake


def _merge_variants(ctx: Context, result: Result, tmp: Path, sizes: Sizes) -> None:
    t0 = time.perf_counter()
    minutes = sizes.gold_n // sizes.patients
    half = sizes.batch_minutes // 2
    batch = synthetic_gold(sizes.patients, sizes.batch_minutes, first_minute=10 * minutes - half, seed=99)
    built = {
        label: _gold_lake(tmp / f"gold-{label}", sizes, chunks) for label, chunks in (("N", 1), ("10N", 10))
    }
    result.setup_seconds += time.perf_counter() - t0
    variants = []
    for label, source in built.items():
        rows = source.count("gold")
        src_root = tmp / f"gold-{label}"

        def prepare(src: Path = src_root, label: str = label) -> Callable[[], object]:
            dst = tmp / f"run-{label}"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
            lake = Lake(lake_from_uri(str(dst)))
            return lambda: lake.upsert("gold", batch, keys=c.GOLD_KEY, time_column=c.WINDOW_START)

        v = ctx.measure_prepared(
            f"Gold holds {rows:,} rows ({label})",
            prepare,
            rows=batch.num_rows,
            group="gold MERGE of one batch",
            note=f"{batch.num_rows:,}-row batch, per patient {half} minutes updated"
            f" + {sizes.batch_minutes - half} new",
            memory=False,
        )
        variants.append(v)
        result.config[f"gold_rows_{label}"] = rows
    result.add(*variants)
    result.ratio("gold MERGE: N vs 10N rows in Gold (flat = ~1x)", variants[0], variants[1])
    merged = variants[1].output
    result.checks["MERGE into 10N updated half the batch and inserted half"] = (
        isinstance(merged, dict)
        and merged.get("num_target_rows_updated") == batch.num_rows // 2
        and merged.get("num_target_rows_inserted") == batch.num_rows - batch.num_rows // 2
    )


def _maintenance_variants(ctx: Context, result: Result, tmp: Path, sizes: Sizes) -> None:
    t0 = time.perf_counter()
    readings, _ = evaluate.simulate(
        tmp / "sim", patients=sizes.sim_patients, hours=sizes.sim_hours, interval=60.0, seed=sizes.seed
    )
    silver = train.silver_from_lines(read_jsonl(readings))
    silver = silver.sort_by([(c.TIMESTAMP, "ascending"), (c.PATIENT_ID, "ascending")])
    silver = silver.drop_columns([c.PATIENT_ID])  # training's copy has the id back; Silver has the key
    day: date = pc.min(silver[c.EVENT_DATE]).as_py()
    silver = silver.filter(pc.equal(silver[c.EVENT_DATE], pa.scalar(day, pa.date32())))
    root = tmp / "stream-lake"
    lake = Lake(lake_from_uri(str(root)))
    lake.ensure("silver")
    lake.ensure("gold")
    step = -(-silver.num_rows // sizes.appends)
    for i in range(0, silver.num_rows, step):
        chunk = silver.slice(i, step)
        lake.append("silver", chunk)
        lake.append("gold", gold_from_silver(chunk, window_seconds=60, updated_at_us=0))
    result.setup_seconds += time.perf_counter() - t0
    where = pc.field(c.EVENT_DATE) == pa.scalar(day, pa.date32())
    files: dict[str, dict[str, dict[str, int]]] = {"before": {}, "after": {}}
    rows_before: dict[str, int] = {}

    def read_day(layer: c.Layer) -> Callable[[], object]:
        return lambda: lake.read(layer, where=where).num_rows

    reads_before = {}
    for layer in LAYERS:
        files["before"][layer] = _files_per_partition(lake.uri(layer))
        rows_before[layer] = lake.count(layer)
        reads_before[layer] = ctx.measure(
            "before maintenance",
            read_day(layer),
            rows=rows_before[layer],
            group=f"read one day ({layer})",
            note=f"{sum(files['before'][layer].values())} files",
            memory=False,
        )
    # Maintenance as it runs in production: the day is finished (now = the next day).
    t1 = time.perf_counter()
    report = maintain(
        lake,
        ["silver", "gold"],
        MaintenanceOptions(),
        now=datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC),
    )
    maintenance_s = time.perf_counter() - t1
    for layer in LAYERS:
        files["after"][layer] = _files_per_partition(lake.uri(layer))
        after = ctx.measure(
            "after maintenance",
            read_day(layer),
            rows=rows_before[layer],
            group=f"read one day ({layer})",
            note=f"{sum(files['after'][layer].values())} files",
            memory=False,
        )
        result.add(reads_before[layer], after)
        result.ratio(f"read a day of {layer}: after vs before maintenance", after, reads_before[layer])
        result.checks[f"{layer}: same rows before and after maintenance"] = (
            after.output == reads_before[layer].output == lake.count(layer)
        )
        result.checks[f"{layer}: maintenance left fewer files per partition"] = all(
            files["after"][layer][p] < n for p, n in files["before"][layer].items() if n > 1
        )
    result.config.update(
        {
            "day": day.isoformat(),
            "appends_per_table": -(-silver.num_rows // step),
            "rows_per_append": step,
            "files_per_partition": files,
            "maintenance_seconds": maintenance_s,
            "maintenance_operations": {t.layer: [p.operation for p in t.partitions] for t in report.tables},
        }
    )
    for layer in LAYERS:
        result.notes.append(
            f"{layer} files per date partition: {files['before'][layer]} after"
            f" {result.config['appends_per_table']} appends of ~{step} readings;"
            f" {files['after'][layer]} after maintenance"
        )
    result.notes.append(
        "maintenance (compact + z-order by patient_id, checkpoint) of one day's silver + gold:"
        f" {maintenance_s:.2f} s"
    )


def _commit_row(i: int) -> pa.Table:
    return silver_commit_row(f"b{i}", offered=100, inserted=99, duplicates=1, committed_at_us=i)


def _cpu() -> float:
    return time.process_time()  # every thread of the process: delta-rs commits on its own


def _commit_variants(ctx: Context, result: Result, tmp: Path, sizes: Sizes) -> None:
    """Small commits, one after another, through one Lake and through one kept DeltaTable object."""
    timed = max(int(sizes.commits * COMMITS_TIMED), 1)
    ctx.log(f"  {sizes.commits} small commits through one Lake, then through one DeltaTable object")

    def through_lake(commit: Callable[[int], object]) -> tuple[list[float], list[float]]:
        first: list[float] = []
        last: list[float] = []
        for i in range(sizes.commits):
            started = _cpu()
            commit(i)
            spent = _cpu() - started
            if i < timed:
                first.append(spent)
            elif i >= sizes.commits - timed:
                last.append(spent)
        return first, last

    lake = Lake(lake_from_uri(str(tmp / "commits-lake")))
    lake.ensure("silver_commits")
    lake_runs = through_lake(
        lambda i: lake.append("silver_commits", _commit_row(i), marker=BatchMarker("silver_commits", f"b{i}"))
    )
    kept = Lake(lake_from_uri(str(tmp / "commits-kept")))
    table = kept.ensure("silver_commits")  # the object opened once, as the Lake kept it before
    kept_runs = through_lake(lambda i: write_deltalake(table, _commit_row(i), mode="append"))
    for group, (first, last) in (
        ("commit through one Lake (reloaded every 10 versions)", lake_runs),
        ("commit through one kept DeltaTable object (control)", kept_runs),
    ):
        early = Variant(f"commits 1-{timed}", timed, sum(first), first, group=group, note="CPU s")
        late = Variant(
            f"commits {sizes.commits - timed + 1}-{sizes.commits}",
            timed,
            sum(last),
            last,
            group=group,
            note="CPU s",
        )
        result.add(early, late)
        result.ratio(f"{group}: last vs first commits (flat = ~1x)", late, early)
    result.checks["every commit through the Lake is in its table"] = (
        lake.count("silver_commits") == sizes.commits
    )
    result.config["commits"] = sizes.commits
