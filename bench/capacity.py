"""Capacity model: what a patient count at a reading rate needs on Google Cloud, and what breaks first.

Pure arithmetic over three inputs: the :class:`Workload` (patients, rates, envelope and row sizes, the
pipeline's timing), what was :class:`Measured` on the development machine (``var/bench/results.json``)
and published :class:`Prices` and :class:`Quotas` (each with its source URL and the date it was read).
Everything else the model needs is an explicit :class:`Assumptions` field, so a reader can see and
change it. It registers no benchmark and imports nothing heavy: the bench runner imports every module
of this package.

    python -m bench.capacity [var/bench/results.json] [--patients N] [--shards N]

prints the plan as markdown (``docs/capacity.md`` is generated this way).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vitals_lake.cli import usage_error

MONTH_S = 730 * 3600  # Google prices a month as 730 hours
DAY_S = 86_400
GIB = 2**30
TIB = 2**40
DEFAULT_RESULTS = Path("var/bench/results.json")


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
    # Independent pipelines, each with its own subscription and Delta tables (1 = today's deployment).
    shards: int = 1
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
        if self.patients < 1 or self.readings_per_patient_per_s <= 0 or self.shards < 1:
            raise ValueError("patients, readings_per_patient_per_s and shards must be positive")
        if self.envelope_readings < 1 or self.messages_per_request < 1 or self.commit_interval_s <= 0:
            raise ValueError("envelope_readings, messages_per_request and commit_interval_s must be positive")
        if not self.gold_windows_s or min(self.gold_windows_s) <= 0:
            raise ValueError("gold_windows_s must hold positive window lengths")

    @property
    def readings_per_s(self) -> float:
        return self.patients * self.readings_per_patient_per_s


@dataclass(frozen=True, kw_only=True)
class Measured:
    """Figures measured on the development machine (per process CPU second, so per core)."""

    pipeline_readings_per_cpu_s: float = 2768.0  # pipeline_core variant A (docs/benchmarks.md)
    sustained_readings_per_core_s: float | None = None  # a sustained-load run, when there is one
    gold_merge_rows_per_s: float = 10_159.0  # growth: 1,000-row Gold MERGE into 10N rows
    lake_scan_rows_per_s: float = 1_004_886.0  # growth: read one day of Silver after maintenance
    source: str = "docs/benchmarks.md"

    @property
    def readings_per_core_s(self) -> float:
        """The sustained figure when measured, else the benchmark's."""
        return self.sustained_readings_per_core_s or self.pipeline_readings_per_cpu_s

    @classmethod
    def from_results(cls, path: Path | str) -> Measured:
        """Read ``results.json`` of ``python -m bench``; figures it lacks keep their defaults."""
        doc = json.loads(Path(path).read_text())
        by_name = {r.get("name"): r for r in doc.get("results", [])}
        core = by_name.get("pipeline_core")
        if core is None:
            raise ValueError(f"{path}: no pipeline_core result")
        this = [v for v in core.get("variants", []) if str(v.get("label", "")).startswith("A this pipeline")]
        if not this:
            raise ValueError(f"{path}: pipeline_core has no variant labelled 'A this pipeline ...'")
        found: dict[str, Any] = {"pipeline_readings_per_cpu_s": float(this[0]["rows_per_s"])}
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
        per_core = _sustained_per_core(by_name.get("sustained_load", {}))
        if per_core:
            found["sustained_readings_per_core_s"] = per_core
        return cls(**found, source=str(path))


