"""Capacity model: what a patient count at a reading rate needs on Google Cloud, and what breaks first.

Pure arithmetic over three inputs: the :class:`Workload` (patients, rates, envelope and row sizes, the
pipeline's timing and its patient shards), what was :class:`Measured` on the development machine
(``var/bench/results.json``, and the state sizes in docs/design.md) and published :class:`Prices` and
:class:`Quotas` (each with its source URL and the date it was read). Everything else the model needs
is an explicit :class:`Assumptions` field, so a reader can see and change it. It registers no
benchmark and imports nothing heavy: the bench runner imports every module of this package.

    python -m bench.capacity [var/bench/results.json] [--patients N] [--rate R] [--shards N] [--pipelines N]

prints the plan as markdown (``docs/capacity.md`` is generated this way).

The design it models: one streaming job keys its work by **patient shard** (``--shards``, 64 on
Dataflow). The stateless gate runs on ``shards`` ingest batches per commit interval; the shard stage
keeps each shard's memory (event ids of the de-duplication horizon, baselines, open Gold windows) in
the worker process that owns the shard, with only an owner token in Beam keyed state: a shard whose
token does not match (a new job, a restarted worker, a moved shard, a retried bundle) rebuilds its
memory from Silver. ``Assumptions.state_in_runner`` models the first version instead, which kept the
whole memory in one ``ReadModifyWriteState`` value per shard, read and written every interval. Bronze,
quarantine, data quality, Silver and alerts are appended by every batch or shard side by side; Gold
and the rolling means have one committer each, one MERGE per interval.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from vitals_lake.cli import usage_error

MONTH_S = 730 * 3600  # Google prices a month as 730 hours
DAY_S = 86_400
GIB = 2**30
TIB = 2**40
DEFAULT_RESULTS = Path("var/bench/results.json")
CHECKPOINT_INTERVAL = 10  # vitals_lake.lake: delta.checkpointInterval


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What arrives, and how the pipeline is set to handle it (defaults: the code as it is)."""

    patients: int = 100_000
    readings_per_patient_per_s: float = 1.0
    # Pub/Sub: readings per message (1 = one message per reading) and messages per publish request.
    envelope_readings: int = 500  # EnvelopeLimits.max_records
    messages_per_request: int = 1  # worst case for unbatched devices: one publish call per reading
    reading_bytes: int = 239  # measured: mean JSON reading of the simulator
    envelope_overhead_per_reading: int = 58  # measured: a 500-reading Kafka envelope is 297 B a reading
    message_overhead_bytes: int = 200  # attributes + 20 B timestamp + message_id (assumed)
    subscriptions: int = 1
    pubsub_retention_days: float = 7.0  # infra: message_retention_duration 604800s
    pubsub_retained_copies: int = 2  # infra: the topic retains *and* the subscription keeps acked messages
    # Pipeline timing (vitals_lake.config.StreamSettings).
    commit_interval_s: float = 5.0
    gold_windows_s: tuple[int, ...] = (60, 3600)
    dedup_horizon_s: float = 3600.0
    allowed_lateness_s: float = 600.0
    # Patient shards of one job (--shards; Terraform pipeline_shards, default 64 on Dataflow): the
    # unit of parallelism and of the shard memory. Ingest batches are spread over as many keys.
    shards: int = 64
    # Independent jobs, each with its own subscription, shards and Delta tables (1 = one deployment).
    pipelines: int = 1
    # Rows streamed to BigQuery: logical size (billing) and JSON size (request quota), measured on the demo.
    gold_row_bq_bytes: int = 488
    gold_row_json_bytes: int = 1655
    dq_rules: int = 50
    dq_row_bq_bytes: int = 109
    dq_row_json_bytes: int = 244
    alerts_per_patient_day: float = 1.0  # design.md: 0.5 false alarms a patient-day, plus true ones
    events_per_alert: float = 1.5  # demo: 23 events for 16 alerts opened
    alert_row_bq_bytes: int = 219
    alert_row_json_bytes: int = 605

    def __post_init__(self) -> None:
        if self.patients < 1 or self.readings_per_patient_per_s <= 0 or self.shards < 1 or self.pipelines < 1:
            raise ValueError("patients, readings_per_patient_per_s, shards and pipelines must be positive")
        if self.envelope_readings < 1 or self.messages_per_request < 1 or self.commit_interval_s <= 0:
            raise ValueError("envelope_readings, messages_per_request and commit_interval_s must be positive")
        if not self.gold_windows_s or min(self.gold_windows_s) <= 0:
            raise ValueError("gold_windows_s must hold positive window lengths")

    @property
    def readings_per_s(self) -> float:
        return self.patients * self.readings_per_patient_per_s


