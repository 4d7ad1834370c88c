"""Vitals Lake's streaming pipeline: Pub/Sub -> Bronze / Silver / quarantine / Gold Delta tables.

The data's journey, as ``create_pipeline`` builds it:

1. **Read**: envelopes of raw readings from a Pub/Sub subscription (or a JSONL file / Bronze replay),
   decoded into Arrow tables of Bronze rows (raw bytes + where they came from + ingest time).
2. **Batch**: a stream's tables gathered into batches per commit interval of processing time,
   ``--shards`` of them, so that as many workers share the stateless work. A replay needs no
   gathering: a file is indexed into ranges of ``--batch_size`` lines that the workers read
   themselves (offsets cross the shuffle, not payloads); Bronze is sliced. A replay's windows are
   cut by place in the input (a million rows each), not by the clock.
3. **Bronze**: each batch appended as received, one Delta commit (appends from several batches commit
   side by side).
4. **Gate**: parsed and checked against the reading contract in one vectorised pass; records failing
   a named expectation go to **quarantine** with the rule, the rest become typed rows. Each rule's
   checked/passed/failed counts go to **dq_metrics**. Valid readings are enriched from the admissions
   (ward, bed, age band, diagnosis, SpO2 scale, pseudonymous key), scored (NEWS2 with its sub-scores
   and response level, alert flags, MAP, shock index) and keyed by **patient shard** (from the keyed
   pseudonym, ``vitals_lake.sharding``).
5. **Shards**: per patient shard, with its memory (the event ids stored within the de-duplication
   horizon, each patient's baseline, the alert rule's runs, the open Gold windows) held by the worker
   that owns the shard, the ownership in Beam keyed state: duplicates are dropped and counted, the
   anomaly model (``--model-uri``; new versions picked up live) scores each reading against the patient's own
   baseline, the combined alert rule (model and NEWS2, held for a while) runs, and the new rows are
   appended to **Silver** by key; the patients new to the shard go to the restricted identity map
   (**patient_keys**: key and raw id), the one table after the gate that holds the id.
   The alert rule's state changes become **alert events**, kept in the lake
   and published (``--alerts-topic``) to the notifier Cloud Function. The lake is read for a shard
   only when its memory is missing or stale (a new deployment, a replay, a restart, a moved shard).
6. **Gold**: in the same shard stage, the new rows are folded into the shard's open windows of one
   minute and one hour (partial aggregates in its state; late readings update their window within
   the allowed lateness), and the rolling averages of the minutes after them recomputed
   (``gold_patient_rolling``): nothing is read back from the lake. One committer per table upserts
   all shards' rows once per interval.
7. **Trends**: the hours a Gold commit touched are summarised again per diagnosis and hour
   (``gold_diagnosis_hourly``, across all shards' patients).
8. **Warehouse**: with ``--bigquery-dataset``, the Gold rows each commit wrote, the data-quality rows,
   the alert events and the identity map stream into BigQuery, where the views in ``sql/views/``
   serve Looker Studio (patients by key) and the identity view maps a key back for those who may.

Every commit carries a batch marker (a Delta application transaction), so a retried batch is
written once.

``--help`` lists every option (the pipeline's, then Beam's for a run). Run locally (DirectRunner)
against the Pub/Sub emulator::

    python -m pipelines.beam_vitals --subscription projects/P/subscriptions/S --lake var/lake

Replay a file in batch mode::

    python -m pipelines.beam_vitals --input-jsonl readings.jsonl --lake var/lake

On Dataflow add ``--runner DataflowRunner --project P --region R --temp_location gs://...``.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from types import FrameType

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipelines import options as opts
from pipelines.alerts_io import PublishAlerts
from pipelines.batching import BatchForCommit, concat_batch
from pipelines.lake_io import AppendFn, DiagnosisHourlyFn, UpsertRowsFn
from pipelines.options import VitalsOptions
from pipelines.sources import REPLAY_WINDOW, ReadEnvelopes, ReplayBronze, ReplayJsonl
from pipelines.validation import (
    ALERTS,
    DQ,
    GOLD,
    IDENTITIES,
    QUARANTINE,
    ROLLING,
    AdvanceShards,
    GateReadings,
)
from pipelines.warehouse_io import WriteWarehouse
from vitals_lake import access as lake_access
from vitals_lake import contract as c
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, StreamSettings, lake_from_uri
from vitals_lake.lake import Lake

log = logging.getLogger("beam_vitals")
PROG = "python -m pipelines.beam_vitals"
HELP_DESCRIPTION = (
    "Vitals Lake's streaming pipeline: Pub/Sub (or a JSONL file, or a lake's Bronze) -> Bronze, Silver,\n"
    "quarantine and Gold Delta tables; alert events to Pub/Sub; Gold, alerts and data quality to BigQuery."
)
HELP_EXAMPLES = f"""examples:
  stream, locally against the Pub/Sub emulator:
    {PROG} --subscription projects/P/subscriptions/S --lake var/lake
  replay a file of readings (batch):
    {PROG} --input-jsonl readings.jsonl --lake var/lake
  rebuild Silver and Gold from a lake's Bronze into another lake (batch):
    {PROG} --input-bronze var/lake --lake var/lake-v2
  on Dataflow, add:
    --runner DataflowRunner --project P --region R --temp_location gs://BUCKET/temp"""