def _sustained_per_core(result: dict[str, Any]) -> float | None:
    """Readings/s per pipeline core of the fastest run of ``sustained_load`` (bench/load.py) that held.

    The busiest run that still kept up: at low load the fixed cost of polling makes a core look slower.
    A longer run at the same load measured less (5,579 against 6,633 over 10 minutes at 4,000
    readings/s: each commit reads more as Silver grows), so for hour-long steady states this is the
    optimistic end.
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


@dataclass(frozen=True, kw_only=True)
class Assumptions:
    """What was not measured. Each is a knob; docs/capacity.md says why each value was chosen."""

    dataflow_core_factor: float = 0.7  # a Dataflow vCPU (a hyperthread) + Streaming Engine RPCs vs local
    headroom: float = 1.5  # run at two thirds: autoscaler target and backlog catch-up
    serial_fraction: float = 0.5  # profile: half of A's CPU is per-patient windows (parallel), half not
    machine_type: str = "n2-standard-2"
    vcpus_per_worker: int = 2
    memory_gib_per_worker: float = 8.0
    disk_gib_per_worker: float = 30.0  # Streaming Engine workers' boot disk
    max_workers: int = 3  # infra/terraform dataflow_max_workers default
    shuffled_bytes_per_reading: float = 297.0  # the envelope bytes pass BatchForCommit's GroupByKey
    gold_partial_bytes: float = 200.0  # one partial / pane per patient, window and batch, shuffled twice
    secu_per_gib_s: float = 58.0  # Google's Kafka->BigQuery benchmark: 58 SECU at 1 GiB/s
    state_bytes_per_patient: float = 70_000.0  # BaselineState ring: 1440 x 6 vitals x 8 B, + overhead
    state_budget_bytes: float = 2e9  # half of one SDK process's share of an 8 GB, 2-vCPU worker
    replay_hours: float = 24.0  # a restarted scorer replays 24 h of Silver per patient
    recovery_budget_s: float = 600.0  # = allowed lateness: replay must finish before windows close
    delta_commit_s: float = 0.3  # one Delta commit on GCS (local disk: 10-50 ms, docs/design.md's survey)
    class_a_per_commit: float = 3.2  # data file PUT, log PUT, log LIST, checkpoint every 10th
    class_b_per_commit: float = 8.0  # _last_checkpoint, checkpoint, log entries since it
    gets_per_file_read: float = 2.0  # footer + column chunk
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


@dataclass(frozen=True, kw_only=True)
class Limit:
    name: str
    needed: float
    capacity: float
    unit: str
    per_shard: bool  # relieved by more shards (True); False: shared by the project or fixed per table
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
class CapacityPlan:
    workload: Workload
    measured: Measured
    assumptions: Assumptions
    readings_per_s: float
    readings_per_vcpu_s: float
    vcpus: int
    workers: int
    pubsub: PubSubLoad
    pubsub_unbatched: PubSubLoad
    bq_rows_per_s: dict[str, float]
    bq_legacy_gib_month: float
    bq_write_api_gib_month: float
    commits_per_min: dict[str, float]  # per table, per shard
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

    @property
    def shards_needed(self) -> int:
        """Shards that bring every per-shard limit under 1/headroom, if the shared ones allow."""
        worst = max((lim.utilisation for lim in self.limits if lim.per_shard), default=0.0)
        return max(1, math.ceil(worst * self.workload.shards * self.assumptions.headroom))


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
    """Gold rows one commit rewrites: each active patient's current window of every length, plus the
    window that closed during the interval (on-time pane) with probability interval / window."""
    active = patients * min(1.0, w.readings_per_patient_per_s * w.commit_interval_s)
    return active * sum(1 + min(1.0, w.commit_interval_s / win) for win in w.gold_windows_s)


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
    shard_rate, shard_patients = rate / w.shards, w.patients / w.shards
    interval = w.commit_interval_s

    # --- Dataflow: per-core throughput, discounted for Dataflow, with headroom.
    per_vcpu = m.readings_per_core_s * a.dataflow_core_factor
    vcpus = math.ceil(rate * a.headroom / per_vcpu)
    workers = math.ceil(vcpus / a.vcpus_per_worker)
    worker_hour = (
        a.vcpus_per_worker * p.dataflow_vcpu_hour.usd
        + a.memory_gib_per_worker * p.dataflow_memory_gib_hour.usd
        + a.disk_gib_per_worker * p.dataflow_pd_gib_hour.usd
    )
    gold_partials_s = shard_patients * len(w.gold_windows_s) / interval * w.shards
    shuffled_s = rate * a.shuffled_bytes_per_reading + 2 * gold_partials_s * a.gold_partial_bytes
    se_legacy = shuffled_s * MONTH_S / GIB * p.streaming_engine_gib.usd
    se_secu = a.secu_per_gib_s * shuffled_s / GIB * 730 * p.streaming_engine_secu_hour.usd

    # --- Pub/Sub, with the configured envelopes and with one message per reading.
    pubsub = _pubsub(w, p)
    unbatched = _pubsub(replace(w, envelope_readings=1), p)

    # --- BigQuery: the Gold rows each commit rewrote, data-quality rows, alert events.
    gold_s = gold_rows_per_commit(w, shard_patients) / interval * w.shards
    dq_s = w.dq_rules / interval * w.shards
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

    # --- Delta on GCS: commits per batch and table (per shard), operations, files read.
    per_batch = {
        "bronze": 1,
        "silver": 1,
        "silver_commit_log": 1,
        "quarantine": 1,
        "alerts": 1,
        "dq_metrics": 1,
        "gold (minutes + hours upserts)": 2,
        "gold_diagnosis_hourly": 1,
        "gold_patient_rolling": 1,
    }
    commits_per_min = {t: n * 60 / interval for t, n in per_batch.items()}
    commits_s = sum(per_batch.values()) / interval * w.shards
    # Today's partition is not compacted until the day ends: one file per commit stays in it.
    min_w, max_w = min(w.gold_windows_s), max(w.gold_windows_s)
    files_read = w.dedup_horizon_s / interval + (min_w + interval) / interval + max_w / interval / 2
    class_a_s = commits_s * a.class_a_per_commit
    class_b_s = commits_s * a.class_b_per_commit + files_read / interval * a.gets_per_file_read * w.shards
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
            note=f"legacy per-GiB billing; resource-based (SECU) estimate ${se_secu:,.0f}",
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
            quantity=f"{class_a_s:,.1f} Class A/s, {class_b_s:,.0f} Class B/s",
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

    # --- Limits: what each needs against what it has. Per-shard ones fall as shards are added.
    gold_merge_s = gold_rows_per_commit(w, shard_patients) / interval
    gold_scan_s = (shard_rate * (min_w + interval) + shard_patients * (max_w / min_w) / 2) / interval
    state_per_process = shard_patients * a.state_bytes_per_patient
    replay_s = shard_patients * w.readings_per_patient_per_s * a.replay_hours * 3600 / m.lake_scan_rows_per_s
    busiest_commits_s = max(per_batch.values()) / interval
    limits = (
        Limit(
            name="Silver de-duplication read (one writer per table)",
            needed=shard_rate * (w.dedup_horizon_s + interval) / interval,
            capacity=m.lake_scan_rows_per_s,
            unit="rows scanned/s",
            per_shard=True,
            why="each commit reads event_id of the whole horizon (1 h) to find repeats",
        ),
        Limit(
            name="Gold writer: recompute reads + MERGE (one writer)",
            needed=gold_scan_s / m.lake_scan_rows_per_s + gold_merge_s / m.gold_merge_rows_per_s,
            capacity=1.0,
            unit="writer-seconds per second",
            per_shard=True,
            why=f"{gold_merge_s:,.0f} Gold rows/s upserted, {gold_scan_s:,.0f} rows/s re-read",
        ),
        Limit(
            name="One commit key: gate, scoring, Silver on one thread",
            needed=shard_rate * a.serial_fraction,
            capacity=per_vcpu,
            unit="readings/s (serial part)",
            per_shard=True,
            why="BatchForCommit keys every reading to shard 0: one worker thread does it all",
        ),
        Limit(
            name="Per-patient scorer state in one SDK process",
            needed=state_per_process,
            capacity=a.state_budget_bytes,
            unit="bytes",
            per_shard=True,
            why="baselines of every patient live where the single key is processed",
        ),
        Limit(
            name="Restart: replay 24 h of Silver per patient",
            needed=replay_s,
            capacity=a.recovery_budget_s,
            unit="seconds",
            per_shard=True,
            why="a restarted scorer rebuilds baselines from Silver before scoring",
        ),
        Limit(
            name="One batch as one element (Streaming Engine)",
            needed=shard_rate * interval * a.shuffled_bytes_per_reading,
            capacity=q.dataflow_element_bytes.value,
            unit="bytes per batch",
            per_shard=True,
            why="a 5 s batch is gathered under one key and emitted as one element",
        ),
        Limit(
            name="Delta commits on the busiest table (Gold)",
            needed=busiest_commits_s,
            capacity=1 / a.delta_commit_s,
            unit="commits/s",
            per_shard=False,  # per table: each shard has its own tables at the same cadence
            why="commits to one table serialise on the log (conditional PUT of the next version)",
        ),
        Limit(
            name="Dataflow max_workers (terraform default)",
            needed=workers,
            capacity=a.max_workers,
            unit="workers",
            per_shard=False,
            why="var.dataflow_max_workers caps autoscaling",
        ),
        Limit(
            name="Pub/Sub publish quota (region)",
            needed=pubsub.publish_billed_bytes_s,
            capacity=q.pubsub_publish_bytes_s.value,
            unit="B/s",
            per_shard=False,
            why=f"one message per reading would need {unbatched.publish_billed_bytes_s / 1e6:,.0f} MB/s",
        ),
        Limit(
            name="Pub/Sub subscribe quota (region)",
            needed=pubsub.delivered_billed_bytes_s,
            capacity=q.pubsub_subscribe_bytes_s.value,
            unit="B/s",
            per_shard=False,
            why="Dataflow's pulls",
        ),
        Limit(
            name="BigQuery streaming rows/s, Gold table",
            needed=gold_s,
            capacity=q.bq_rows_s_table.value,
            unit="rows/s",
            per_shard=False,
            why="every commit re-streams each patient's minute and hour rows",
        ),
        Limit(
            name="BigQuery streaming bytes/s, Gold table",
            needed=gold_json_s,
            capacity=q.bq_bytes_s_table.value,
            unit="B/s",
            per_shard=False,
            why=f"{w.gold_row_json_bytes:,} B of JSON a Gold row",
        ),
        Limit(
            name="BigQuery streaming rows/s, project",
            needed=sum(rows.values()),
            capacity=q.bq_rows_s_project.value,
            unit="rows/s",
            per_shard=False,
            why="Gold + data quality + alerts",
        ),
        Limit(
            name="GCS reads/s, lake bucket",
            needed=class_b_s,
            capacity=q.gcs_bucket_reads_s.value,
            unit="reads/s",
            per_shard=False,
            why="de-duplication and Gold re-reads touch today's uncompacted files",
        ),
        Limit(
            name="GCS writes/s, lake bucket",
            needed=class_a_s,
            capacity=q.gcs_bucket_writes_s.value,
            unit="writes/s",
            per_shard=False,
            why="data files, log entries, checkpoints",
        ),
        Limit(
            name="Same-object writes (_last_checkpoint, Gold)",
            needed=busiest_commits_s / 10,
            capacity=q.gcs_same_object_writes_s.value,
            unit="writes/s",
            per_shard=False,
            why="rewritten at every checkpoint (checkpointInterval 10)",
        ),
    )
    return CapacityPlan(
        workload=w,
        measured=m,
        assumptions=a,
        readings_per_s=rate,
        readings_per_vcpu_s=per_vcpu,
        vcpus=vcpus,
        workers=workers,
        pubsub=pubsub,
        pubsub_unbatched=unbatched,
        bq_rows_per_s=rows,
        bq_legacy_gib_month=legacy_gib,
        bq_write_api_gib_month=write_api_gib,
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
    out = [
        f"### {w.patients:,} patients x {w.readings_per_patient_per_s:g} reading/s = "
        f"{result.readings_per_s:,.0f} readings/s, {w.shards} shard(s)",
        "",
        f"Measured ({m.source}): {m.readings_per_core_s:,.0f} readings per CPU-second "
        f"({'sustained load' if m.sustained_readings_per_core_s else 'pipeline core A'}), "
        f"Gold MERGE {m.gold_merge_rows_per_s:,.0f} rows/s, lake scan {m.lake_scan_rows_per_s:,.0f} rows/s.",
        f"Dataflow: x{a.dataflow_core_factor:g} per vCPU = {result.readings_per_vcpu_s:,.0f} readings/s, "
        f"headroom x{a.headroom:g} -> **{result.vcpus} vCPU = {result.workers} x {a.machine_type}**.",
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
        "| Delta table (per shard) | commits/min |",
        "|---|---:|",
    ]
    out += [f"| {t} | {n:g} |" for t, n in result.commits_per_min.items()]
    out += [
        "",
        "| limit (worst first) | needed | capacity | unit | utilisation | shards help | why |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    out += [
        f"| {lim.name} | {_num(lim.needed)} | {_num(lim.capacity)} | {lim.unit} | "
        f"{lim.utilisation:,.0%} | {'yes' if lim.per_shard else 'no'} | {lim.why} |"
        for lim in result.limits
    ]
    first = result.breaks_first
    out += [
        "",
        f"Breaks first: **{first.name}** at {first.utilisation:,.0%}. "
        f"Shards needed with the code as it is (every per-shard limit under 1/{a.headroom:g}): "
        f"{result.shards_needed}.",
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
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--prices", action="store_true", help="also print the price table")
    args = ap.parse_args(argv)
    path = args.results or DEFAULT_RESULTS
    try:
        measured = Measured.from_results(path) if path.exists() else Measured()
        workload = Workload(patients=args.patients, readings_per_patient_per_s=args.rate, shards=args.shards)
    except (ValueError, KeyError) as exc:  # an out-of-range setting, or a results file of another shape
        return usage_error(ap, str(exc))
    prices = Prices()
    sys.stdout.write(to_markdown(plan(workload, measured, prices), prices if args.prices else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