@dataclass(frozen=True, kw_only=True)
class Measured:
    """Figures measured on the development machine (per process CPU second, so per core).

    The defaults are the figures of docs/benchmarks.md (``make bench`` of 2026-11-22; ``lake_age`` of
    2026-12-03; ``pipeline_core`` of 2026-12-05) and of docs/design.md (the shard state);
    :meth:`from_results` replaces those a results file holds.
    """

    pipeline_readings_per_cpu_s: float = 102_148.0  # pipeline_core A marginal (2026-12-05, fourth session)
    sustained_readings_per_core_s: float | None = None  # a sustained-load run, when there is one
    gold_merge_rows_per_s: float = 9758.0  # growth: 1,000-row Gold MERGE into 20,000 rows (the slower)
    lake_scan_rows_per_s: float = 748_171.0  # growth: read one day of Silver after maintenance
    # CPU a Gold MERGE spends rewriting rows that share a file with a matched row: lake_age of
    # 2026-12-03 13:02 UTC, on the date-only layout (6 h lake minus empty lake, per MERGE, over the Gold
    # rows of the day it held). lake_age no longer measures it: with the hour layout B hardly rewrites.
    gold_rewrite_rows_per_s: float = 302_500.0
    # Shard state per patient, pickled (design.md: 500 patients at one reading
    # per 10 s, 2 shards): the baseline ring (1,440 entries x 6 vitals x 8 B), the open Gold windows,
    # and the event ids of the de-duplication horizon: 360 ids (an hour at 0.1 Hz) pickled 21,721 B
    # (2026-12-05: the id, its time, and its place in the sorted hash index; 17 KB before the index).
    state_ring_bytes_per_patient: float = 69_000.0
    state_gold_bytes_per_patient: float = 13_500.0
    state_bytes_per_event_id: float = 21_721.0 / 360
    # Beam PickleCoder on one shard's state of 24.6 MB: encode 40 ms, decode 14 ms.
    state_encode_s_per_byte: float = 0.040 / 24.6e6
    state_decode_s_per_byte: float = 0.014 / 24.6e6
    source: str = "docs/benchmarks.md"

    @property
    def readings_per_core_s(self) -> float:
        """The sustained figure when measured, else the benchmark's."""
        return self.sustained_readings_per_core_s or self.pipeline_readings_per_cpu_s

    @classmethod
    def from_results(cls, path: Path | str) -> Measured:
        """Read ``results.json`` of ``python -m bench``; figures it lacks keep their defaults.

        ``source`` names the file (not its directory) and the benchmarks the figures came from.
        """
        doc = json.loads(Path(path).read_text())
        by_name = {r.get("name"): r for r in doc.get("results", [])}
        found: dict[str, Any] = {}
        used: list[str] = []
        core = by_name.get("pipeline_core")
        if core is not None:
            # The marginal rate (start-up subtracted) is what a long-running worker reaches; results
            # written before it was measured have only the whole run.
            variants = core.get("variants", [])
            this = [
                v
                for prefix in ("A marginal", "A this pipeline")
                for v in variants
                if str(v.get("label", "")).startswith(prefix)
            ]
            if not this:
                raise ValueError(f"{path}: pipeline_core has no variant labelled 'A this pipeline ...'")
            found["pipeline_readings_per_cpu_s"] = float(this[0]["rows_per_s"])
            used.append("pipeline_core")
        growth = by_name.get("growth", {}).get("variants", [])
        merges = [float(v["rows_per_s"]) for v in growth if "MERGE" in str(v.get("group", ""))]
        if merges:
            found["gold_merge_rows_per_s"] = min(merges)  # the slower one: Gold at 10N rows
        scans = [
            float(v["rows_per_s"])
            for v in growth
            if "silver" in str(v.get("group", "")) and v.get("label") == "after maintenance"
        ]
        if scans:
            found["lake_scan_rows_per_s"] = scans[0]
        if merges or scans:
            used.append("growth")
        per_core = _sustained_per_core(by_name.get("sustained_load", {}))
        if per_core:
            found["sustained_readings_per_core_s"] = per_core
            used.append("sustained_load")
        elif "sustained_load" in by_name:
            used.append("sustained_load (no run held: not used)")
        if not used:
            raise ValueError(f"{path}: none of pipeline_core, growth, sustained_load")
        missing = [n for n in ("pipeline_core", "growth") if n not in used]
        source = f"{Path(path).name}: {', '.join(used)}"
        if missing:
            source += f"; {', '.join(missing)} from docs/benchmarks.md"
        return cls(**found, source=source)


def _sustained_per_core(result: dict[str, Any]) -> float | None:
    """Readings/s per pipeline core of the fastest run of ``sustained_load`` (bench/load.py) that held.

    The busiest run that still kept up: at low load the fixed cost of polling makes a core look slower.
    A run that held only for 3 minutes and not for 10 is counted as held here (each run is judged on
    its own), so for hour-long steady states this is the optimistic end.
    """
    held = [
        (float(run["readings_per_s"]), cores)
        for run in result.get("config", {}).get("runs", [])
        if run.get("holds")
        and run.get("readings_per_s")
        and (cores := float(run.get("processes", {}).get("pipeline", {}).get("cpu_cores") or 0.0)) > 0
    ]
    if not held:
        return None
    rate, cores = max(held)  # the highest load that held
    return rate / cores


@dataclass(frozen=True, kw_only=True)
class Price:
    usd: float
    unit: str
    source: str
    read: str  # when the figure was read (or the date its source gives)
    note: str = ""


_DATAFLOW = "https://cloud.google.com/dataflow/pricing"
_DATAFLOW_NOTE = "us-central1 list price, transcribed 2026-09-08; europe-west2 not found (assumed equal)"
_PUBSUB = "https://cloud.google.com/pubsub/pricing"
_BQ = "https://cloud.google.com/bigquery/pricing"
_GCS = "https://cloud.google.com/storage/pricing"
_RUN = "https://cloud.google.com/run/pricing"


@dataclass(frozen=True, kw_only=True)
class Prices:
    """List prices in USD, no committed-use discounts, no taxes."""

    dataflow_vcpu_hour: Price = Price(
        usd=0.069, unit="streaming vCPU-hour", source=_DATAFLOW, read="2026-09-08", note=_DATAFLOW_NOTE
    )
    dataflow_memory_gib_hour: Price = Price(
        usd=0.003557, unit="GiB-hour", source=_DATAFLOW, read="2026-09-08", note=_DATAFLOW_NOTE
    )
    dataflow_pd_gib_hour: Price = Price(
        usd=0.000054, unit="standard PD GiB-hour", source=_DATAFLOW, read="2026-09-08", note=_DATAFLOW_NOTE
    )
    streaming_engine_gib: Price = Price(
        usd=0.018, unit="GiB processed (legacy billing)", source=_DATAFLOW, read="2026-09-08"
    )
    streaming_engine_secu_hour: Price = Price(
        usd=0.089, unit="SECU-hour (resource-based billing)", source=_DATAFLOW, read="2026-09-08"
    )
    pubsub_tib: Price = Price(
        usd=40.0,
        unit="TiB published or delivered, first 10 GiB free; at least 1000 B per request",
        source=_PUBSUB,
        read="2026-09-20",
    )
    pubsub_storage_gib_month: Price = Price(
        usd=0.27,
        unit="GiB-month retained (topic retention, retained acked messages)",
        source=_PUBSUB,
        read="2026-09-20",
    )
    bq_legacy_streaming_gib: Price = Price(
        usd=0.05,
        unit="GiB ($0.01 per 200 MB), rows billed at least 1 KB",
        source=_BQ,
        read="2026-09-02",
        note="insertAll, which the pipeline uses",
    )
    bq_write_api_gib: Price = Price(
        usd=0.025,
        unit="GiB ingested, first 2 TiB a month free",
        source="https://help.nops.io/inform/supported-recommendations/"
        "use-bigquery-storage-write-api-instead-of-streaming-inserts.md",
        read="2026-11 (undated page)",
        note="secondary source; Google's page was not in the stored copies",
    )
    gcs_class_a_1000: Price = Price(
        usd=0.005,
        unit="1,000 Class A ops (PUT, LIST)",
        source="https://cloud.google.com/storage/pricing-examples",
        read="2026-11 (page example, regional Standard)",
        note="a 2026-09-02 transcription of the pricing page gives $0.01: check",
    )
    gcs_class_b_1000: Price = Price(
        usd=0.0004, unit="1,000 Class B ops (GET)", source=_GCS, read="2026-09-02"
    )
    gcs_standard_gib_month: Price = Price(
        usd=0.023, unit="GiB-month, Standard, europe-west2", source=_GCS, read="2026-11 (stored copy)"
    )
    run_requests_million: Price = Price(
        usd=0.40, unit="million requests, 2 M free", source=_RUN, read="2026-09-08"
    )
    run_vcpu_s: Price = Price(usd=0.000024, unit="vCPU-second", source=_RUN, read="2026-09-08")
    run_gib_s: Price = Price(usd=0.0000025, unit="GiB-second", source=_RUN, read="2026-09-08")

    def all(self) -> dict[str, Price]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, kw_only=True)
