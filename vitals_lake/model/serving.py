"""Score Silver batches in the stream with the deployed model, and pick up new versions live.

``ModelWatcher`` looks at the artifact's ``metadata.json`` at most every ``poll_seconds`` (like
RunInference's ``WatchFilePattern``) and loads a new version when the version changes; a version
that fails verification is refused and the current one keeps serving. ``StreamScorer`` carries the
per-patient baselines from batch to batch (the same ``BaselineState`` training uses) and scores each
batch in one call: batches, never one row at a time (measured with scikit-learn: one row at a time
about 130 rows/s, batches of 1,000 about 75,000 rows/s; docs/design.md, toolchain survey).
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.alert_events import alert_events, severity_ranks
from vitals_lake.alerting import AlertDecisions, AlertRule, AlertTracker
from vitals_lake.masks import true_where
from vitals_lake.model import artifact
from vitals_lake.model.artifact import ArtifactError, LoadedModel
from vitals_lake.model.features import NEWS2_MAX_SUBSCORE, BaselineState, epoch_seconds

log = logging.getLogger(__name__)


def _read(uri: str) -> bytes:
    # Beam's filesystems (local, gs://) are imported when a model is first read, not at start-up.
    from apache_beam.io.filesystems import FileSystems  # noqa: PLC0415

    with FileSystems.open(uri) as fh:
        return bytes(fh.read())


class ModelWatcher:
    """The current model at ``uri`` (a local directory or ``gs://``), reloaded when it changes."""

    def __init__(
        self, uri: str, *, poll_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.uri = uri.rstrip("/")
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.model: LoadedModel | None = None
        self._checked_at: float | None = None
        self._refused: str | None = None  # a version that failed verification: not retried

    def current(self) -> LoadedModel | None:
        now = self.clock()
        if self._checked_at is None or now - self._checked_at >= self.poll_seconds:
            self._checked_at = now
            self._reload_if_changed()
        return self.model

    def _reload_if_changed(self) -> None:
        try:
            version = json.loads(_read(f"{self.uri}/{artifact.METADATA_FILE}"))["model_version"]
        except (OSError, ValueError, KeyError) as exc:
            if self.model is None:
                log.warning("no model at %s yet (%s): readings are stored unscored", self.uri, exc)
            return
        if (self.model is not None and version == self.model.version) or version == self._refused:
            return
        try:
            loaded = self._load()
        except ArtifactError as exc:
            self._refused = version
            log.error(
                "model %s at %s refused (%s); still serving %s",
                version,
                self.uri,
                exc,
                self.model.version if self.model else "none",
            )
            return
        log.info("serving model %s (was %s)", loaded.version, self.model.version if self.model else "none")
        self.model = loaded

    def _load(self) -> LoadedModel:
        if "://" not in self.uri:
            return artifact.load(Path(self.uri))
        with tempfile.TemporaryDirectory() as tmp:  # verification and skops need local bytes
            for name in (artifact.METADATA_FILE, artifact.MODEL_FILE):
                (Path(tmp) / name).write_bytes(_read(f"{self.uri}/{name}"))
            return artifact.load(Path(tmp))


# What rebuilding a patient's state needs from Silver: baseline inputs and the stored alert condition.
HISTORY_COLUMNS: Final = (
    c.PATIENT_KEY,
    c.TIMESTAMP,
    *c.VITAL_NAMES,
    c.NEWS2_SCORE,
    *(c.news2_subscore_column(p) for p in c.NEWS2_PARAMETERS),
    c.IS_ANOMALY,
    c.NEWS2_RESPONSE,
)
History = Callable[[list[str], float], pa.Table]  # (patients, before epoch seconds) -> their Silver rows


@dataclass
class ScorerState:
    """What scoring remembers per patient between batches: robust baselines, alert runs, and which
    patients have had their history restored. Plain data, one per patient shard (part of the
    shard's state in ``vitals_lake.engine``)."""

    rule: InitVar[AlertRule | None] = None
    baselines: BaselineState = field(default_factory=BaselineState)
    alerts: AlertTracker = field(default_factory=AlertTracker)
    seen: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))  # patients restored

    def __post_init__(self, rule: AlertRule | None) -> None:
        if rule is not None:
            self.alerts.rule = rule

    @property
    def patients(self) -> int:
        return self.baselines.patients

    def forget_idle(self, *, before: float) -> int:
        """Forget the patients with no reading since ``before`` (epoch seconds) and no alert open: a
        shard runs for months and its patients are discharged, so without this its memory grows with
        every patient it has ever seen (about 70 KB each). One seen again starts afresh, as after a
        restart that finds no Silver history for them. Forgets only once a quarter of the patients
        are idle (each forgetting copies the others' rings). Returns how many were forgotten."""
        idle = self.baselines.idle(before=before)
        if not len(idle) or 4 * len(idle) < self.patients:
            return 0
        idle = idle.filter(pa.array(~self.alerts.open_for(idle)))
        self.baselines.forget(idle)
        self.alerts.forget(idle)
        self.seen = self.seen.filter(pc.invert(pc.is_in(self.seen, value_set=idle)))
        return len(idle)


