"""The batch engine: a batch of Bronze rows in; quarantine, data quality, Silver, alerts and Gold out.

One engine, two halves, so that a distributed runner can put each where it belongs:

1. :func:`gate` is stateless: parse and check every record, enrich and score (NEWS2, flags) the valid
   ones, count each rule, and split the valid rows by patient shard (:mod:`vitals_lake.sharding`).
   Any worker can run it on any batch.
2. :func:`advance_shard` is per patient shard and stateful: drop the event ids the shard has already
   stored (:class:`~vitals_lake.dedup.SeenEvents`), score the new readings against each patient's
   baseline and run the alert rule (:class:`~vitals_lake.model.serving.ScorerState`). Its state is a
   :class:`ShardState`, which the Beam pipeline keeps per shard in the worker that owns it and everything
   else keeps in a dict.

:class:`BatchEngine` runs both halves and writes the results, for every caller outside Beam: crash
recovery, the benchmarks, model training's preparation of Silver and the dashboard's sample data. The
Beam pipeline (``pipelines/beam_vitals.py``) calls the same two functions and the same writers.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake import expectations as ex
from vitals_lake.admissions import PatientDirectory
from vitals_lake.alerting import AlertRule
from vitals_lake.dedup import SeenEvents, StoredIds
from vitals_lake.gold_state import GoldState, StoredSilver
from vitals_lake.gold_upsert import (
    derive_diagnosis_hourly,
    read_patients,
    upsert_gold_rows,
    upsert_rolling_rows,
)
from vitals_lake.lake import BatchMarker, Lake, TimeSpan
from vitals_lake.model.artifact import LoadedModel
from vitals_lake.model.serving import HISTORY_COLUMNS, History, ModelWatcher, ScorerState, score_batch
from vitals_lake.patient_keys import KnownKeys
from vitals_lake.readings import ParsedBatch, TimeRules
from vitals_lake.sharding import LOCAL_SHARDS, check_shards, in_shard, split_by_shard
from vitals_lake.silver import gate_batch

log = logging.getLogger(__name__)
BASELINE_SPAN: Final = timedelta(hours=24)  # how far back a restored baseline reaches (features' ring)
# A patient not heard from for this long leaves the shard's memory: a restart would find no Silver
# history for them within BASELINE_SPAN either.
IDLE_PATIENT_AFTER: Final = BASELINE_SPAN
_US: Final = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    """What the engine needs to know, validated once at the edge."""

    shards: int = LOCAL_SHARDS
    horizon: timedelta = timedelta(hours=1)  # event ids are remembered this long (event time)
    allowed_lateness: timedelta = timedelta(minutes=10)  # a Gold window is kept open this long
    time_rules: TimeRules | None = None  # None: no future / age rules (replays of old data)
    rule: AlertRule = field(default_factory=AlertRule)

    def __post_init__(self) -> None:
        check_shards(self.shards)
        if self.horizon < timedelta(0) or self.allowed_lateness < timedelta(0):
            raise ValueError("horizon and allowed_lateness must be >= 0")


# --- 1. The stateless half ------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    parsed: ParsedBatch  # quarantine rows and rule counts
    dq: pa.Table  # one c.DQ_METRICS_SCHEMA row per rule
    shards: list[tuple[int, pa.Table]]  # (patient shard, its valid c.GATED_SCHEMA rows, unscored)
    over_ratio: bool  # the batch-level "fail" expectation: too much of it was quarantined

    @property
    def valid_rows(self) -> int:
        return sum(t.num_rows for _, t in self.shards)


def gate(
    bronze: pa.Table,
    *,
    batch_id: str,
    window_start_us: int,
    settings: EngineSettings,
    patients: pa.Table,
    key: bytes,
) -> GateResult:
    """Parse, check, enrich and NEWS2-score a batch of Bronze rows; split the valid ones by shard."""
    parsed, silver = gate_batch(bronze, time_rules=settings.time_rules, patients=patients, key=key)
    failed = dict(parsed.rule_counts)
    checked = dict(parsed.checked)
    ratio = parsed.quarantine.num_rows / bronze.num_rows if bronze.num_rows else 0.0
    over = ratio > ex.MAX_QUARANTINE_RATIO
    checked[ex.RULE_QUARANTINE_RATIO] = 1
    failed[ex.RULE_QUARANTINE_RATIO] = int(over)
    if over:
        log.error("batch %s: %.0f %% of %d records quarantined", batch_id, 100 * ratio, bronze.num_rows)
    dq = ex.dq_metrics(batch_id=batch_id, window_start_us=window_start_us, failed=failed, checked=checked)
    return GateResult(parsed, dq, split_by_shard(silver, shards=settings.shards), over)


# --- 2. The per-shard, stateful half --------------------------------------------------------------


@dataclass
class ShardState:
    """Everything one patient shard remembers between batches."""

    seen: SeenEvents
    scorer: ScorerState
    gold: GoldState
    keys: KnownKeys = field(default_factory=KnownKeys)
    batches: int = 0

    @classmethod
    def new(cls, settings: EngineSettings) -> ShardState:
        micros = timedelta(microseconds=1)
        return cls(
            seen=SeenEvents(horizon_us=int(settings.horizon / micros)),
            scorer=ScorerState(rule=settings.rule),
            gold=GoldState.new(allowed_lateness_us=int(settings.allowed_lateness / micros)),
        )

    @property
    def lake_reads(self) -> int:
        return self.seen.lake_reads + self.gold.minutes.lake_reads + self.gold.hours.lake_reads

    def forget_idle(self) -> int:
        """Forget the patients not heard from for ``IDLE_PATIENT_AFTER`` (by the shard's newest
        reading, so a replay forgets what a stream does); see ``ScorerState.forget_idle``."""
        if self.seen.newest_us is None:
            return 0
        before_us = self.seen.newest_us - IDLE_PATIENT_AFTER // timedelta(microseconds=1)
        return self.scorer.forget_idle(before=before_us / 1e6)

    def size_bytes(self) -> int:
        """Its size pickled (what a checkpoint of it would write): exact, but it copies the whole state."""
        return len(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    def memory_bytes(self) -> int:
        """The bytes of its arrays (rings, event ids, held partials): cheap enough for every batch's
        metrics, unlike :meth:`size_bytes` (about 1 s for a 1 GB shard)."""
        rings = self.scorer.baselines.nbytes
        ids = self.seen.nbytes
        gold = sum(w.rows.nbytes for w in (self.gold.minutes, self.gold.hours) if w.rows is not None)
        return rings + ids + gold + self.keys.nbytes


@dataclass(frozen=True)
class ShardResult:
    silver: pa.Table  # the new readings, scored: exactly what Silver gets
    alerts: pa.Table  # c.ALERTS_SCHEMA events the alert rule's state changes produced
    offered: int
    duplicates: int
    gold: pa.Table  # c.GOLD_SCHEMA rows of every window the new readings touched
    rolling: pa.Table  # c.ROLLING_SCHEMA rows whose trailing window changed
    # c.PATIENT_KEYS_SCHEMA rows of the keys new to the shard's state (the identity map's feed)
    identities: pa.Table = field(default_factory=c.PATIENT_KEYS_SCHEMA.empty_table)
    forgotten: int = 0  # patients idle for IDLE_PATIENT_AFTER that left the shard's memory


@dataclass(frozen=True)
class ShardReaders:
    """How a shard fills its state from the lake when it has none (first start, replay)."""

    stored_ids: StoredIds | None
    history: History | None
    silver: StoredSilver | None

    @classmethod
    def none(cls) -> ShardReaders:
        return cls(stored_ids=None, history=None, silver=None)


def advance_shard(
    state: ShardState, rows: pa.Table, *, model: LoadedModel | None, readers: ShardReaders
) -> ShardResult:
    """De-duplicate, score and run the alert rule on one shard's valid rows (``c.GATED_SCHEMA``), and
    fold the new ones into the shard's Gold windows; advance ``state``. The keys new to the shard go
    to the identity map with their ids; the Silver rows keep the key only. Must run before the new
    rows are committed to Silver (a state filling a gap reads the shard's Silver, which must not hold
    them yet)."""
    offered = rows.num_rows
    fresh = state.seen.fresh(rows, stored=readers.stored_ids)  # duplicates within the batch too
    scored, alerts = score_batch(state.scorer, fresh, model=model, history=readers.history)
    changes = state.gold.update(scored, stored=readers.silver, updated_at_us=time.time_ns() // 1000)
    identities = state.keys.new_rows(scored)
    state.batches += 1
    forgotten = state.forget_idle()
    silver = scored.drop_columns([c.PATIENT_ID])  # the id goes no further than the identity map
    return ShardResult(
        silver,
        alerts,
        offered,
        offered - fresh.num_rows,
        changes.gold,
        changes.rolling,
        identities,
        forgotten=forgotten,
    )


# --- The lake: what a shard reads when it has no state, and what a batch writes -------------------


def shard_readers(
    lake: Lake, *, shard: int, shards: int, ingested_before_us: int | None = None
) -> ShardReaders:
    """Readers of this shard's Silver: event ids for the de-duplication memory, recent history for the
    baselines, rows for the open Gold windows. Called only when the state has a gap, never per batch.

    ``ingested_before_us``: a state's *first* fill (no upper end: "everything from lo on") and a new
    patient's history read only rows ingested before then. A batch run passes its start: a shard's
    new state has seen nothing of the run, and this shard's rows the run wrote are all in it, so
    without the bound the first batch of every shard read back (and filtered out) all the rows the
    shards before it had written, a cost that grew with the number of shards (measured: 347,316 rows
    read back, about 1 CPU-s, for the second of two shards on a 716,132-reading file). A gap the state
    left itself (windows or ids it forgot, then a late reading for them: a read with an upper end) is
    read unbounded: those rows are the run's own. Rows of a replay keep their original ingest time,
    so it reads them all, as before. A stream passes None: a state lost mid-stream must see
    everything."""
    written = (
        None if ingested_before_us is None else pc.field(c.INGEST_TIME) < pa.scalar(ingested_before_us, _US)
    )

    def silver(lo_us: int, hi_us: int | None, columns: list[str] | None = None) -> pa.Table:
        lo = datetime.fromtimestamp(lo_us / 1e6, UTC)
        hi = None if hi_us is None else datetime.fromtimestamp(hi_us / 1e6, UTC)
        # [lo, hi): the span selects the files, the filter drops the rows at hi.
        where = None if hi is None else pc.field(c.TIMESTAMP) < pa.scalar(hi, _US)
        if written is not None and hi is None:
            where = written
        rows = lake.read("silver", columns=columns, where=where, span=TimeSpan(c.TIMESTAMP, lo, hi))
        return in_shard(rows, shard=shard, shards=shards)

    def stored_ids(lo_us: int, hi_us: int | None) -> pa.Table:
        return silver(lo_us, hi_us, [c.EVENT_ID, c.TIMESTAMP, c.PATIENT_KEY])

    def history(patients: list[str], before: float) -> pa.Table:
        return recent_silver(lake, patients, before, where=written)

    return ShardReaders(stored_ids=stored_ids, history=history, silver=silver)


def recent_silver(
    lake: Lake, patients: list[str], before: float, *, where: pc.Expression | None = None
) -> pa.Table:
    """These patients' Silver rows of the baseline span before ``before`` (epoch seconds): what a
    scorer replays to rebuild their baselines and alert state when its shard has no state."""
    hi = datetime.fromtimestamp(before, UTC) - timedelta(microseconds=1)  # rows before, not at
    ids = pa.array(patients, pa.string())
    span = TimeSpan(c.TIMESTAMP, hi - BASELINE_SPAN, hi)
    return read_patients(lake, "silver", span, ids, where=where, columns=list(HISTORY_COLUMNS))


def commit_silver(lake: Lake, result: ShardResult, *, batch_id: str) -> bool:
    """Append one shard batch's new rows to Silver, its new keys to ``patient_keys`` and its counts to
    ``silver_commits`` (each marked: a retried batch writes nothing). Appends never conflict, so
    shards commit side by side."""
    if result.offered == 0:
        return False
    if result.identities.num_rows:
        # Before Silver: a retry stops at Silver's marker, and the shard that computed these keys has
        # remembered them, so a key appended after Silver would be lost to a crash in between.
        lake.append("patient_keys", result.identities, marker=BatchMarker("patient_keys", batch_id))
    marker = BatchMarker("silver", batch_id)
    if result.silver.num_rows:
        written = lake.append("silver", result.silver, marker=marker)
        if not written:
            return False  # this batch is already in Silver
    row = silver_commit_row(
        batch_id,
        offered=result.offered,
        inserted=result.silver.num_rows,
        duplicates=result.duplicates,
        committed_at_us=time.time_ns() // 1000,
    )
    lake.append("silver_commits", row, marker=BatchMarker("silver_commits", batch_id))
    return True


def silver_commit_row(
    batch_id: str, *, offered: int, inserted: int, duplicates: int, committed_at_us: int
) -> pa.Table:
    """One shard batch's row of ``silver_commits`` (``c.SILVER_COMMITS_SCHEMA``)."""
    return pa.table(
        {
            c.BATCH_ID: [batch_id],
            c.VALID_ROWS: [offered],
            c.INSERTED_ROWS: [inserted],
            c.DUPLICATE_ROWS: [duplicates],
            c.COMMITTED_AT: pa.array([committed_at_us], pa.int64()).cast(_US),
        },
        schema=c.SILVER_COMMITS_SCHEMA,
    )