class Quota:
    value: float
    unit: str
    source: str
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class Quotas:
    pubsub_publish_bytes_s: Quota = Quota(
        value=50e6,
        unit="B/s publish per region (small regions, europe-west2; large: 200 MB/s)",
        source="https://cloud.google.com/pubsub/quotas",
        note="3,000,000 kB/min; adjustable",
    )
    pubsub_subscribe_bytes_s: Quota = Quota(
        value=100e6,
        unit="B/s pull per region (small regions)",
        source="https://cloud.google.com/pubsub/quotas",
        note="assumed twice the publish quota: the stored copy did not show the figure",
    )
    bq_rows_s_table: Quota = Quota(
        value=100_000,
        unit="rows/s per table (insertAll with insertId)",
        source="https://cloud.google.com/bigquery/quotas#streaming_inserts",
        note="from the quotas page as last known; stored copies did not show it",
    )
    bq_bytes_s_table: Quota = Quota(
        value=100e6,
        unit="B/s per table (insertAll with insertId)",
        source="https://cloud.google.com/bigquery/quotas#streaming_inserts",
        note="as above",
    )
    bq_rows_s_project: Quota = Quota(
        value=500_000,
        unit="rows/s per project, EU/US multi-region (insertAll with insertId)",
        source="https://cloud.google.com/bigquery/quotas#streaming_inserts",
        note="as above",
    )
    gcs_bucket_writes_s: Quota = Quota(
        value=1000,
        unit="object writes/s per bucket before autoscaling",
        source="https://cloud.google.com/storage/docs/request-rate",
    )
    gcs_bucket_reads_s: Quota = Quota(
        value=5000,
        unit="object reads/s per bucket before autoscaling",
        source="https://cloud.google.com/storage/docs/request-rate",
    )
    gcs_same_object_writes_s: Quota = Quota(
        value=1.0,
        unit="writes/s to one object name",
        source="https://cloud.google.com/storage/quotas",
    )
    dataflow_element_bytes: Quota = Quota(
        value=80e6,
        unit="B per element value (Streaming Engine)",
        source="https://cloud.google.com/dataflow/quotas",
        note="cited in apache/beam#30558; key commits over ~180 MB are rejected (apache/beam#19956)",
    )
    dataflow_state_value_bytes: Quota = Quota(
        value=80e6,
        unit="B per state value (Streaming Engine)",
        source="https://cloud.google.com/dataflow/quotas",
        note="the 80 MB value limit; apache/beam#30558: a state tag's value over it fails the key's commit",
    )


@dataclass(frozen=True, kw_only=True)
class Assumptions:
    """What was not measured. Each is a knob; docs/capacity.md says why each value was chosen."""

    dataflow_core_factor: float = 0.7  # a Dataflow vCPU (a hyperthread) + Streaming Engine RPCs vs local
    headroom: float = 1.5  # run at two thirds: autoscaler target and backlog catch-up
    machine_type: str = "n2-standard-2"
    vcpus_per_worker: int = 2
    memory_gib_per_worker: float = 8.0
    disk_gib_per_worker: float = 30.0  # Streaming Engine workers' boot disk
    max_workers: int = 3  # infra/terraform dataflow_max_workers default
    # Streaming Engine traffic: the Bronze rows through BatchForCommit's GroupByKey, the gated rows
    # through the shard stage's GroupByKey, the Gold and rolling rows through their committers'
    # GroupByKey. Measured as the Arrow IPC streams that cross (pipelines/arrow_pickling.py, 2026-12-05):
    # a 500-reading message's Bronze table is 345 B a reading; gated rows in a stream's pieces (120 rows:
    # one shard's share of one ingest batch) 287 B a row. Tables under 1 MB cross uncompressed.
    shuffled_bytes_per_reading: float = 345.0
    gated_row_bytes: float = 287.0  # an enriched, scored Silver-shaped Arrow row (Parquet: 208 B)
    rolling_row_bytes: float = 200.0
    secu_per_gib_s: float = 58.0  # Google's Kafka->BigQuery benchmark: 58 SECU at 1 GiB/s
    # Patient shards: the HMAC spreads patients evenly, the busiest shard holds this much over the mean.
    shard_skew: float = 1.1
    # Where the shard memory lives. False (the code): in the worker process that owns the shard, an owner
    # token in keyed state. True (the first version): the whole memory in one ReadModifyWriteState value
    # per shard, written every interval (this fraction of it) and read back whole before (the SDK
    # harness's state cache is off by default in Beam 2.77), so coded twice per interval.
    state_in_runner: bool = False
    state_written_fraction: float = 1.0
    state_reads_per_write: float = 1.0
    state_io_bytes_s_per_worker: float = 100e6  # Streaming Engine state traffic a worker sustains: a guess
    state_memory_overhead: float = 1.2  # Python objects and a batch's transient copies over the pickled size
    state_budget_bytes: float = 4e9  # half of an 8 GB n2-standard-2 worker
    # A shard without state (a new deployment, a replay, a changed shard count) reads Silver once: the
    # event ids of one horizon, Gold's open windows, and 24 h per patient for the baselines.
    replay_hours: float = 24.0
    gold_restore_s: float = 1500.0  # Silver rows behind Gold's open windows: about 25 minutes
    restart_reads_own_shard_only: bool = False  # False: each shard reads every patient's rows, keeps its own
    recovery_budget_s: float = 600.0  # = allowed lateness: memory must be rebuilt before windows close
    # Gold and rolling MERGEs rewrite every file holding a matched row, and the current hour's upserts
    # become one file; both tables are partitioned by hour, so a MERGE rewrites at most the current
    # hour (1: at the end of the hour, the worst; 24 modelled the date-only layout).
    gold_rewritten_hours: float = 1.0
    delta_commit_s: float = 0.3  # one Delta commit on GCS (local disk: 10-50 ms, docs/design.md's survey)
    quarantine_batch_fraction: float = 1.0  # ingest batches holding a bad record (each commits quarantine)
    class_a_per_commit: float = 3.2  # data file PUT, log PUT, log LIST, checkpoint every 10th
    class_b_per_commit: float = 8.0  # _last_checkpoint, checkpoint, log entries since it (a fresh open)
    lake_bytes_per_reading: float = 339.0  # demo Parquet: Bronze 131 + Silver 208 B a row
    function_seconds: float = 0.5  # notifier: SMTP + webhooks per event
    function_vcpu: float = 0.167  # 256 MB Cloud Run function
    function_gib: float = 0.25