def score_batch(
    state: ScorerState, silver: pa.Table, *, model: LoadedModel | None, history: History | None = None
) -> tuple[pa.Table, pa.Table]:
    """Fill ``anomaly_score``, ``is_anomaly``, ``model_version``, ``alert_open`` and ``alert_opened``
    for a batch and advance ``state``; return the scored rows and the alert events (``c.ALERTS_SCHEMA``)
    the rule's state changes caused.

    A patient ``state`` has not seen first has their recent Silver history replayed through the same
    code when a ``history`` reader is given (a new deployment, a replay): baselines and open alerts
    survive. Known patients never cause a read.
    """
    if silver.num_rows == 0:
        return silver, c.ALERTS_SCHEMA.empty_table()
    _restore(state, silver, history)
    # Baselines advance even while no model is deployed, so a new model starts warm.
    features = state.baselines.update(silver)
    out = silver
    anomaly = np.zeros(silver.num_rows, dtype=bool)
    if model is not None:
        scores = np.asarray(model.score(features), dtype=np.float64)
        anomaly = scores >= model.threshold
        out = _set(out, c.ANOMALY_SCORE, pa.array(scores, pa.float64()))
        out = _set(out, c.IS_ANOMALY, pa.array(anomaly, pa.bool_()))
        out = _set(out, c.MODEL_VERSION, pa.repeat(pa.scalar(model.version, pa.string()), silver.num_rows))
    decisions, reasons = _alerts(state.alerts, silver, features, anomaly)
    out = _set(out, c.ALERT_OPEN, pa.array(decisions.open, pa.bool_()))
    out = _set(out, c.ALERT_OPENED, pa.array(decisions.opened, pa.bool_()))
    return out, alert_events(out, decisions, reasons)


def _alerts(
    tracker: AlertTracker, silver: pa.Table, features: pa.Table, anomaly: np.ndarray
) -> tuple[AlertDecisions, np.ndarray]:
    reasons = tracker.rule.reasons(
        anomaly=anomaly,
        news2=features[c.NEWS2_SCORE].to_numpy(zero_copy_only=False),
        news2_max_subscore=features[NEWS2_MAX_SUBSCORE].to_numpy(zero_copy_only=False),
    )
    decisions = tracker.update(
        patient_ids=features[c.PATIENT_KEY],
        seconds=epoch_seconds(features),
        condition=reasons > 0,
        severity=severity_ranks(silver, reasons),
    )
    return decisions, reasons


def _restore(state: ScorerState, silver: pa.Table, history: History | None) -> None:
    patients = pc.unique(silver[c.PATIENT_KEY].combine_chunks()).cast(pa.string())
    new = patients.filter(pc.invert(pc.is_in(patients, value_set=state.seen)))
    if len(new) == 0:
        return
    state.seen = pa.concat_arrays([state.seen, new])
    if history is None:
        return
    past = history(sorted(new.to_pylist()), float(epoch_seconds(silver).max()))
    # Only what came before each patient's first reading in this batch (a replayed batch may
    # already be in Silver: its rows must not enter the baseline twice).
    first = silver.group_by(c.PATIENT_KEY, use_threads=False).aggregate([(c.TIMESTAMP, "min")])
    past = past.join(first, c.PATIENT_KEY, join_type="inner", use_threads=False)
    past = past.filter(pc.less(past[c.TIMESTAMP], past[f"{c.TIMESTAMP}_min"])).drop_columns(
        [f"{c.TIMESTAMP}_min"]
    )
    if past.num_rows == 0:
        return
    past = past.sort_by([(c.PATIENT_KEY, "ascending"), (c.TIMESTAMP, "ascending")])
    features = state.baselines.update(past)
    stored = true_where(past[c.IS_ANOMALY])
    _alerts(state.alerts, past, features, stored)  # state only: these events were published before
    log.info("restored baselines and alert state of %d patients from %d Silver rows", len(new), past.num_rows)


class StreamScorer:
    """A :class:`ScorerState` and the model watcher together, for callers outside the pipeline's keyed
    state (the benchmarks, the tests): ``score_with_events`` is :func:`score_batch` with the current
    model."""

    def __init__(
        self, watcher: ModelWatcher | None, *, rule: AlertRule | None = None, history: History | None = None
    ) -> None:
        self.watcher = watcher
        self.state = ScorerState(rule=rule or AlertRule())
        self.history = history
        self._lock = threading.Lock()

    @property
    def baselines(self) -> BaselineState:
        return self.state.baselines

    @property
    def alerts(self) -> AlertTracker:
        return self.state.alerts

    def score(self, silver: pa.Table) -> pa.Table:
        return self.score_with_events(silver)[0]

    def score_with_events(self, silver: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Scored Silver rows, and the alert events (``c.ALERTS_SCHEMA``) they caused."""
        with self._lock:
            model = self.watcher.current() if self.watcher else None
            return score_batch(self.state, silver, model=model, history=self.history)


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)
