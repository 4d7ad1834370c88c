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
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c

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
    from vitals_lake.expectations import dq_metrics  # noqa: PLC0415
    from vitals_lake.readings import parse_batch  # noqa: PLC0415
    from vitals_lake.silver import to_silver  # noqa: PLC0415
    from vitals_lake.summaries import gold_from_silver, hours_from_minutes  # noqa: PLC0415

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
    tables: dict[str, list[pa.Table]] = {c.GOLD_TABLE: [], c.DQ_METRICS_TABLE: [], c.ALERTS_TABLE: []}
    silver_parts = []
    # Batches of about five minutes of readings, as the stream commits them.
    batch_rows = max(1, patients * int(300 / interval_seconds))
    for b, lo in enumerate(range(0, bronze.num_rows, batch_rows)):
        parsed = parse_batch(bronze.slice(lo, batch_rows))
        ts = parsed.valid[c.TIMESTAMP]
        window_us = int(pc.cast(pc.min(ts), pa.int64()).as_py() or ingest_us) if len(ts) else ingest_us
        tables[c.DQ_METRICS_TABLE].append(
            dq_metrics(
                batch_id=f"sample-{b:05d}",
                window_start_us=window_us,
                failed=parsed.rule_counts,
                checked=parsed.checked,
            )
        )
        silver_parts.append(to_silver(parsed.valid, patients=patients_table, key=SAMPLE_KEY))
    silver = pa.concat_tables(silver_parts).sort_by([(c.PATIENT_ID, "ascending"), (c.TIMESTAMP, "ascending")])
    silver, alerts = _score(silver)  # the stream's own scorer and alert events
    minutes = gold_from_silver(silver, window_seconds=60, updated_at_us=ingest_us)
    hours_rows = hours_from_minutes(minutes, updated_at_us=ingest_us)
    gold = pa.concat_tables([minutes, hours_rows])
    diagnoses = _diagnoses(ingest_us)
    ids = sorted(set(patients_table[c.PATIENT_ID].to_pylist()))
    keys = dict(
        zip(patients_table[c.PATIENT_ID].to_pylist(), patients_table[c.PATIENT_KEY].to_pylist(), strict=True)
    )
    return SampleWarehouse(
        tables={
            c.GOLD_TABLE: gold,
            c.ALERTS_TABLE: alerts,
            c.DQ_METRICS_TABLE: pa.concat_tables(tables[c.DQ_METRICS_TABLE]),
            c.DIAGNOSIS_TABLE: diagnoses,
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


def _score(silver: pa.Table) -> pa.Table:
    """Anomaly score and combined alert rule, through the stream scorer with a stand-in model."""
    from vitals_lake.model.artifact import LoadedModel  # noqa: PLC0415
    from vitals_lake.model.detectors import RobustZScore  # noqa: PLC0415
    from vitals_lake.model.serving import ModelWatcher, StreamScorer  # noqa: PLC0415

    model = LoadedModel(
        detector=RobustZScore(),
        threshold=SAMPLE_THRESHOLD,
        metadata={"model_version": SAMPLE_MODEL_VERSION},
    )

    class _Fixed(ModelWatcher):
        def current(self) -> LoadedModel | None:
            return model

    scorer = StreamScorer(_Fixed("unused"))
    # In time order, a few minutes at a time, as the stream scores its batches.
    seconds = pc.cast(silver[c.TIMESTAMP], pa.int64()).to_numpy() // 1_000_000
    order = np.argsort(seconds, kind="stable")
    silver = silver.take(pa.array(order))
    seconds = seconds[order]
    parts, events = [], []
    edges = np.flatnonzero(np.diff(seconds // 300)) + 1
    for rows in np.split(np.arange(silver.num_rows), edges):
        scored, raised = scorer.score_with_events(silver.take(pa.array(rows)))
        parts.append(scored)
        events.append(raised)
    return pa.concat_tables(parts), pa.concat_tables(events)
