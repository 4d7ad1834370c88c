"""Silver's gate: parse and check every record of a batch, then enrich and score the valid ones
(NEWS2 and flags; the anomaly model when one is deployed).

Outputs: main 'valid' (batch_id, Silver rows), 'quarantine' (batch_id, rows with the rules they
failed), 'dq' (batch_id, one data-quality row per rule) and 'alerts' (batch_id, the alert events the
combined rule's state changes produced).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from pipelines.lake_io import read_patients, time_range
from vitals_lake import contract as c
from vitals_lake import expectations as ex
from vitals_lake.admissions import PatientDirectory
from vitals_lake.alerting import AlertRule
from vitals_lake.config import LakeSettings
from vitals_lake.lake import Lake
from vitals_lake.model.serving import HISTORY_COLUMNS, ModelWatcher, StreamScorer
from vitals_lake.pseudonym import PseudonymKey
from vitals_lake.readings import TimeRules
from vitals_lake.silver import gate_batch

QUARANTINE = "quarantine"
ALERTS = "alerts"
BASELINE_SPAN = timedelta(
    hours=24
)  # how far back a restored baseline reaches (vitals_lake.model.features' ring)
DQ = "dq"
log = logging.getLogger(__name__)


def batch_window_start(batch_id: str) -> int:
    """Batch ids are ``<window start in µs>-<shard>-<run id>`` (see ``batching.BatchForCommit``)."""
    return int(batch_id.split("-", 1)[0])


def recent_silver(lake: Lake, patients: list[str], before: float) -> pa.Table:
    """These patients' Silver rows of the baseline span before ``before`` (epoch seconds): what a
    scorer replays to rebuild their baselines and alert state after a restart or on a new worker."""
    hi = datetime.fromtimestamp(before, UTC) - timedelta(microseconds=1)  # rows before, not at
    where = time_range(c.TIMESTAMP, hi - BASELINE_SPAN, hi)
    return read_patients(
        lake, "silver", where, pa.array(patients, pa.string()), columns=list(HISTORY_COLUMNS)
    )


class ValidateReadingsFn(beam.DoFn):
    def __init__(
        self,
        lake: LakeSettings,
        time_rules: TimeRules,
        model_uri: str | None,
        model_poll: float,
        rule: AlertRule,
    ) -> None:
        self.lake_settings = lake
        self.time_rules = time_rules
        self.model_uri = model_uri
        self.model_poll = model_poll
        self.rule = rule
        # One scorer per worker process: its per-patient state must outlive a DoFn instance (the
        # local runner makes one per bundle); Shared keeps the last one alive between bundles.
        self.shared = Shared()
        self.scorer: StreamScorer | None = None
        self.valid = Metrics.counter("quality", "valid_rows")
        self.quarantined = Metrics.counter("quality", "quarantined_rows")
        self.unknown = Metrics.counter("quality", "unknown_patient_rows")
        self.alert_events = Metrics.counter("alerts", "events")
        self.failed_batches = Metrics.counter("quality", f"fail_{ex.RULE_QUARANTINE_RATIO}")
        self.patients: PatientDirectory | None = None
        self.key: bytes = b""

    def setup(self) -> None:
        lake = Lake(self.lake_settings)
        self.patients = PatientDirectory(lake)
        self.key = PseudonymKey.from_env().secret

        def make_scorer() -> StreamScorer:
            watcher = ModelWatcher(self.model_uri, poll_seconds=self.model_poll) if self.model_uri else None
            return StreamScorer(watcher, rule=self.rule, history=partial(recent_silver, lake))

        self.scorer = self.shared.acquire(make_scorer)

    def process(self, batch: tuple[str, pa.Table]) -> Iterator[object]:
        assert self.patients is not None and self.scorer is not None
        batch_id, bronze = batch
        patients = self.patients.table()
        parsed, silver = gate_batch(bronze, time_rules=self.time_rules, patients=patients, key=self.key)
        # Not isolated: scoring sees only rows the gate typed and range-checked, and what can fail there
        # (reading a patient's recent Silver, the model's store) is transient: a retry is the right answer.
        silver, alerts = self.scorer.score_with_events(silver)
        self.valid.inc(silver.num_rows)
        self.quarantined.inc(parsed.quarantine.num_rows)
        self.unknown.inc(pc.sum(pc.invert(silver[c.KNOWN_PATIENT])).as_py() or 0)
        for rule, count in parsed.rule_counts.items():
            if count:
                Metrics.counter("quality", f"failed_{rule}").inc(count)
        failed = dict(parsed.rule_counts)
        checked = dict(parsed.checked)
        # The batch-level "fail" expectation: nothing stops, an alert metric and an error log fire.
        ratio = parsed.quarantine.num_rows / bronze.num_rows if bronze.num_rows else 0.0
        checked[ex.RULE_QUARANTINE_RATIO] = 1
        failed[ex.RULE_QUARANTINE_RATIO] = int(ratio > ex.MAX_QUARANTINE_RATIO)
        if ratio > ex.MAX_QUARANTINE_RATIO:
            self.failed_batches.inc()
            log.error("batch %s: %.0f %% of %d records quarantined", batch_id, 100 * ratio, bronze.num_rows)
        yield batch_id, silver
        if alerts.num_rows:
            self.alert_events.inc(alerts.num_rows)
            yield pvalue.TaggedOutput(ALERTS, (batch_id, alerts))
        if parsed.quarantine.num_rows:
            yield pvalue.TaggedOutput(QUARANTINE, (batch_id, parsed.quarantine))
        dq = ex.dq_metrics(
            batch_id=batch_id, window_start_us=batch_window_start(batch_id), failed=failed, checked=checked
        )
        yield pvalue.TaggedOutput(DQ, (batch_id, dq))


class ValidateReadings(beam.PTransform):
    """(batch_id, Bronze rows) -> 'valid' Silver rows, 'quarantine' rows, 'dq' metric rows, 'alerts'."""

    def __init__(
        self,
        lake: LakeSettings,
        *,
        clock_skew: timedelta,
        max_age: timedelta | None,
        model_uri: str | None = None,
        model_poll: float = 30.0,
        rule: AlertRule | None = None,
    ) -> None:
        super().__init__()
        self.lake = lake
        self.time_rules = TimeRules(clock_skew=clock_skew, max_age=max_age)
        self.model_uri = model_uri
        self.model_poll = model_poll
        self.rule = rule or AlertRule()

    def expand(self, batches: beam.PCollection) -> pvalue.DoOutputsTuple:
        return batches | "ParseCheckEnrichScore" >> beam.ParDo(
            ValidateReadingsFn(self.lake, self.time_rules, self.model_uri, self.model_poll, self.rule)
        ).with_outputs(QUARANTINE, DQ, ALERTS, main="valid")
