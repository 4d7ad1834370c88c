"""Silver's gate and the patient shards: the batch engine's two halves as Beam stages.

``GateReadings`` (stateless, any worker): parse and check every record of an ingest batch, enrich and
NEWS2-score the valid ones, and emit them keyed by patient shard. Outputs: main (shard, (batch_id,
rows)), 'quarantine' (batch_id, rows with the rules they failed), 'dq' (batch_id, one row per rule).

``AdvanceShards`` (keyed by patient shard): gather each shard's rows of one
commit interval, drop the event ids the shard has already stored, score the new readings with the
anomaly model against each patient's baseline, run the alert rule, and append the new rows to Silver.
The shard's memory (event ids within the horizon, baselines, alert runs, open Gold windows) stays in
the worker that processes the shard; its keyed state is the owner token that says whether that memory
is current. The lake is read for a shard only when its memory is not (see ``SHARD_OWNER``).
The new rows are also folded into the shard's open Gold windows (partial aggregates in the same
state), so the Gold rows and rolling means they change come out of memory, not from the lake.
Outputs: main (new Silver rows), 'alerts' (batch_id, alert events), 'gold' and 'rolling' (rows).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Final

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.coders import StrUtf8Coder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteRuntimeState, ReadModifyWriteStateSpec
from apache_beam.transforms.window import GlobalWindows, IntervalWindow
from apache_beam.utils.shared import Shared

from pipelines import counters
from vitals_lake import contract as c
from vitals_lake.admissions import PatientDirectory
from vitals_lake.config import LakeSettings
from vitals_lake.engine import (
    EngineSettings,
    ShardState,
    advance_shard,
    commit_silver,
    gate,
    shard_readers,
)
from vitals_lake.lake import Lake
from vitals_lake.memory import retain_freed_memory
from vitals_lake.model.serving import ModelWatcher
from vitals_lake.pseudonym import PseudonymKey

QUARANTINE = "quarantine"
ALERTS = "alerts"
DQ = "dq"
GOLD = "gold"
ROLLING = "rolling"
IDENTITIES = "identities"
log = logging.getLogger(__name__)


BATCH_OF_ROWS: Final = tuple[str, pa.Table]  # (batch id, rows)


def typed_tables(outputs: pvalue.DoOutputsTuple, types: dict[str, object]) -> pvalue.DoOutputsTuple:
    """Give tagged outputs their element types (``with_output_types`` types only the main output), so
    that their tables are coded by ``ArrowTableCoder`` (pipelines/arrow_pickling.py)."""
    for tag, element_type in types.items():
        outputs[tag].element_type = beam.typehints.native_type_compatibility.convert_to_beam_type(
            element_type
        )
    return outputs


def batch_window_start(batch_id: str) -> int:
    """Batch ids are ``<window start in µs>-<shard>-<run id>`` (see ``batching.BatchForCommit``)."""
    return int(batch_id.split("-", 1)[0])


class GateReadingsFn(beam.DoFn):
    def __init__(self, lake: LakeSettings, settings: EngineSettings) -> None:
        self.lake_settings = lake
        self.settings = settings
        self.quarantined = Metrics.counter(counters.QUALITY, counters.QUARANTINED_ROWS)
        self.unknown = Metrics.counter(counters.QUALITY, counters.UNKNOWN_PATIENT_ROWS)
        self.failed_batches = Metrics.counter(counters.QUALITY, counters.FAILED_QUALITY_BATCHES)
        self.patients: PatientDirectory | None = None
        self.key: bytes = b""

    def setup(self) -> None:
        retain_freed_memory()
        self.patients = PatientDirectory(Lake(self.lake_settings))
        self.key = PseudonymKey.from_env().secret

    def process(self, batch: tuple[str, pa.Table]) -> Iterator[object]:
        assert self.patients is not None
        batch_id, bronze = batch
        result = gate(
            bronze,
            batch_id=batch_id,
            window_start_us=batch_window_start(batch_id),
            settings=self.settings,
            patients=self.patients.table(),
            key=self.key,
        )
        parsed = result.parsed
        self.quarantined.inc(parsed.quarantine.num_rows)
        for rule, count in parsed.rule_counts.items():
            if count:
                Metrics.counter(counters.QUALITY, counters.failed_rule(rule)).inc(count)
        if result.over_ratio:
            self.failed_batches.inc()
        for shard, rows in result.shards:
            self.unknown.inc(pc.sum(pc.invert(rows[c.KNOWN_PATIENT])).as_py() or 0)
            yield shard, rows
        if parsed.quarantine.num_rows:
            yield pvalue.TaggedOutput(QUARANTINE, (batch_id, parsed.quarantine))
        yield pvalue.TaggedOutput(DQ, (batch_id, result.dq))


class GateReadings(beam.PTransform):
    """(batch_id, Bronze rows) -> (shard, valid rows), 'quarantine' rows, 'dq' metric rows."""

    def __init__(self, lake: LakeSettings, *, settings: EngineSettings) -> None:
        super().__init__()
        self.lake = lake
        self.settings = settings

    def expand(self, batches: beam.PCollection) -> pvalue.DoOutputsTuple:
        outputs = batches | "ParseCheckEnrich" >> beam.ParDo(
            GateReadingsFn(self.lake, self.settings)
        ).with_output_types(tuple[int, pa.Table]).with_outputs(QUARANTINE, DQ, main="valid")
        return typed_tables(outputs, {QUARANTINE: BATCH_OF_ROWS, DQ: BATCH_OF_ROWS})


class _NameShardBatch(beam.DoFn):
    """(shard, [rows]) of one commit window -> (shard, (batch id, rows)); the id is deterministic per
    window and shard within a run, so a retried bundle's commit is recognised by its marker."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def process(
        self,
        keyed: tuple[int, Iterable[pa.Table]],
        window: IntervalWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]  # Beam's marker
    ) -> Iterator[tuple[int, tuple[str, pa.Table]]]:
        shard, tables = keyed
        rows = pa.concat_tables(list(tables))
        yield shard, (f"{int(window.start.micros)}-p{shard}-{self.run_id}", rows)