def create_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """Build the whole graph (nothing runs until ``.run()``)."""
    options = opts.finalize(options)
    o = options.view_as(VitalsOptions)
    lake = opts.lake_settings(options)
    timing = opts.stream_settings(options)
    run_id = o.run_id or uuid.uuid4().hex[:12]
    p = beam.Pipeline(options=options)

    # 1-2. Read raw readings into batches of Bronze rows, (batch id, rows) per commit interval (a replay:
    #      per replay window).
    engine = opts.engine_settings(options)
    started_us = time.time_ns() // 1000
    if o.subscription:
        # A stream: envelopes decoded as they come, gathered once per interval into ``--shards``
        # batches, so that as many workers share the stateless work.
        batches = (
            p
            | "ReadEnvelopes" >> ReadEnvelopes(o.subscription)
            | "BatchForCommit" >> BatchForCommit(timing.commit_interval, run_id=run_id, shards=engine.shards)
            | "ConcatBatch"
            >> beam.Map(concat_batch, schema=c.BRONZE_SCHEMA).with_output_types(tuple[str, pa.Table])
        )
    elif o.input_jsonl:
        # A file: indexed into ranges of ``--batch_size`` lines; each worker reads the ranges it gets.
        batches = p | "ReplayJsonl" >> ReplayJsonl(
            o.input_jsonl, batch_size=o.batch_size, run_id=run_id, started_us=started_us
        )
    else:
        source_lake = lake_from_uri(o.input_bronze, service_account_path=o.lake_service_account)
        batches = p | "ReplayBronze" >> ReplayBronze(
            source_lake, batch_size=o.batch_size, run_id=run_id, started_us=started_us
        )

    # 3. Bronze: as received (a replay from Bronze writes it only into a different lake).
    if not o.input_bronze or lake_from_uri(o.input_bronze) != lake:
        _ = batches | "WriteBronze" >> beam.ParDo(AppendFn(lake, "bronze"))

    # 4. Gate (stateless): parse and check against the reading contract (failures to quarantine, one
    #    data-quality row per rule), enrich from admissions, NEWS2 and flags; valid rows keyed by
    #    patient shard.
    gated = batches | "GateReadings" >> GateReadings(lake, settings=engine)
    _ = gated[QUARANTINE] | "WriteQuarantine" >> beam.ParDo(AppendFn(lake, "quarantine"))
    _ = gated[DQ] | "WriteDataQuality" >> beam.ParDo(AppendFn(lake, "dq_metrics"))

    # 5. Per patient shard (its memory: event ids within the horizon, baselines, alert runs): drop
    #    duplicates, score with the anomaly model, run the alert rule, append the new rows to Silver.
    #    Alert events are kept in the lake and published to the notifier.
    #    A batch run's shards fill a state gap only from rows ingested before the run started: what the
    #    run wrote itself is in its shards' state already.
    shards = gated.valid | "AdvanceShards" >> AdvanceShards(
        lake,
        settings=engine,
        run_id=run_id,
        model_uri=o.model_uri,
        model_poll=o.model_poll_seconds,
        ingested_before_us=None if o.subscription else started_us,
    )
    _ = shards[ALERTS] | "WriteAlerts" >> beam.ParDo(AppendFn(lake, "alerts"))
    if topic := opts.alerts_topic(options):
        _ = shards[ALERTS] | "PublishAlerts" >> PublishAlerts(topic)

    # 6. Gold: the windows (one minute, one hour) and rolling means the shards computed from their
    #    state, upserted once per interval (a replay: once per replay window) by one committer per
    #    table; then the per-diagnosis hours.
    gold = (
        shards[GOLD]
        | "BatchGold" >> _gold_commits(o, timing, run_id)
        | "UpsertGold" >> beam.ParDo(UpsertRowsFn(lake, "gold"))
    )
    _ = (
        shards[ROLLING]
        | "BatchRolling" >> _gold_commits(o, timing, run_id)
        | "UpsertRolling" >> beam.ParDo(UpsertRowsFn(lake, "rolling"))
    )
    # 7. The per-diagnosis hours (every shard's patients) from the Gold hours a commit touched.
    _ = gold | "DeriveDiagnosisHourly" >> beam.ParDo(DiagnosisHourlyFn(lake))

    # 8. The warehouse: the Gold rows each commit wrote, and data-quality rows, streamed into BigQuery
    #    (idempotent insert ids; refused rows to a dead-letter table). Views read the newest per key.
    if bigquery := opts.bigquery_settings(options):
        _ = gold | "StreamGoldToBigQuery" >> WriteWarehouse(bigquery, c.GOLD_TABLE)
        _ = gated[DQ] | "StreamDataQualityToBigQuery" >> WriteWarehouse(bigquery, c.DQ_METRICS_TABLE)
        _ = shards[ALERTS] | "StreamAlertsToBigQuery" >> WriteWarehouse(bigquery, c.ALERTS_TABLE)
        # The identity map (restricted dataset): the keys new to a shard, for the identity view.
        _ = shards[IDENTITIES] | "StreamPatientKeysToBigQuery" >> WriteWarehouse(
            bigquery, c.PATIENT_KEYS_TABLE
        )
    return p


