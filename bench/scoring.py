"""Scoring throughput inside the pipeline: batched versus one-row scoring, in one run.

Realistic Silver rows come from a simulated cohort pushed through the pipeline's own gate
(``ml.train.silver_from_lines``) and put in arrival (timestamp) order; a model of each kind is trained
on it and loaded from its verified artifact. On those same rows, side by side:

* ``model``: ``LoadedModel.score`` on the whole feature table vs one row at a time;
* ``stream``: the in-pipeline step ``StreamScorer.score`` on batches of 500 rows vs 1-row batches;
* ``features``: ``BaselineState().update`` on the whole history vs batches of 500 vs one row.

One-row variants run on a subset of rows from the middle of the stream (their baselines primed,
untimed, with every row before it), so their rows/s compare with the batched variants'. Each one-row
variant is checked to give the same scores/features as the batched one.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa

from bench.runner import Context, Result, benchmark
from ml import evaluate, train
from simulator import read_jsonl
from vitals_lake import contract as c
from vitals_lake.model import artifact
from vitals_lake.model.artifact import LoadedModel
from vitals_lake.model.features import DATA_AGE, DEVIATION_FEATURES, BaselineState
from vitals_lake.model.serving import ModelWatcher, StreamScorer

NAME: Final = "scoring"
TITLE: Final = "Scoring throughput inside the pipeline: batched versus one-row scoring"
MODELS: Final = ("zscore", "isolation_forest", "autoencoder")
NEVER_POLL: Final = 1e9  # the watcher loads once; no metadata re-reads inside timed runs


@dataclass(frozen=True)
class Sizes:
    patients: int
    hours: float
    batch: int  # rows per in-pipeline batch
    one_row: int  # rows in the one-row subsets (cheap models, features)
    one_row_slow: int  # rows in the one-row subsets of isolation_forest (tens of rows/s one at a time)
    stream_one_row: int  # rows in the 1-row StreamScorer subsets (cheap models)
    interval: float = 60.0
    seed: int = 11
    episode_rate: float = 0.3

    def subset(self, model: str, *, stream: bool) -> int:
        if model == "isolation_forest":
            return self.one_row_slow
        return self.stream_one_row if stream else self.one_row


FULL: Final = Sizes(patients=40, hours=6, batch=500, one_row=1000, one_row_slow=50, stream_one_row=300)
QUICK: Final = Sizes(patients=6, hours=2, batch=100, one_row=40, one_row_slow=10, stream_one_row=20)


@dataclass(frozen=True)
class _Rows:
    """The Silver stream and where its one-row subsets start (baselines primed with the rows before)."""

    stream: pa.Table
    sizes: Sizes
    start: int

    @property
    def n(self) -> int:
        return int(self.stream.num_rows)

    def batches(self) -> list[pa.Table]:
        return _batches(self.stream, self.sizes.batch)

    def prefix(self) -> pa.Table:
        return self.stream.slice(0, self.start)

    def note(self, m: int) -> str:
        return f"rows {self.start:,}-{self.start + m - 1:,} of {self.n:,}"


@benchmark(NAME, TITLE)
def scoring(ctx: Context) -> Result:
    sizes = QUICK if ctx.quick else FULL
    result = Result(NAME, TITLE)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        stream, dirs = _setup(Path(tmp), sizes, ctx)
        models = {name: artifact.load(path) for name, path in dirs.items()}
        watchers = {name: _watcher(path) for name, path in dirs.items()}
        result.setup_seconds = time.perf_counter() - t0
        data = _Rows(stream, sizes, start=stream.num_rows // 2)
        result.config = {
            **asdict(sizes),
            "rows": data.n,
            "one_row_start": data.start,
            "models": {name: m.version for name, m in models.items()},
        }
        _model_variants(ctx, result, models, data)
        _stream_variants(ctx, result, watchers, data)
        _feature_variants(ctx, result, data)
    result.notes.append(
        f"{data.n:,} Silver rows: {sizes.patients} simulated patients x {sizes.hours:g} h at"
        f" {sizes.interval:g} s, in arrival order"
    )
    result.notes.append(
        f"one-row variants run on a subset from row {data.start:,} on (see note column), their baselines"
        " primed with every row before it (untimed): rows/s compare; ratios = rows/s over rows/s;"
        " peak memory is measured for the batched variants only"
    )
    return result


def _setup(tmp: Path, sizes: Sizes, ctx: Context) -> tuple[pa.Table, dict[str, Path]]:
    ctx.log(f"  simulating {sizes.patients} patients x {sizes.hours:g} h and training {', '.join(MODELS)}")
    readings, labels = evaluate.simulate(
        tmp / "sim",
        patients=sizes.patients,
        hours=sizes.hours,
        interval=sizes.interval,
        seed=sizes.seed,
        episode_rate=sizes.episode_rate,
    )
    silver = train.silver_from_lines(read_jsonl(readings))
    # The stream delivers readings in time order, all patients interleaved.
    stream = silver.sort_by([(c.TIMESTAMP, "ascending"), (c.PATIENT_ID, "ascending")])
    dirs = {}
    with warnings.catch_warnings(action="ignore"):  # convergence and small-sample notes from sklearn
        for name in MODELS:
            dirs[name] = tmp / name
            train.train(readings, labels, dirs[name], model=name, seed=sizes.seed)
    return stream, dirs


def _watcher(path: Path) -> ModelWatcher:
    watcher = ModelWatcher(str(path), poll_seconds=NEVER_POLL)
    if watcher.current() is None:
        raise RuntimeError(f"no model loaded from {path}")
    return watcher


def _batches(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True))


def _model_variants(ctx: Context, result: Result, models: dict[str, LoadedModel], data: _Rows) -> None:
    """The model alone, on a ready feature table: one call for every row vs one call per row."""
    features = BaselineState().update(data.stream)
    for name, model in models.items():
        m = data.sizes.subset(name, stream=False)
        one = features.slice(data.start, m)

        def whole(model: LoadedModel = model) -> np.ndarray:
            return model.score(features)

        def one_row(model: LoadedModel = model, one: pa.Table = one) -> np.ndarray:
            return np.concatenate([model.score(one.slice(i, 1)) for i in range(one.num_rows)])

        group = f"model {name}"
        batched = ctx.measure("whole batch", whole, rows=data.n, group=group)
        single = ctx.measure(
            "one row at a time", one_row, rows=m, group=group, note=data.note(m), memory=False
        )
        result.add(batched, single)
        result.ratio(f"model {name}: whole batch vs one-row", batched, single)
        result.checks[f"model {name}: one-row scores equal the batch's"] = _same(
            np.asarray(single.output), np.asarray(batched.output)[data.start : data.start + m]
        )


def _stream_variants(ctx: Context, result: Result, watchers: dict[str, ModelWatcher], data: _Rows) -> None:
    """The in-pipeline step (features, model, Silver columns): pipeline-sized batches vs 1-row batches."""
    batches, prefix, size = data.batches(), data.prefix(), data.sizes.batch
    for name, watcher in watchers.items():
        m = data.sizes.subset(name, stream=True)
        rows = _batches(data.stream.slice(data.start, m), 1)

        def batched(watcher: ModelWatcher = watcher) -> Callable[[], list[pa.Table]]:
            scorer = StreamScorer(watcher)
            return lambda: [scorer.score(b) for b in batches]

        def one_row(
            watcher: ModelWatcher = watcher, rows: list[pa.Table] = rows
        ) -> Callable[[], list[pa.Table]]:
            scorer = StreamScorer(watcher)
            scorer.score(prefix)  # the baselines as they stand at the subset's first row
            return lambda: [scorer.score(r) for r in rows]

        group = f"StreamScorer.score, {name}"
        big = ctx.measure_prepared(f"batches of {size}", batched, rows=data.n, group=group)
        single = ctx.measure_prepared(
            "1-row batches", one_row, rows=m, group=group, note=data.note(m), memory=False
        )
        result.add(big, single)
        result.ratio(f"StreamScorer {name}: {size}-row vs 1-row batches", big, single)
        result.checks[f"StreamScorer {name}: 1-row scores equal the batched ones"] = _same(
            _scores(single.output), _scores(big.output)[data.start : data.start + m]
        )


def _feature_variants(ctx: Context, result: Result, data: _Rows) -> None:
    """Features only: the training path (whole history), pipeline-sized batches and single rows."""
    m, size = data.sizes.one_row, data.sizes.batch
    batches, prefix = data.batches(), data.prefix()
    rows = _batches(data.stream.slice(data.start, m), 1)

    def whole() -> Callable[[], pa.Table]:
        return lambda: BaselineState().update(data.stream)

    def per_batch() -> Callable[[], list[pa.Table]]:
        state = BaselineState()
        return lambda: [state.update(b) for b in batches]

    def per_row() -> Callable[[], list[pa.Table]]:
        state = BaselineState()
        state.update(prefix)
        return lambda: [state.update(r) for r in rows]

    group = "features (BaselineState.update)"
    history = ctx.measure_prepared("whole history", whole, rows=data.n, group=group)
    batched = ctx.measure_prepared(f"batches of {size}", per_batch, rows=data.n, group=group)
    single = ctx.measure_prepared(
        "one row at a time", per_row, rows=m, group=group, note=data.note(m), memory=False
    )
    result.add(history, batched, single)
    result.ratio("features: whole history vs one-row", history, single)
    result.ratio(f"features: {size}-row batches vs one-row", batched, single)
    reference = _feature_values(history.output)
    result.checks[f"features: batches of {size} equal the whole history's"] = _same(
        _feature_values(pa.concat_tables(batched.output)), reference
    )
    result.checks["features: one-row equal the whole history's"] = _same(
        _feature_values(pa.concat_tables(single.output)), reference[data.start : data.start + m]
    )


def _scores(tables: object) -> np.ndarray:
    assert isinstance(tables, list)
    return np.concatenate([t[c.ANOMALY_SCORE].to_numpy(zero_copy_only=False) for t in tables])


def _feature_values(table: object) -> np.ndarray:
    assert isinstance(table, pa.Table)
    cols = [*DEVIATION_FEATURES, DATA_AGE]
    return np.column_stack([table[name].to_numpy(zero_copy_only=False) for name in cols])