@dataclass(frozen=True, kw_only=True)
class Cost:
    component: str
    quantity: str
    usd_month: float
    note: str = ""


# What relieves a limit: more patient shards in the job, more independent pipelines (each with its own
# tables), more or bigger workers, or nothing but a change of code, layout or quota.
Relief = Literal["shards", "pipelines", "workers", "none"]
RELIEF_TEXT: dict[str, str] = {
    "shards": "more shards",
    "pipelines": "more pipelines",
    "workers": "more or bigger workers",
    "none": "no",
}


@dataclass(frozen=True, kw_only=True)
class Limit:
    name: str
    needed: float
    capacity: float
    unit: str
    relieved_by: Relief
    why: str

    @property
    def utilisation(self) -> float:
        return self.needed / self.capacity if self.capacity else math.inf


@dataclass(frozen=True, kw_only=True)
class PubSubLoad:
    messages_per_s: float
    message_bytes: float
    publish_billed_bytes_s: float
    delivered_billed_bytes_s: float
    throughput_gib_month: float
    throughput_usd_month: float
    retained_gib: float
    storage_usd_month: float


@dataclass(frozen=True, kw_only=True)
class DeltaTableLoad:
    table: str
    committer: str  # who commits: every ingest batch, every shard, one committer
    commits_per_interval: float  # per pipeline

    def per_min(self, interval_s: float) -> float:
        return self.commits_per_interval * 60 / interval_s


@dataclass(frozen=True, kw_only=True)
class CapacityPlan:
    workload: Workload
    measured: Measured
    assumptions: Assumptions
    readings_per_s: float
    readings_per_vcpu_s: float
    reading_vcpus: float  # vCPUs the readings need (before headroom)
    state_vcpus: float  # vCPUs coding the shard state (before headroom)
    vcpus: int
    workers: int
    state_bytes_per_patient: float
    state_bytes: float  # all shards of all pipelines
    shard_state_bytes: float  # the busiest shard's
    state_io_bytes_per_s: float  # read + written to Streaming Engine
    pubsub: PubSubLoad
    pubsub_unbatched: PubSubLoad
    bq_rows_per_s: dict[str, float]
    bq_legacy_gib_month: float
    bq_write_api_gib_month: float
    tables: tuple[DeltaTableLoad, ...]  # per pipeline
    commits_per_min: dict[str, float]  # per table, per pipeline
    gcs_class_a_per_s: float
    gcs_class_b_per_s: float
    lake_gib_per_month: float
    costs: tuple[Cost, ...]
    limits: tuple[Limit, ...] = field(default=())

    @property
    def usd_month(self) -> float:
        return sum(c.usd_month for c in self.costs)

    @property
    def breaks_first(self) -> Limit:
        return max(self.limits, key=lambda lim: lim.utilisation)

    def _needed(self, relief: Relief, now: int) -> int:
        worst = max((lim.utilisation for lim in self.limits if lim.relieved_by == relief), default=0.0)
        return max(1, math.ceil(worst * now * self.assumptions.headroom))

    @property
    def shards_needed(self) -> int:
        """Patient shards (per pipeline) that bring every shard-relieved limit under 1/headroom."""
        return self._needed("shards", self.workload.shards)

    @property
    def pipelines_needed(self) -> int:
        """Independent pipelines that bring every pipeline-relieved limit (the committers) under
        1/headroom."""
        return self._needed("pipelines", self.workload.pipelines)


def _pubsub(w: Workload, p: Prices) -> PubSubLoad:
    n = w.envelope_readings
    per_reading = w.reading_bytes + (w.envelope_overhead_per_reading if n > 1 else 0)
    message = n * per_reading + w.message_overhead_bytes
    messages_s = w.readings_per_s / n
    requests_s = messages_s / w.messages_per_request
    billed_request = max(1000.0, w.messages_per_request * message)  # Pub/Sub's minimum per request
    publish = requests_s * billed_request
    delivered = publish * w.subscriptions  # pulls assumed to group messages as publishes did
    gib = (publish + delivered) * MONTH_S / GIB
    usd = max(0.0, gib - 10) * GIB / TIB * p.pubsub_tib.usd
    actual = messages_s * message
    retained = actual * w.pubsub_retention_days * DAY_S * w.pubsub_retained_copies / GIB
    return PubSubLoad(
        messages_per_s=messages_s,
        message_bytes=message,
        publish_billed_bytes_s=publish,
        delivered_billed_bytes_s=delivered,
        throughput_gib_month=gib,
        throughput_usd_month=usd,
        retained_gib=retained,
        storage_usd_month=retained * p.pubsub_storage_gib_month.usd,
    )


def gold_rows_per_commit(w: Workload, patients: float) -> float:
    """Gold rows one commit upserts: each active patient's current window of every length, plus the
    window that closed during the interval (on-time pane) with probability interval / window."""
    active = patients * min(1.0, w.readings_per_patient_per_s * w.commit_interval_s)
    return active * sum(1 + min(1.0, w.commit_interval_s / win) for win in w.gold_windows_s)


