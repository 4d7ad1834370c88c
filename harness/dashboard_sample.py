"""A small, realistic warehouse for the dashboard's test and screenshots, made by the real code path.

The simulator streams a seeded cohort with labelled deterioration episodes; its readings go through
the same Bronze -> Silver -> Gold functions the pipeline uses (validation, enrichment, NEWS2, flags),
the stream scorer fills the anomaly score and the combined alert rule (with a no-training robust
z-score model standing in for the deployed one), and the alert state changes become ``alerts`` rows.
Nothing here is hand-typed clinical data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.patient_keys import identity_map

if TYPE_CHECKING:
    from vitals_lake.model.serving import ModelWatcher

SAMPLE_KEY: Final = b"vitals-lake-dashboard-sample-key"  # pseudonym key of the sample cohort only
SAMPLE_MODEL_VERSION: Final = "zscore-sample"
SAMPLE_THRESHOLD: Final = 6.0  # robust sigmas: the stand-in model's anomaly threshold


@dataclass(frozen=True)
class SampleWarehouse:
    """Rows per warehouse table (``WAREHOUSE_TABLES`` names), plus who is in them."""

    tables: dict[str, pa.Table]
    patient_ids: list[str]
    patient_keys: dict[str, str]  # patient_id -> patient_key


def build_sample(
    *,
    patients: int = 24,
    hours: float = 3.0,
    interval_seconds: float = 60.0,
    seed: int = 11,
    end: datetime | None = None,
    episode_rate: float = 0.6,
) -> SampleWarehouse:
    """``patients`` monitored for ``hours`` up to ``end`` (default: now), one reading per interval."""
    from simulator import FaultRates, ListSink, Simulation, SimulationConfig  # noqa: PLC0415
    from vitals_lake import envelope  # noqa: PLC0415
    from vitals_lake.engine import BatchEngine, EngineSettings  # noqa: PLC0415
    from vitals_lake.gold_upsert import newest_per_key  # noqa: PLC0415

    end = (end or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
    duration = hours * 3600.0
    # The simulator places whole episodes inside its run; simulating a third longer and keeping the
    # readings up to ``end`` leaves some patients deteriorating *now*, as on a real ward.
    sim = Simulation(
        SimulationConfig(
            patients=patients,
            interval_seconds=interval_seconds,
            duration_seconds=duration * 4 / 3,
            seed=seed,
            fast=True,
            start=end - timedelta(seconds=duration),
            episode_rate=episode_rate,
            # A little of every imperfection, so data quality has something to show.
            faults=FaultRates(skewed_device=0.0, local_offset_device=0.1, dropout=0.0),
            admissions=False,
        )
    )
    sink = ListSink()
    sim.run(sink)
    lines = [line for line in sink.values if _before(line, end)]
    ingest_us = time.time_ns() // 1000
    bronze = envelope.to_bronze(
        envelope.records_from_lines(lines), ingest_time_us=ingest_us, ref_prefix="file:sample"
    )
    patients_table = _patients_table(sim)
    # The pipeline's batch engine, without a lake: gate, shards (de-duplication, the stream's scorer
    # with a stand-in model, the alert rule, Gold windows), batch by batch as the stream commits them.
    engine = BatchEngine(
        None,
        settings=EngineSettings(time_rules=None),
        key=SAMPLE_KEY,
        model=_FixedModel(),
        patients=patients_table,
        restore=False,
    )
    dq_parts, alert_parts, gold_parts, identity_parts = [], [], [], []
    # Batches of about five minutes of readings, as the stream commits them.
    batch_rows = max(1, patients * int(300 / interval_seconds))
    for b, lo in enumerate(range(0, bronze.num_rows, batch_rows)):
        part = bronze.slice(lo, batch_rows)
        out = engine.process(
            part, batch_id=f"sample-{b:05d}", window_start_us=_first_reading_us(part, ingest_us)
        )
        dq_parts.append(out.dq)
        alert_parts.append(out.alerts)
        gold_parts.append(out.gold)
        identity_parts.append(out.identities)
    gold = newest_per_key(pa.concat_tables(gold_parts), c.GOLD_KEY)
    alerts = pa.concat_tables(alert_parts)
    diagnoses = _diagnoses(ingest_us)
    ids = sorted(set(patients_table[c.PATIENT_ID].to_pylist()))
    keys = dict(
        zip(patients_table[c.PATIENT_ID].to_pylist(), patients_table[c.PATIENT_KEY].to_pylist(), strict=True)
    )
    return SampleWarehouse(
        tables={
            c.GOLD_TABLE: gold,
            c.ALERTS_TABLE: alerts,
            c.DQ_METRICS_TABLE: pa.concat_tables(dq_parts),
            c.DIAGNOSIS_TABLE: diagnoses,
            c.PATIENT_KEYS_TABLE: identity_map(pa.concat_tables(identity_parts)),
        },
        patient_ids=ids,
        patient_keys=keys,
    )


def _before(line: bytes, end: datetime) -> bool:
    """Whether a reading's timestamp is before ``end`` (unreadable records are kept: quarantine)."""
    try:
        doc = orjson.loads(line)
        return datetime.fromisoformat(str(doc[c.TIMESTAMP])) < end
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return True


