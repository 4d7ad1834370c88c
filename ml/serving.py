"""Score Silver batches in the stream with the deployed model, and pick up new versions live.

``ModelWatcher`` looks at the artifact's ``metadata.json`` at most every ``poll_seconds`` (like
RunInference's ``WatchFilePattern``) and loads a new version when the version changes; a version
that fails verification is refused and the current one keeps serving. ``StreamScorer`` carries the
per-patient baselines from batch to batch (the same ``BaselineState`` training uses) and scores each
batch in one call: batches, never one row at a time (FACTS.md: 130 rows/s vs 75,000 rows/s).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from ml import artifact
from ml.artifact import ArtifactError, LoadedModel
from ml.features import BaselineState
from vitals_lake import contract as c

log = logging.getLogger(__name__)


def _read(uri: str) -> bytes:
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


class StreamScorer:
    """Fills ``anomaly_score``, ``is_anomaly`` and ``model_version`` of Silver rows."""

    def __init__(self, watcher: ModelWatcher | None) -> None:
        self.watcher = watcher
        self.baselines = BaselineState()

    def score(self, silver: pa.Table) -> pa.Table:
        # Baselines advance even while no model is deployed, so a new model starts warm.
        features = self.baselines.update(silver)
        model = self.watcher.current() if self.watcher else None
        if model is None or silver.num_rows == 0:
            return silver
        scores = np.asarray(model.score(features), dtype=np.float64)
        out = silver
        for name, values in (
            (c.ANOMALY_SCORE, pa.array(scores, pa.float64())),
            (c.IS_ANOMALY, pa.array(scores >= model.threshold, pa.bool_())),
            (c.MODEL_VERSION, pa.array([model.version] * silver.num_rows, pa.string())),
        ):
            out = out.set_column(out.schema.get_field_index(name), name, values)
        return out