# --- Everything in one process ---------------------------------------------------------------------


@dataclass
class EngineOutput:
    quarantine: pa.Table
    dq: pa.Table
    silver: pa.Table  # new rows of all shards
    alerts: pa.Table
    offered: int
    duplicates: int
    gold: pa.Table
    rolling: pa.Table
    identities: pa.Table  # keys new to the shards' state (c.PATIENT_KEYS_SCHEMA)
    # CPU seconds of the process (delta-rs and Arrow work on threads of their own) per stage of
    # ``BatchEngine.run`` (meaningful when nothing else runs in the process): "silver" (gate, shards,
    # the Bronze, quarantine, data-quality, alert and Silver commits), "gold" (Gold minutes and
    # hours), "trends".
    cpu: dict[str, float] = field(default_factory=dict)


class BatchEngine:
    """Both halves for all shards in one process, with the lake writes the pipeline makes: recovery,
    the benchmarks, training's Silver and the sample data call this; the pipeline calls the halves."""

    def __init__(
        self,
        lake: Lake | None,
        *,
        settings: EngineSettings,
        key: bytes,
        model: ModelWatcher | None = None,
        patients: pa.Table | None = None,
        restore: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lake = lake
        self.settings = settings
        self.key = key
        # What this engine writes is in its shards' state: a shard seen first reads only older rows.
        self.started_us = int(clock() * 1e6)
        self.model = model
        self._patients = patients
        if lake is None and (patients is None or restore):
            raise ValueError("without a lake, give the patients table and restore=False")
        self._directory = PatientDirectory(lake) if patients is None and lake is not None else None
        self.restore = restore
        self.clock = clock
        self.states: dict[int, ShardState] = {}

    def patients(self) -> pa.Table:
        if self._directory is not None:
            return self._directory.table()
        assert self._patients is not None
        return self._patients

    def gate(self, bronze: pa.Table, *, batch_id: str, window_start_us: int | None = None) -> GateResult:
        """The stateless half. ``window_start_us``: when its data-quality rows are filed (default: now)."""
        return gate(
            bronze,
            batch_id=batch_id,
            window_start_us=int(self.clock() * 1e6) if window_start_us is None else window_start_us,
            settings=self.settings,
            patients=self.patients(),
            key=self.key,
        )

    def advance(self, shards: list[tuple[int, pa.Table]]) -> EngineOutput:
        """The stateful half for these shards' rows (the state of a shard seen first starts empty and
        fills its gaps from the lake when ``restore``)."""
        model = self.model.current() if self.model else None
        results = []
        for shard, rows in shards:
            state = self.states.get(shard)
            if state is None:
                state = self.states[shard] = ShardState.new(self.settings)
            readers = (
                shard_readers(
                    self.lake, shard=shard, shards=self.settings.shards, ingested_before_us=self.started_us
                )
                if self.restore and self.lake is not None
                else ShardReaders.none()
            )
            results.append(advance_shard(state, rows, model=model, readers=readers))

        def cat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
            return pa.concat_tables(tables) if tables else schema.empty_table()

        return EngineOutput(
            quarantine=c.QUARANTINE_SCHEMA.empty_table(),
            dq=c.DQ_METRICS_SCHEMA.empty_table(),
            silver=cat([r.silver for r in results], c.SILVER_SCHEMA),
            alerts=cat([r.alerts for r in results], c.ALERTS_SCHEMA),
            offered=sum(r.offered for r in results),
            duplicates=sum(r.duplicates for r in results),
            gold=cat([r.gold for r in results], c.GOLD_SCHEMA),
            rolling=cat([r.rolling for r in results], c.ROLLING_SCHEMA),
            identities=cat([r.identities for r in results], c.PATIENT_KEYS_SCHEMA),
        )

    def process(self, bronze: pa.Table, *, batch_id: str, window_start_us: int | None = None) -> EngineOutput:
        """Gate the batch and advance every shard it touches (no lake writes)."""
        gated = self.gate(bronze, batch_id=batch_id, window_start_us=window_start_us)
        out = self.advance(gated.shards)
        out.quarantine, out.dq = gated.parsed.quarantine, gated.dq
        return out

    def run(self, bronze: pa.Table, *, batch_id: str, gold: bool = True) -> EngineOutput:
        """Process a batch and write everything the pipeline writes for it (each commit marked).
        ``out.cpu`` splits the CPU: the shards' Gold and rolling computations count as "silver" (they
        are part of advancing a shard); "gold" and "trends" are the commits and the diagnosis hours."""
        started = time.process_time()
        out = self.process(bronze, batch_id=batch_id)
        self.commit_gate(bronze, quarantine=out.quarantine, dq=out.dq, batch_id=batch_id)
        self.commit_shards(out, batch_id=batch_id, gold=gold)
        out.cpu["silver"] = time.process_time() - started - out.cpu.get("gold", 0) - out.cpu.get("trends", 0)
        return out

    def commit_gate(self, bronze: pa.Table, *, quarantine: pa.Table, dq: pa.Table, batch_id: str) -> None:
        """Write what the gate decided: Bronze as received, quarantine, data quality."""
        lake = self._lake()
        lake.append("bronze", bronze, marker=BatchMarker("bronze", batch_id))
        lake.append("quarantine", quarantine, marker=BatchMarker("quarantine", batch_id))
        lake.append("dq_metrics", dq, marker=BatchMarker("dq_metrics", batch_id))

    def commit_shards(
        self, out: EngineOutput, *, batch_id: str, gold: bool = True, diagnosis: bool = True
    ) -> None:
        """Write what the shards decided: alerts, Silver (with its commit log), Gold, rolling means and
        (``diagnosis``) the per-diagnosis hours; CPU of the Gold and trend commits into ``out.cpu``."""
        lake = self._lake()
        lake.append("alerts", out.alerts, marker=BatchMarker("alerts", batch_id))
        result = ShardResult(
            out.silver, out.alerts, out.offered, out.duplicates, out.gold, out.rolling, out.identities
        )
        commit_silver(lake, result, batch_id=batch_id)
        if gold and out.gold.num_rows:
            started = time.process_time()
            written = upsert_gold_rows(lake, out.gold, batch_id=batch_id)
            out.cpu["gold"] = time.process_time() - started
            started = time.process_time()
            upsert_rolling_rows(lake, out.rolling, batch_id=batch_id)
            if diagnosis:
                derive_diagnosis_hourly(lake, written, batch_id=batch_id)
            out.cpu["trends"] = time.process_time() - started

    def _lake(self) -> Lake:
        if self.lake is None:
            raise ValueError("this BatchEngine has no lake to write to")
        return self.lake

    def state_bytes(self) -> int:
        """The shards' memory, in array bytes (cheap: no pickle of the whole state)."""
        return sum(s.memory_bytes() for s in self.states.values())