def _patients_table(sim: Any) -> pa.Table:
    from simulator.cohort import DIAGNOSIS_BY_CODE  # noqa: PLC0415
    from vitals_lake.admissions import age_band  # noqa: PLC0415
    from vitals_lake.pseudonym import pseudonymise  # noqa: PLC0415

    cohort = sim.cohort
    ids = pa.array([p.patient_id for p in cohort], pa.string())
    ages = pa.array([p.age for p in cohort], pa.int16())
    now = datetime.now(UTC)
    return pa.table(
        {
            c.PATIENT_ID: ids,
            c.PATIENT_KEY: pseudonymise(ids, key=SAMPLE_KEY),
            c.NAME: pa.nulls(len(cohort), pa.string()),  # never needed by the warehouse
            c.AGE: ages,
            c.AGE_BAND: age_band(ages),
            c.GENDER: [p.sex for p in cohort],
            c.ADMISSION_DATE: pa.array([p.admitted_at.date() for p in cohort], pa.date32()),
            c.DIAGNOSIS_CODE: [p.diagnosis_code for p in cohort],
            c.DIAGNOSIS_DESCRIPTION: [DIAGNOSIS_BY_CODE[p.diagnosis_code].description for p in cohort],
            c.WARD: [p.ward for p in cohort],
            c.BED: [p.bed for p in cohort],
            c.SPO2_SCALE: pa.array([2 if p.hypercapnic else 1 for p in cohort], pa.int8()),
            c.SOURCE_FILE: ["sample"] * len(cohort),
            c.UPDATED_AT: pa.array([now] * len(cohort), pa.timestamp("us", tz="UTC")),
        },
        schema=c.PATIENTS_SCHEMA,
    )


def _diagnoses(loaded_us: int) -> pa.Table:
    from simulator.cohort import DIAGNOSES  # noqa: PLC0415

    return pa.table(
        {
            c.DIAGNOSIS_CODE: [d.code for d in DIAGNOSES],
            c.DIAGNOSIS_DESCRIPTION: [d.description for d in DIAGNOSES],
            c.LOADED_AT: pa.array([loaded_us] * len(DIAGNOSES), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
        },
        schema=c.DIAGNOSIS_SCHEMA,
    )


def _first_reading_us(bronze: pa.Table, default: int) -> int:
    """When a batch's readings start (its data-quality rows are filed there, as the stream's are)."""
    from vitals_lake.readings import parse_batch  # noqa: PLC0415

    ts = parse_batch(bronze).valid[c.TIMESTAMP]
    return int(pc.cast(pc.min(ts), pa.int64()).as_py() or default) if len(ts) else default


def _FixedModel() -> ModelWatcher:
    """A model watcher that always serves the sample's stand-in model (robust z-scores)."""
    from vitals_lake.model.artifact import LoadedModel  # noqa: PLC0415
    from vitals_lake.model.detectors import RobustZScore  # noqa: PLC0415
    from vitals_lake.model.serving import ModelWatcher  # noqa: PLC0415

    model = LoadedModel(
        detector=RobustZScore(),
        threshold=SAMPLE_THRESHOLD,
        metadata={"model_version": SAMPLE_MODEL_VERSION},
    )

    class _Fixed(ModelWatcher):
        def current(self) -> LoadedModel | None:
            return model

    return _Fixed("unused")