def rolling_rows_per_commit(w: Workload, patients: float) -> float:
    """Rolling means one commit upserts: one per minute row it changed (as ``gold_rows_per_commit`` for
    the shortest window; lake_age: as many rolling rows as Gold minute rows)."""
    return gold_rows_per_commit(replace(w, gold_windows_s=(min(w.gold_windows_s),)), patients)


def day_rows_per_patient(w: Workload, windows: Sequence[int]) -> float:
    """Rows a patient adds in a day to a table of these windows (a window with a reading in it)."""
    return sum(DAY_S / win * min(1.0, w.readings_per_patient_per_s * win) for win in windows)


def state_bytes_per_patient(w: Workload, m: Measured) -> float:
    """Pickled shard state per patient: the baseline ring, the open Gold windows, and the event ids of
    the de-duplication horizon (the part that grows with the reading rate)."""
    ids = w.readings_per_patient_per_s * w.dedup_horizon_s
    return m.state_ring_bytes_per_patient + m.state_gold_bytes_per_patient + ids * m.state_bytes_per_event_id


def delta_tables(w: Workload, a: Assumptions) -> tuple[DeltaTableLoad, ...]:
    """Delta commits per commit interval and table, per pipeline (pipelines/beam_vitals.py): appends by
    every ingest batch (``shards`` of them) or every shard, side by side; MERGEs by one committer."""
    n = float(w.shards)
    events = w.patients / w.pipelines * w.alerts_per_patient_day * w.events_per_alert / DAY_S
    alert_shards = n * (1 - math.exp(-events * w.commit_interval_s / n))  # shards with an alert event
    return (
        DeltaTableLoad(table="bronze", committer="every ingest batch", commits_per_interval=n),
        DeltaTableLoad(
            table="quarantine",
            committer="every ingest batch with a bad record",
            commits_per_interval=n * a.quarantine_batch_fraction,
        ),
        DeltaTableLoad(table="dq_metrics", committer="every ingest batch", commits_per_interval=n),
        DeltaTableLoad(table="silver", committer="every shard", commits_per_interval=n),
        DeltaTableLoad(table="silver_commits", committer="every shard", commits_per_interval=n),
        DeltaTableLoad(
            table="alerts", committer="every shard with an alert event", commits_per_interval=alert_shards
        ),
        DeltaTableLoad(
            table="gold (minutes + hours, one MERGE)", committer="one committer", commits_per_interval=1
        ),
        DeltaTableLoad(table="gold_patient_rolling", committer="one committer", commits_per_interval=1),
        DeltaTableLoad(
            table="gold_diagnosis_hourly",
            committer="the Gold committer, after each commit",
            commits_per_interval=1,
        ),
    )


