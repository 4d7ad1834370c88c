"""A small benchmark runner: named benchmarks measure variants of the same work side by side.

A benchmark is a function registered with :func:`benchmark`; it gets a :class:`Context` (sizes shrink
under ``--quick``) and returns a :class:`Result`: the measured :class:`Variant` s (rows, median
seconds, rows/s, peak memory) and the :class:`Ratio` s between them (``batched vs one-row: 420x``).
Every module in the ``bench`` package except this one, ``report`` and ``__main__`` is imported by
:func:`load_benchmarks`, so a new benchmark is a new module with a decorated function.

Speed and memory claims are proven by ratios measured in the same run on the same machine, never by
timed assertions in tests.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import pkgutil
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from bench import report as results_report
from bench.report import fmt_figure, fmt_number, fmt_seconds
from vitals_lake.cli import usage_error

DEFAULT_OUT: Final = Path("var/bench/results.json")
DEFAULT_REPEATS: Final = 3
DEFAULT_WARMUP: Final = 1
QUICK_REPEATS: Final = 2
_NOT_BENCHMARKS: Final = frozenset({"runner", "report", "__main__"})
_LIBRARIES: Final = ("numpy", "pyarrow", "scikit-learn", "apache-beam", "deltalake")
MEMORY_NOTE: Final = (
    "peak MB: tracemalloc peak of one extra, untimed run (Python and numpy allocations;"
    " Arrow's memory pool is not traced)"
)


@dataclass
class Variant:
    """One way of doing the work: ``rows`` rows in ``seconds`` (median of the timed repeats)."""

    label: str
    rows: int
    seconds: float
    runs: list[float]
    peak_mb: float | None = None
    group: str = ""
    note: str = ""
    output: Any = field(default=None, repr=False, compare=False)  # last run's return value; not saved

    @property
    def key(self) -> str:
        """Unique within a result: labels may repeat across groups ("one row" of each model)."""
        return f"{self.group}: {self.label}" if self.group else self.label

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    @property
    def spread(self) -> float:
        """(slowest - fastest run) / median: how noisy the timing was."""
        return (max(self.runs) - min(self.runs)) / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "group": self.group,
            "rows": self.rows,
            "seconds": self.seconds,
            "runs": self.runs,
            "rows_per_s": self.rows_per_s,
            "spread": self.spread,
            "peak_mb": self.peak_mb,
            "note": self.note,
        }


@dataclass(frozen=True)
class Ratio:
    """``faster``'s rows/s divided by ``slower``'s (keys of variants of the same result)."""

    label: str
    faster: str
    slower: str
    value: float

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "numerator": self.faster,
            "denominator": self.slower,
            "value": self.value,
        }


@dataclass
class Result:
    name: str
    title: str
    variants: list[Variant] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)  # e.g. "one-row scores equal batched"
    config: dict[str, Any] = field(default_factory=dict)  # sizes, seeds: what was measured
    notes: list[str] = field(default_factory=list)
    setup_seconds: float = 0.0
    seconds: float = 0.0

    def add(self, *variants: Variant) -> None:
        for v in variants:
            if any(v.key == w.key for w in self.variants):
                raise ValueError(f"{self.name}: variant {v.key!r} measured twice")
            self.variants.append(v)

    def variant(self, key: str) -> Variant:
        for v in self.variants:
            if v.key == key:
                return v
        raise KeyError(f"{self.name}: no variant {key!r}")

    def ratio(self, label: str, faster: Variant | str, slower: Variant | str) -> Ratio:
        """Add and return the rows/s ratio ``faster`` / ``slower`` (variants already added, or keys)."""
        fast = self.variant(faster if isinstance(faster, str) else faster.key)
        slow = self.variant(slower if isinstance(slower, str) else slower.key)
        r = Ratio(label, fast.key, slow.key, fast.rows_per_s / slow.rows_per_s)
        self.ratios.append(r)
        return r

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "config": self.config,
            "setup_seconds": self.setup_seconds,
            "seconds": self.seconds,
            "variants": [v.to_json() for v in self.variants],
            "ratios": [r.to_json() for r in self.ratios],
            "checks": self.checks,
            "notes": self.notes,
        }


@dataclass
class Context:
    """What a benchmark gets: the run's settings and :meth:`measure`."""

    quick: bool = False
    repeats: int = DEFAULT_REPEATS
    warmup: int = DEFAULT_WARMUP
    memory: bool = True
    log: Callable[[str], None] = field(default=lambda _msg: None)

    def measure(
        self,
        label: str,
        fn: Callable[[], object],
        *,
        rows: int,
        group: str = "",
        note: str = "",
        memory: bool = True,
    ) -> Variant:
        """Time ``fn`` (processing ``rows`` rows): warm-up, then the median of ``repeats`` runs."""
        return self.measure_prepared(label, lambda: fn, rows=rows, group=group, note=note, memory=memory)

    def measure_prepared(
        self,
        label: str,
        prepare: Callable[[], Callable[[], object]],
        *,
        rows: int,
        group: str = "",
        note: str = "",
        memory: bool = True,
    ) -> Variant:
        """Like :meth:`measure`, for stateful work: each run first calls ``prepare()`` (untimed) for a
        fresh callable, so every repeat starts from the same state."""
        if rows <= 0:
            raise ValueError(f"{label}: rows must be positive")
        t0 = time.perf_counter()
        for _ in range(self.warmup):
            prepare()()
        runs: list[float] = []
        output: object = None
        for _ in range(max(self.repeats, 1)):
            run = prepare()
            gc.collect()
            start = time.perf_counter()
            output = run()
            runs.append(time.perf_counter() - start)
        peak = _peak_mb(prepare()) if self.memory and memory else None
        v = Variant(label, rows, statistics.median(runs), runs, peak, group, note, output)
        self.log(f"  {v.key}: {rows:,} rows, {v.rows_per_s:,.0f} rows/s ({time.perf_counter() - t0:.1f} s)")
        return v