# The shard's keyed state is its owner token: which process holds the shard's memory, and after which
# batch. The memory itself (a ShardState: ~100 KB a patient) stays in that worker process. Writing the
# whole ShardState into the runner's state every batch cost O(state) per batch: at 20,000 patients on
# the local runner the pipeline used 0.98 cores and consumed 28 % of the readings in 10 minutes.
# When the token does not match the process's memory (a first start, a restart, a shard moved to
# another worker, a retried bundle whose changes the runner discarded), the memory is rebuilt from the
# shard's Silver: the same exact gap-filling a new deployment does.
SHARD_OWNER = ReadModifyWriteStateSpec("owner", StrUtf8Coder())
_SHARD_OWNER_PARAM = beam.DoFn.StateParam(SHARD_OWNER)
_PROCESS: Final = uuid.uuid4().hex[:12]


class _ShardMemory:
    """This process's shard states, by (run, shard), with the token each was last written under."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, int], tuple[str, ShardState]] = {}

    def take(self, run_id: str, shard: int, token: str | None) -> ShardState | None:
        with self._lock:
            held = self._held.pop((run_id, shard), None)
        return held[1] if held is not None and token is not None and held[0] == token else None

    def keep(self, run_id: str, shard: int, state: ShardState) -> str:
        token = f"{_PROCESS}:{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._held[(run_id, shard)] = (token, state)
        return token


SHARD_MEMORY: Final = _ShardMemory()


class AdvanceShardFn(beam.DoFn):
    """Per patient shard: de-duplicate, score, alert, append to Silver; the shard's memory in state."""

    def __init__(
        self,
        lake: LakeSettings,
        settings: EngineSettings,
        model_uri: str | None,
        model_poll: float,
        *,
        run_id: str = "",
        ingested_before_us: int | None = None,
    ) -> None:
        self.lake_settings = lake
        self.settings = settings
        self.run_id = run_id
        self.ingested_before_us = ingested_before_us
        self.model_uri = model_uri
        self.model_poll = model_poll
        # One model watcher per worker process (the model is not per shard); Shared keeps it alive
        # between the DoFn instances the runner makes.
        self.shared = Shared()
        self.watcher: ModelWatcher | None = None
        self.lake: Lake | None = None
        self.valid = Metrics.counter(counters.QUALITY, counters.VALID_ROWS)
        self.inserted = Metrics.counter("lake", "silver_rows")
        self.duplicates = Metrics.counter("lake", "duplicates_removed")
        self.alert_events = Metrics.counter("alerts", "events")
        # Rows of patients with the alert condition present or an alert open: the rows whose alert
        # state the rule works out event by event (every other row only moves its patient's clock).
        self.alert_episode_rows = Metrics.counter("alerts", "episode_rows")
        self.restored = Metrics.counter("state", "shards_started_without_state")
        self.lake_reads = Metrics.counter("state", "lake_reads")
        self.forgotten = Metrics.counter("state", "patients_forgotten")  # idle a day: left the memory
        self.state_bytes = Metrics.distribution("state", "shard_state_bytes")

    def setup(self) -> None:
        retain_freed_memory()
        self.lake = Lake(self.lake_settings)
        if self.model_uri:
            uri, poll = self.model_uri, self.model_poll
            self.watcher = self.shared.acquire(lambda: ModelWatcher(uri, poll_seconds=poll))

    def process(
        self,
        keyed: tuple[int, tuple[str, pa.Table]],
        owner: ReadModifyWriteRuntimeState = _SHARD_OWNER_PARAM,  # type: ignore[assignment]  # per key
    ) -> Iterator[object]:
        assert self.lake is not None
        shard, (batch_id, rows) = keyed
        state = SHARD_MEMORY.take(self.run_id, shard, owner.read())
        if state is None:
            state = ShardState.new(self.settings)
            self.restored.inc()
        reads_before, episode_rows_before = state.lake_reads, state.scorer.alerts.episode_rows
        readers = shard_readers(
            self.lake, shard=shard, shards=self.settings.shards, ingested_before_us=self.ingested_before_us
        )
        model = self.watcher.current() if self.watcher else None
        result = advance_shard(state, rows, model=model, readers=readers)
        commit_silver(self.lake, result, batch_id=batch_id)
        owner.write(SHARD_MEMORY.keep(self.run_id, shard, state))
        self.lake_reads.inc(state.lake_reads - reads_before)
        self.alert_episode_rows.inc(state.scorer.alerts.episode_rows - episode_rows_before)
        self.valid.inc(result.offered)
        self.inserted.inc(result.silver.num_rows)
        self.duplicates.inc(result.duplicates)
        self.forgotten.inc(result.forgotten)
        self.state_bytes.update(state.memory_bytes())
        if result.silver.num_rows:
            yield result.silver
        if result.alerts.num_rows:
            self.alert_events.inc(result.alerts.num_rows)
            yield pvalue.TaggedOutput(ALERTS, (batch_id, result.alerts))
        if result.gold.num_rows:
            yield pvalue.TaggedOutput(GOLD, result.gold)
        if result.rolling.num_rows:
            yield pvalue.TaggedOutput(ROLLING, result.rolling)
        if result.identities.num_rows:  # already in the lake's identity map (commit_silver)
            yield pvalue.TaggedOutput(IDENTITIES, (batch_id, result.identities))