def plan(
    workload: Workload,
    measured: Measured,
    prices: Prices,
    *,
    assumptions: Assumptions | None = None,
    quotas: Quotas | None = None,
) -> CapacityPlan:
    w, m, p = workload, measured, prices
    a = assumptions or Assumptions()
    q = quotas or Quotas()
    rate = w.readings_per_s
    interval = w.commit_interval_s
    # Per pipeline (an independent job with its own tables), and per patient shard of one.
    pipe_rate, pipe_patients = rate / w.pipelines, w.patients / w.pipelines
    shard_rate, shard_patients = pipe_rate / w.shards, pipe_patients / w.shards

    # --- Shard memory: in the owning worker (a token in keyed state), or (the first version) one
    # pickled value per shard in the runner, read and written once per interval.
    per_patient = state_bytes_per_patient(w, m)
    state_bytes = w.patients * per_patient
    shard_state = shard_patients * a.shard_skew * per_patient  # the busiest shard's
    written_s = state_bytes * a.state_written_fraction / interval if a.state_in_runner else 0.0
    read_s = written_s * a.state_reads_per_write
    state_io_s = written_s + read_s
    coding_core_s = written_s * m.state_encode_s_per_byte + read_s * m.state_decode_s_per_byte

    # --- Dataflow: per-core throughput, discounted for Dataflow, plus coding the state, with headroom.
    per_vcpu = m.readings_per_core_s * a.dataflow_core_factor
    reading_vcpus = rate / per_vcpu
    state_vcpus = coding_core_s / a.dataflow_core_factor
    vcpus = math.ceil((reading_vcpus + state_vcpus) * a.headroom)
    workers = math.ceil(vcpus / a.vcpus_per_worker)
    worker_hour = (
        a.vcpus_per_worker * p.dataflow_vcpu_hour.usd
        + a.memory_gib_per_worker * p.dataflow_memory_gib_hour.usd
        + a.disk_gib_per_worker * p.dataflow_pd_gib_hour.usd
    )
    gold_commit = gold_rows_per_commit(w, pipe_patients)
    rolling_commit = rolling_rows_per_commit(w, pipe_patients)
    gold_s = gold_commit / interval * w.pipelines
    rolling_s = rolling_commit / interval * w.pipelines
    shuffled_s = (
        rate * (a.shuffled_bytes_per_reading + a.gated_row_bytes)
        + gold_s * w.gold_row_bq_bytes
        + rolling_s * a.rolling_row_bytes
    )
    se_legacy = shuffled_s * MONTH_S / GIB * p.streaming_engine_gib.usd
    se_secu = a.secu_per_gib_s * shuffled_s / GIB * 730 * p.streaming_engine_secu_hour.usd

    # --- Pub/Sub, with the configured envelopes and with one message per reading.
    pubsub = _pubsub(w, p)
    unbatched = _pubsub(replace(w, envelope_readings=1), p)

    # --- BigQuery: the Gold rows each commit wrote, data-quality rows (one per rule and ingest batch),
    # alert events.
    dq_s = w.dq_rules * w.shards / interval * w.pipelines
    alerts_s = w.patients * w.alerts_per_patient_day * w.events_per_alert / DAY_S
    rows = {"gold_patient_summary": gold_s, "dq_metrics": dq_s, "alerts": alerts_s}
    logical = {
        "gold_patient_summary": w.gold_row_bq_bytes,
        "dq_metrics": w.dq_row_bq_bytes,
        "alerts": w.alert_row_bq_bytes,
    }
    legacy_gib = sum(rows[t] * max(1024, logical[t]) for t in rows) * MONTH_S / GIB
    write_api_gib = sum(rows[t] * logical[t] for t in rows) * MONTH_S / GIB
    gold_json_s = gold_s * w.gold_row_json_bytes

    # --- Delta on GCS: commits per interval and table (per pipeline), operations.
    tables = delta_tables(w, a)
    commits_per_min = {t.table: t.per_min(interval) for t in tables}
    commits_s = sum(t.commits_per_interval for t in tables) / interval * w.pipelines
    busiest = max(tables, key=lambda t: t.commits_per_interval)
    busiest_s = busiest.commits_per_interval / interval
    class_a_s = commits_s * a.class_a_per_commit
    class_b_s = commits_s * a.class_b_per_commit
    lake_gib = rate * a.lake_bytes_per_reading * MONTH_S / GIB

    # --- The alert notifier: one function invocation per alert event.
    invocations_month = alerts_s * MONTH_S
    fn_usd = max(
        0.0, invocations_month - 2e6
    ) / 1e6 * p.run_requests_million.usd + invocations_month * a.function_seconds * (
        a.function_vcpu * p.run_vcpu_s.usd + a.function_gib * p.run_gib_s.usd
    )

    costs = (
        Cost(
            component="Dataflow workers",
            quantity=f"{workers} x {a.machine_type} ({vcpus} vCPU)",
            usd_month=workers * worker_hour * 730,
            note="vCPU + memory + 30 GB disk, streaming rates",
        ),
        Cost(
            component="Dataflow Streaming Engine",
            quantity=f"{shuffled_s / 1e6:,.0f} MB/s shuffled",
            usd_month=se_legacy,
            note=f"legacy per-GiB billing; resource-based (SECU) estimate ${se_secu:,.0f}"
            + (f"; state traffic ({state_io_s / 1e9:,.1f} GB/s) not priced" if a.state_in_runner else ""),
        ),
        Cost(
            component="Pub/Sub throughput",
            quantity=f"{pubsub.throughput_gib_month:,.0f} GiB/month, {pubsub.messages_per_s:,.0f} msg/s",
            usd_month=pubsub.throughput_usd_month,
            note=f"one message per reading: ${unbatched.throughput_usd_month:,.0f}",
        ),
        Cost(
            component="Pub/Sub retained messages",
            quantity=f"{pubsub.retained_gib:,.0f} GiB",
            usd_month=pubsub.storage_usd_month,
            note=f"{w.pubsub_retention_days:g} days x {w.pubsub_retained_copies} copies (topic + acked)",
        ),
        Cost(
            component="BigQuery streaming inserts",
            quantity=f"{sum(rows.values()):,.0f} rows/s, {legacy_gib:,.0f} GiB billed/month",
            usd_month=legacy_gib * p.bq_legacy_streaming_gib.usd,
            note="insertAll, 1 KB minimum a row; Storage Write API: "
            f"${max(0.0, write_api_gib - 2048) * p.bq_write_api_gib.usd:,.0f}",
        ),
        Cost(
            component="Cloud Storage operations",
            quantity=f"{class_a_s:,.0f} Class A/s, {class_b_s:,.0f} Class B/s",
            usd_month=(class_a_s * p.gcs_class_a_1000.usd + class_b_s * p.gcs_class_b_1000.usd)
            * MONTH_S
            / 1000,
            note=f"{commits_s:,.1f} Delta commits/s in all",
        ),
        Cost(
            component="Cloud Storage, lake growth",
            quantity=f"{lake_gib:,.0f} GiB added a month",
            usd_month=lake_gib * p.gcs_standard_gib_month.usd,
            note="each month kept adds this again",
        ),
        Cost(
            component="Alert notifier (Cloud Run function)",
            quantity=f"{invocations_month / 1e6:,.1f} M invocations/month",
            usd_month=fn_usd,
        ),
    )

    # --- Limits: what each needs against what it has, and what relieves it.
    rewritten = min(1.0, a.gold_rewritten_hours / 24)
    gold_day = pipe_patients * day_rows_per_patient(w, w.gold_windows_s) * rewritten
    rolling_day = pipe_patients * day_rows_per_patient(w, (min(w.gold_windows_s),)) * rewritten
    gold_writer = (gold_commit / m.gold_merge_rows_per_s + gold_day / m.gold_rewrite_rows_per_s) / interval
    rolling_writer = (
        rolling_commit / m.gold_merge_rows_per_s + rolling_day / m.gold_rewrite_rows_per_s
    ) / interval
    shard_thread = shard_rate * a.shard_skew / per_vcpu + (
        coding_core_s * shard_state / state_bytes / a.dataflow_core_factor
    )
    # The busiest worker holds its share of the job's shards, whole shards at a time.
    worker_shards = math.ceil(w.shards * w.pipelines / workers)
    worker_memory = worker_shards * shard_state * a.state_memory_overhead
    if a.state_in_runner:  # plus the shard being advanced, read and written as bytes
        worker_memory += 2 * shard_state
    # Rebuilding a shard's memory from Silver: one shard (a restarted worker, a moved shard), or all of
    # them at once (a new job), as many in parallel as there are vCPUs.
    span_s = a.replay_hours * 3600 + w.dedup_horizon_s + a.gold_restore_s
    rows_per_shard = pipe_rate * span_s / (w.shards if a.restart_reads_own_shard_only else 1)
    scan_vcpu = m.lake_scan_rows_per_s * a.dataflow_core_factor
    rebuild_s = rows_per_shard / scan_vcpu
    parallel = min(float(w.shards), vcpus / w.pipelines)
    deploy_s = rows_per_shard * w.shards / (scan_vcpu * parallel)
    rebuild_reads = (
        f"{a.replay_hours:g} h for the baselines, {w.dedup_horizon_s / 3600:g} h of event ids, Gold's "
        "open windows" + ("" if a.restart_reads_own_shard_only else "; every patient's rows, its own kept")
    )
    runner_state = (
        Limit(
            name="Shard state as one Streaming Engine value",
            needed=shard_state,
            capacity=q.dataflow_state_value_bytes.value,
            unit="bytes",
            relieved_by="shards",
            why=f"{per_patient / 1e3:,.0f} KB a patient x {shard_patients * a.shard_skew:,.0f} patients "
            "in the busiest shard, one ReadModifyWriteState value",
        ),
        Limit(
            name="State read + written per worker (Streaming Engine)",
            needed=state_io_s / workers,
            capacity=a.state_io_bytes_s_per_worker,
            unit="B/s",
            relieved_by="workers",
            why=f"every shard's whole state ({state_bytes / 1e9:,.1f} GB in all) read and written "
            f"every {interval:g} s; capacity assumed",
        ),
    )
    limits = (
        Limit(
            name="Gold committer: each MERGE rewrites the current hour's Gold (one writer)",
            needed=gold_writer,
            capacity=1.0,
            unit="writer-seconds per second",
            relieved_by="pipelines",
            why=f"{gold_commit / interval:,.0f} rows/s upserted; by the hour's end each MERGE rewrites "
            f"{gold_day / 1e6:,.1f} M rows of the hour's Gold",
        ),
        Limit(
            name="Rolling committer: each MERGE rewrites the current hour's rolling means (one writer)",
            needed=rolling_writer,
            capacity=1.0,
            unit="writer-seconds per second",
            relieved_by="pipelines",
            why=f"{rolling_commit / interval:,.0f} rows/s upserted; by the hour's end each MERGE rewrites "
            f"{rolling_day / 1e6:,.1f} M rows",
        ),
        Limit(
            name="Shard memory in the busiest worker",
            needed=worker_memory,
            capacity=a.state_budget_bytes,
            unit="bytes",
            relieved_by="workers",
            why=f"{worker_shards} of {w.shards * w.pipelines} shards x {shard_state / 1e6:,.0f} MB "
            f"({per_patient / 1e3:,.0f} KB a patient) x{a.state_memory_overhead:g}"
            + (", plus the shard in flight read and written" if a.state_in_runner else ""),
        ),
        Limit(
            name="Busiest shard on one thread",
            needed=shard_thread,
            capacity=1.0,
            unit="thread-seconds per second",
            relieved_by="shards",
            why=f"{shard_rate * a.shard_skew:,.0f} readings/s"
            + (
                f", and its {shard_state / 1e6:,.0f} MB state decoded and encoded every {interval:g} s"
                if a.state_in_runner
                else " (the gate's share runs on other keys: an upper bound)"
            ),
        ),
        Limit(
            name="One shard's memory rebuilt from Silver (restart, moved shard)",
            needed=rebuild_s,
            capacity=a.recovery_budget_s,
            unit="seconds",
            relieved_by="shards" if a.restart_reads_own_shard_only else "none",
            why=f"{rows_per_shard / 1e9:,.2f} G rows read ({rebuild_reads}) on one vCPU",
        ),
        Limit(
            name="New deployment: every shard rebuilt from Silver at once",
            needed=deploy_s,
            capacity=a.recovery_budget_s,
            unit="seconds",
            relieved_by="none",
            why=f"{w.shards} shards x {rows_per_shard / 1e9:,.2f} G rows on {parallel:,.0f} vCPUs",
        ),
        Limit(
            name="One ingest batch as one element (Streaming Engine)",
            needed=pipe_rate / w.shards * interval * a.shuffled_bytes_per_reading,
            capacity=q.dataflow_element_bytes.value,
            unit="bytes per batch",
            relieved_by="shards",
            why=f"a {interval:g} s batch under one key holds 1/{w.shards} of the readings",
        ),
        Limit(
            name=f"Delta commits on the busiest table ({busiest.table})",
            needed=busiest_s,
            capacity=1 / a.delta_commit_s,
            unit="commits/s",
            relieved_by="none",
            why=f"{busiest.committer} appends its own commit ({w.shards} shards); commits to one table "
            "serialise on its log (conditional PUT of the next version)",
        ),
        Limit(
            name="Dataflow max_workers (terraform default)",
            needed=workers,
            capacity=a.max_workers,
            unit="workers",
            relieved_by="none",
            why="var.dataflow_max_workers caps autoscaling",
        ),
        *(runner_state if a.state_in_runner else ()),
        Limit(
            name="Pub/Sub publish quota (region)",
            needed=pubsub.publish_billed_bytes_s,
            capacity=q.pubsub_publish_bytes_s.value,
            unit="B/s",
            relieved_by="none",
            why=f"one message per reading would need {unbatched.publish_billed_bytes_s / 1e6:,.0f} MB/s",
        ),
        Limit(
            name="Pub/Sub subscribe quota (region)",
            needed=pubsub.delivered_billed_bytes_s,
            capacity=q.pubsub_subscribe_bytes_s.value,
            unit="B/s",
            relieved_by="none",
            why="Dataflow's pulls",
        ),
        Limit(
            name="BigQuery streaming rows/s, Gold table",
            needed=gold_s,
            capacity=q.bq_rows_s_table.value,
            unit="rows/s",
            relieved_by="none",
            why="every commit re-streams each active patient's minute and hour rows",
        ),
        Limit(
            name="BigQuery streaming bytes/s, Gold table",
            needed=gold_json_s,
            capacity=q.bq_bytes_s_table.value,
            unit="B/s",
            relieved_by="none",
            why=f"{w.gold_row_json_bytes:,} B of JSON a Gold row",
        ),
        Limit(
            name="BigQuery streaming rows/s, project",
            needed=sum(rows.values()),
            capacity=q.bq_rows_s_project.value,
            unit="rows/s",
            relieved_by="none",
            why="Gold + data quality + alerts",
        ),
        Limit(
            name="GCS reads/s, lake bucket",
            needed=class_b_s,
            capacity=q.gcs_bucket_reads_s.value,
            unit="reads/s",
            relieved_by="none",
            why="every commit opens its table afresh: _last_checkpoint, checkpoint, log entries",
        ),
        Limit(
            name="GCS writes/s, lake bucket",
            needed=class_a_s,
            capacity=q.gcs_bucket_writes_s.value,
            unit="writes/s",
            relieved_by="none",
            why="data files, log entries, checkpoints",
        ),
        Limit(
            name=f"Same-object writes (_last_checkpoint, {busiest.table})",
            needed=busiest_s / CHECKPOINT_INTERVAL,
            capacity=q.gcs_same_object_writes_s.value,
            unit="writes/s",
            relieved_by="none",
            why=f"rewritten at every checkpoint (checkpointInterval {CHECKPOINT_INTERVAL})",
        ),
    )
    return CapacityPlan(
        workload=w,
        measured=m,
        assumptions=a,
        readings_per_s=rate,
        readings_per_vcpu_s=per_vcpu,
        reading_vcpus=reading_vcpus,
        state_vcpus=state_vcpus,
        vcpus=vcpus,
        workers=workers,
        state_bytes_per_patient=per_patient,
        state_bytes=state_bytes,
        shard_state_bytes=shard_state,
        state_io_bytes_per_s=state_io_s,
        pubsub=pubsub,
        pubsub_unbatched=unbatched,
        bq_rows_per_s=rows,
        bq_legacy_gib_month=legacy_gib,
        bq_write_api_gib_month=write_api_gib,
        tables=tables,
        commits_per_min=commits_per_min,
        gcs_class_a_per_s=class_a_s,
        gcs_class_b_per_s=class_b_s,
        lake_gib_per_month=lake_gib,
        costs=costs,
        limits=tuple(sorted(limits, key=lambda lim: lim.utilisation, reverse=True)),
    )


