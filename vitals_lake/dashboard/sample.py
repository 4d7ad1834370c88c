"""A small, realistic warehouse for the dashboard's test and screenshots, made by the real code path.

The simulator streams a seeded cohort with labelled deterioration episodes; its readings go through
the same Bronze -> Silver -> Gold functions the pipeline uses (validation, enrichment, NEWS2, flags),
the stream scorer fills the anomaly score and the combined alert rule (with a no-training robust
z-score model standing in for the deployed one), and the alert state changes become ``alerts`` rows.
Nothing here is hand-typed clinical data.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
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
    silver = _score(silver)
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
            c.ALERTS_TABLE: _alerts(silver),
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
    from ml.artifact import LoadedModel  # noqa: PLC0415
    from ml.detectors import RobustZScore  # noqa: PLC0415
    from ml.serving import ModelWatcher, StreamScorer  # noqa: PLC0415

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
    parts = []
    edges = np.flatnonzero(np.diff(seconds // 300)) + 1
    for rows in np.split(np.arange(silver.num_rows), edges):
        parts.append(scorer.score(silver.take(pa.array(rows))))
    return pa.concat_tables(parts)


def _alerts(silver: pa.Table) -> pa.Table:
    """One row per alert state change: opened when the rule fires, escalated when the NEWS2 response
    rises while it is open, resolved when it closes."""
    s = silver.sort_by([(c.PATIENT_ID, "ascending"), (c.TIMESTAMP, "ascending")])
    cols = {
        name: s[name].to_pylist()
        for name in (
            c.PATIENT_ID,
            c.PATIENT_KEY,
            c.WARD,
            c.BED,
            c.TIMESTAMP,
            c.NEWS2_SCORE,
            c.NEWS2_RESPONSE,
            c.ANOMALY_SCORE,
            c.IS_ANOMALY,
            c.MODEL_VERSION,
            c.ALERT_OPEN,
            c.ALERT_OPENED,
        )
    }
    rows: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for i in range(s.num_rows):
        pid = cols[c.PATIENT_ID][i]
        if current is not None and current["patient"] != pid:
            current = None
        open_now = bool(cols[c.ALERT_OPEN][i])
        response = cols[c.NEWS2_RESPONSE][i] or "low"
        severity = max(response, c.RISK_LEVEL_ON_ALERT, key=c.NEWS2_RESPONSES.index)
        at = cols[c.TIMESTAMP][i]
        if cols[c.ALERT_OPENED][i]:
            alert_id = hashlib.sha256(f"{pid}|{at.isoformat()}".encode()).hexdigest()[:24]
            reasons = _reasons(cols, i)
            current = {"patient": pid, "id": alert_id, "severity": severity, "since": at, "reasons": reasons}
            rows.append(
                _alert_row(
                    cols, i, alert_id=alert_id, state="opened", severity=severity, since=at, reasons=reasons
                )
            )
        elif current is not None and open_now:
            if c.NEWS2_RESPONSES.index(severity) > c.NEWS2_RESPONSES.index(current["severity"]):
                current["severity"] = severity
                current["reasons"] = sorted({*current["reasons"], *_reasons(cols, i)})
                rows.append(
                    _alert_row(
                        cols,
                        i,
                        alert_id=current["id"],
                        state="escalated",
                        severity=severity,
                        since=current["since"],
                        reasons=current["reasons"],
                    )
                )
        elif current is not None and not open_now:
            rows.append(
                _alert_row(
                    cols,
                    i,
                    alert_id=current["id"],
                    state="resolved",
                    severity=current["severity"],
                    since=current["since"],
                    reasons=current["reasons"],
                )
            )
            current = None
    if not rows:
        return c.ALERTS_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=c.ALERTS_SCHEMA)


def _reasons(cols: dict[str, list[Any]], i: int) -> list[str]:
    """The arms of the combined rule that held on reading ``i`` (vitals_lake.alerting's names)."""
    from vitals_lake.alerting import NEWS2_EMERGENCY  # noqa: PLC0415

    reasons = []
    if cols[c.IS_ANOMALY][i]:
        reasons.append("model")
    if (cols[c.NEWS2_SCORE][i] or 0) >= NEWS2_EMERGENCY:
        reasons.append("news2_emergency")
    return reasons or ["model"]


def _alert_row(
    cols: dict[str, list[Any]],
    i: int,
    *,
    alert_id: str,
    state: str,
    severity: str,
    since: datetime,
    reasons: list[str],
) -> dict[str, Any]:
    at: datetime = cols[c.TIMESTAMP][i]
    return {
        c.ALERT_ID: alert_id,
        c.ALERT_STATE: state,
        c.PATIENT_ID: cols[c.PATIENT_ID][i],
        c.PATIENT_KEY: cols[c.PATIENT_KEY][i],
        c.WARD: cols[c.WARD][i],
        c.BED: cols[c.BED][i],
        c.SEVERITY: severity,
        c.ALERT_REASONS: reasons,
        c.NEWS2_SCORE: cols[c.NEWS2_SCORE][i],
        c.ANOMALY_SCORE: cols[c.ANOMALY_SCORE][i],
        c.MODEL_VERSION: cols[c.MODEL_VERSION][i],
        c.WINDOW_START: since,
        c.WINDOW_END: at,
        c.EVENT_TIME: at,
        c.EVENT_DATE: date(at.year, at.month, at.day),
    }