def _gold_commits(o: VitalsOptions, timing: StreamSettings, run_id: str) -> BatchForCommit:
    """A stream's Gold commits once per commit interval; a replay's once per replay window (the shards'
    rows keep the window number their batch was stamped with)."""
    if o.subscription:
        return BatchForCommit(timing.commit_interval, run_id=run_id)
    return BatchForCommit(REPLAY_WINDOW, run_id=run_id, clock="element")


def run(argv: Sequence[str] | None = None) -> PipelineResult:
    """Entry point: build, create the tables it writes, run; in local streaming mode wait until stopped."""
    options = PipelineOptions(argv if argv is not None else sys.argv[1:], save_main_session=False)
    pipeline = create_pipeline(options)
    o = options.view_as(VitalsOptions)
    std = options.view_as(StandardOptions)
    if not str(std.runner).startswith("Dataflow"):
        # The tables the pipeline writes (its grant in the cloud); Dataflow workers create them on use.
        Lake(opts.lake_settings(options)).ensure_all(lake_access.writes("pipeline"))
    result = pipeline.run()
    if std.streaming and std.runner == opts.LOCAL_STREAMING_RUNNER:
        _wait_local_streaming(result, max_seconds=o.max_run_seconds)
    elif not std.streaming:
        result.wait_until_finish()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.beam_vitals``: check the options (a bad one: the usage and exit 2), then run."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = opts.argument_parser(PROG, description=HELP_DESCRIPTION, epilog=HELP_EXAMPLES)
    parser.parse_known_args(args)  # --help; a malformed value exits 2 with the usage
    if removed := opts.removed_options(args):
        return usage_error(parser, "; ".join(removed))
    try:
        opts.finalize(PipelineOptions(args, save_main_session=False))
    except ConfigError as exc:
        return usage_error(parser, str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        run(args)
    except ConfigError as exc:  # found only once the run starts (e.g. the pseudonym key)
        return usage_error(parser, str(exc))
    return 0


def _wait_local_streaming(result: PipelineResult, *, max_seconds: float | None) -> None:
    """The DirectRunner cannot wait with a timeout: poll, and cancel on SIGTERM/SIGINT or deadline."""
    stop = {"requested": False}

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: cancelling the pipeline", signum)
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    deadline = time.monotonic() + max_seconds if max_seconds else None
    while not PipelineState.is_terminal(result.state):
        if stop["requested"] or (deadline is not None and time.monotonic() > deadline):
            result.cancel()
            break
        time.sleep(0.5)
    log.info("pipeline state: %s", result.state)


if __name__ == "__main__":
    sys.exit(main())