def _num(x: float) -> str:
    if x >= 1e9:
        return f"{x / 1e9:,.1f} G"
    if x >= 1e6:
        return f"{x / 1e6:,.1f} M"
    return f"{x:,.0f}" if x >= 10 else f"{x:,.2f}"


def to_markdown(result: CapacityPlan, prices: Prices | None = None) -> str:
    w, m, a = result.workload, result.measured, result.assumptions
    interval = w.commit_interval_s
    ids = w.readings_per_patient_per_s * w.dedup_horizon_s * m.state_bytes_per_event_id
    out = [
        f"### {w.patients:,} patients x {w.readings_per_patient_per_s:g} reading/s = "
        f"{result.readings_per_s:,.0f} readings/s, {w.shards} patient shards, {w.pipelines} pipeline(s)",
        "",
        f"Measured ({m.source}): {m.readings_per_core_s:,.0f} readings per CPU-second "
        f"({'sustained load' if m.sustained_readings_per_core_s else 'pipeline core A'}), "
        f"Gold MERGE {m.gold_merge_rows_per_s:,.0f} rows/s, rewrite of rows sharing a file "
        f"{m.gold_rewrite_rows_per_s:,.0f} rows/s, lake scan {m.lake_scan_rows_per_s:,.0f} rows/s.",
        f"Shard state: {result.state_bytes_per_patient / 1e3:,.0f} KB a patient (baseline ring "
        f"{m.state_ring_bytes_per_patient / 1e3:,.0f} KB, event ids of the horizon {ids / 1e3:,.0f} KB, "
        f"Gold windows {m.state_gold_bytes_per_patient / 1e3:,.1f} KB) = {result.state_bytes / 1e9:,.1f} GB; "
        f"busiest shard {result.shard_state_bytes / 1e6:,.0f} MB; "
        + (
            f"in the runner: read + written {result.state_io_bytes_per_s / 1e9:,.1f} GB/s."
            if a.state_in_runner
            else "held by the worker that owns the shard."
        ),
        f"Dataflow: x{a.dataflow_core_factor:g} per vCPU = {result.readings_per_vcpu_s:,.0f} readings/s -> "
        f"{result.reading_vcpus:,.1f} vCPU for the readings"
        + (f" + {result.state_vcpus:,.1f} vCPU coding the state" if result.state_vcpus else "")
        + f", headroom x{a.headroom:g} -> **{result.vcpus} vCPU = {result.workers} x {a.machine_type}**.",
        "",
        "| component | quantity | $/month | note |",
        "|---|---|---:|---|",
    ]
    out += [f"| {c.component} | {c.quantity} | {c.usd_month:,.0f} | {c.note} |" for c in result.costs]
    out += [f"| **total** | | **{result.usd_month:,.0f}** | |", ""]
    pb, pu = result.pubsub, result.pubsub_unbatched
    out += [
        "| Pub/Sub | messages/s | bytes a message | billed publish MB/s | $/month throughput |",
        "|---|---:|---:|---:|---:|",
        f"| envelopes of {w.envelope_readings} | {pb.messages_per_s:,.0f} | {pb.message_bytes:,.0f} | "
        f"{pb.publish_billed_bytes_s / 1e6:,.1f} | {pb.throughput_usd_month:,.0f} |",
        f"| one message per reading | {pu.messages_per_s:,.0f} | {pu.message_bytes:,.0f} | "
        f"{pu.publish_billed_bytes_s / 1e6:,.1f} | {pu.throughput_usd_month:,.0f} |",
        "",
        "| Delta table (per pipeline) | committed by | commits/min |",
        "|---|---|---:|",
    ]
    out += [f"| {t.table} | {t.committer} | {t.per_min(interval):,.4g} |" for t in result.tables]
    out += [
        "",
        "| limit (worst first) | needed | capacity | unit | utilisation | relieved by | why |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    out += [
        f"| {lim.name} | {_num(lim.needed)} | {_num(lim.capacity)} | {lim.unit} | "
        f"{lim.utilisation:,.0%} | {RELIEF_TEXT[lim.relieved_by]} | {lim.why} |"
        for lim in result.limits
    ]
    first = result.breaks_first
    out += [
        "",
        f"Breaks first: **{first.name}** at {first.utilisation:,.0%}. "
        f"Patient shards needed for every shard-relieved limit under 1/{a.headroom:g}: "
        f"{result.shards_needed} (now {w.shards}). Independent pipelines needed for the committers: "
        f"{result.pipelines_needed} (now {w.pipelines}).",
    ]
    if prices is not None:
        out += ["", "| price | USD | unit | source | read |", "|---|---:|---|---|---|"]
        out += [
            f"| {name} | {pr.usd:g} | {pr.unit} | {pr.source} | {pr.read} |"
            for name, pr in prices.all().items()
        ]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", type=Path, help=f"results.json (default {DEFAULT_RESULTS})")
    ap.add_argument("--patients", type=int, default=Workload().patients)
    ap.add_argument("--rate", type=float, default=1.0, help="readings per patient per second")
    ap.add_argument(
        "--shards", type=int, default=Workload().shards, help="patient shards of one job (its --shards)"
    )
    ap.add_argument(
        "--pipelines", type=int, default=1, help="independent jobs, each with its own subscription and tables"
    )
    ap.add_argument("--prices", action="store_true", help="also print the price table")
    args = ap.parse_args(argv)
    path = args.results or DEFAULT_RESULTS
    try:
        measured = Measured.from_results(path) if path.exists() else Measured()
        workload = Workload(
            patients=args.patients,
            readings_per_patient_per_s=args.rate,
            shards=args.shards,
            pipelines=args.pipelines,
        )
    except (ValueError, KeyError) as exc:  # an out-of-range setting, or a results file of another shape
        return usage_error(ap, str(exc))
    prices = Prices()
    sys.stdout.write(to_markdown(plan(workload, measured, prices), prices if args.prices else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