def _peak_mb(run: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


BenchFn = Callable[[Context], Result]


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    fn: BenchFn


class Registry:
    def __init__(self) -> None:
        self.benchmarks: dict[str, Benchmark] = {}

    def register(self, name: str, title: str) -> Callable[[BenchFn], BenchFn]:
        def decorate(fn: BenchFn) -> BenchFn:
            if name in self.benchmarks:
                raise ValueError(f"benchmark {name!r} registered twice")
            self.benchmarks[name] = Benchmark(name, title, fn)
            return fn

        return decorate

    def select(self, only: Iterable[str] | None) -> list[Benchmark]:
        if not only:
            return list(self.benchmarks.values())
        unknown = [n for n in only if n not in self.benchmarks]
        if unknown:
            raise KeyError(f"unknown benchmark(s) {unknown}; known: {sorted(self.benchmarks)}")
        return [self.benchmarks[n] for n in dict.fromkeys(only)]

    def run(self, bench: Benchmark, ctx: Context) -> Result:
        # Park everything alive now (Beam, sklearn ... modules) outside the cyclic collector, so the
        # collection before each timed run costs microseconds instead of a third of a second.
        gc.collect()
        gc.freeze()
        start = time.perf_counter()
        try:
            result = bench.fn(ctx)
        finally:
            gc.unfreeze()
        result.seconds = time.perf_counter() - start
        if result.name != bench.name:
            raise ValueError(f"benchmark {bench.name!r} returned a result named {result.name!r}")
        return result


REGISTRY: Final = Registry()


def benchmark(name: str, title: str) -> Callable[[BenchFn], BenchFn]:
    """Register ``fn(ctx) -> Result`` under ``name`` (``python -m bench --only NAME``)."""
    return REGISTRY.register(name, title)


def load_benchmarks() -> None:
    """Import every benchmark module of the ``bench`` package (which registers its benchmarks)."""
    package = importlib.import_module("bench")
    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name not in _NOT_BENCHMARKS and not mod.name.startswith("_"):
            importlib.import_module(f"bench.{mod.name}")


def machine_info() -> dict[str, Any]:
    """Where the figures were measured (no git, no network)."""
    libraries: dict[str, str | None] = {}
    for lib in _LIBRARIES:
        try:
            libraries[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            libraries[lib] = None
    usable: int | None = os.cpu_count()
    if hasattr(os, "sched_getaffinity"):  # Linux: the CPUs this process may run on
        usable = len(os.sched_getaffinity(0))
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_gb": _memory_gb(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "libraries": libraries,
    }


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


# -- output ---------------------------------------------------------------------------------------


def format_result(r: Result) -> str:
    head = ("variant", "rows", "median", "spread", "rows/s", "peak MB", "note")
    body = [
        (
            f"{v.group}: {v.label}" if v.group else v.label,
            f"{v.rows:,}",
            fmt_seconds(v.seconds),
            f"{v.spread:.0%}",
            fmt_number(v.rows_per_s),
            "-" if v.peak_mb is None else f"{v.peak_mb:,.1f}",
            v.note,
        )
        for v in r.variants
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    right = {1, 2, 3, 4, 5}

    def line(row: tuple[str, ...]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    out = [f"== {r.name}: {r.title}"]
    if r.variants:
        out += [line(head), line(tuple("-" * w for w in widths))]
    previous = None
    for v, row in zip(r.variants, body, strict=True):
        if previous is not None and v.group != previous:
            out.append("")
        previous = v.group
        out.append(line(row))
    if r.ratios:
        out += ["", "ratios (rows/s):"]
        width = max(len(x.label) for x in r.ratios)
        out += [f"  {x.label.ljust(width)}  {fmt_number(x.value)}x" for x in r.ratios]
    for sc in r.config.get("scenarios", []):  # fault scenarios (bench/faults.py): their figures
        out += ["", f"figures, {sc['scenario']} ({sc['seconds']:,.1f} s):"]
        width = max((len(k) for k in sc["figures"]), default=0)
        out += [f"  {k.ljust(width)}  {fmt_figure(v)}" for k, v in sc["figures"].items()]
    if r.checks:
        out += ["", "checks:"]
        out += [f"  {'ok      ' if ok else 'MISMATCH'}  {name}" for name, ok in r.checks.items()]
    out += [f"note: {n}" for n in r.notes]
    out.append(f"({fmt_seconds(r.seconds)} in all, of which setup {fmt_seconds(r.setup_seconds)})")
    return "\n".join(out)


def report(results: list[Result], ctx: Context, *, started: datetime, seconds: float) -> dict[str, Any]:
    return {
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": seconds,
        "quick": ctx.quick,
        "repeats": ctx.repeats,
        "warmup": ctx.warmup,
        "statistic": "median",
        "memory": MEMORY_NOTE if ctx.memory else None,
        "machine": machine_info(),
        "results": [r.to_json() for r in results],
    }


def main(argv: list[str] | None = None, *, registry: Registry | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks: variants of the same work measured side by side."
    )
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME", help="run only these")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test); ratios are rough")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--repeats", type=int, help=f"timed runs per variant (default {DEFAULT_REPEATS})")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc peak-memory runs")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        return usage_error(parser, f"--repeats must be >= 1, got {args.repeats}")

    if registry is None:
        load_benchmarks()
        registry = REGISTRY
    if args.list:
        for b in registry.benchmarks.values():
            print(f"{b.name}: {b.title}")
        return 0
    try:
        selected = registry.select(args.only)
    except KeyError as exc:
        parser.error(str(exc.args[0]))

    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    ctx = Context(
        quick=args.quick,
        repeats=repeats,
        memory=not args.no_memory,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    started, t0 = datetime.now(UTC), time.perf_counter()
    results: list[Result] = []
    for b in selected:
        ctx.log(f"running {b.name}{' (quick)' if ctx.quick else ''} ...")
        results.append(registry.run(b, ctx))
        print(format_result(results[-1]) + "\n", flush=True)
    total = time.perf_counter() - t0
    doc = report(results, ctx, started=started, seconds=total)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    written = results_report.write(args.out)  # results.md and results.png beside the JSON
    print(
        f"{len(results)} benchmark(s) in {total:,.1f} s; median of {repeats} timed run(s) after"
        f" {ctx.warmup} warm-up; {MEMORY_NOTE if ctx.memory else 'memory not measured'} -> {args.out}"
        f" ({', '.join(str(p) for p in written)})"
    )
    return 0