class AdvanceShards(beam.PTransform):
    """(shard, rows) of ingest batches -> new Silver rows (main), 'alerts' (batch_id, events), and the
    'gold' and 'rolling' rows the new readings changed (computed from the shard's state), and the
    'identities' (batch_id, c.PATIENT_KEYS_SCHEMA rows) new to the shard's state, already appended to the
    lake."""

    def __init__(
        self,
        lake: LakeSettings,
        *,
        settings: EngineSettings,
        run_id: str,
        model_uri: str | None = None,
        model_poll: float = 30.0,
        ingested_before_us: int | None = None,
    ) -> None:
        super().__init__()
        self.lake = lake
        self.settings = settings
        self.run_id = run_id
        self.model_uri = model_uri
        self.model_poll = model_poll
        self.ingested_before_us = ingested_before_us  # a batch run's start (None in a stream)

    def expand(self, keyed: beam.PCollection) -> pvalue.DoOutputsTuple:
        outputs = (
            keyed
            # Still in the ingest batches' windows: one batch per shard per commit interval (a replay:
            # per replay window).
            | "GatherPerShard" >> beam.GroupByKey()
            | "NameShardBatch"
            >> beam.ParDo(_NameShardBatch(self.run_id)).with_output_types(tuple[int, tuple[str, pa.Table]])
            # Keyed state must outlive the commit windows: it is per shard, for the whole run.
            | "ShardStateLivesAcrossWindows"
            >> beam.WindowInto(GlobalWindows()).with_output_types(tuple[int, tuple[str, pa.Table]])
            | "DedupScoreAlertInsert"
            >> beam.ParDo(
                AdvanceShardFn(
                    self.lake,
                    self.settings,
                    self.model_uri,
                    self.model_poll,
                    run_id=self.run_id,
                    ingested_before_us=self.ingested_before_us,
                )
            )
            .with_input_types(beam.typehints.KV[int, Any])  # an int key: a deterministic coder for the state
            .with_output_types(pa.Table)
            .with_outputs(ALERTS, GOLD, ROLLING, IDENTITIES, main="silver")
        )
        return typed_tables(
            outputs, {ALERTS: BATCH_OF_ROWS, GOLD: pa.Table, ROLLING: pa.Table, IDENTITIES: BATCH_OF_ROWS}
        )
