"""Anomaly detectors over feature tables (``ml.features``) and the combined alert rule.

Every detector has ``fit(features_normal)`` and ``score(features) -> np.ndarray`` (higher = more
anomalous), both on whole batches: scoring row by row is hundreds of times slower.
"""

from __future__ import annotations

from typing import ClassVar, Final

import numpy as np
import pyarrow as pa
from sklearn.ensemble import IsolationForest
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml.features import DEVIATION_FEATURES, feature_matrix
from vitals_lake import contract as c
from vitals_lake.news2 import float_column

NEWS2_EMERGENCY: Final = 7  # aggregate NEWS2 that calls for an emergency response
NEWS2_RED_SUBSCORE: Final = 3  # a single parameter scoring 3 ("red score") calls for urgent review
DEVIATION_CLIP: Final = 20.0  # beyond 20 robust sigmas the size no longer matters; keeps models stable


class Detector:
    """Common interface; ``features`` are the columns a detector reads."""

    name: ClassVar[str] = "detector"
    features: tuple[str, ...] = DEVIATION_FEATURES

    def fit(self, features_normal: pa.Table) -> Detector:
        return self

    def score(self, features: pa.Table) -> np.ndarray:
        raise NotImplementedError

    def _x(self, features: pa.Table) -> np.ndarray:
        return np.clip(feature_matrix(features, self.features), -DEVIATION_CLIP, DEVIATION_CLIP)


class RobustZScore(Detector):
    """No training: the largest absolute robust z over the vitals."""

    name = "zscore"

    def score(self, features: pa.Table) -> np.ndarray:
        return np.abs(self._x(features)).max(axis=1)


class IsolationForestDetector(Detector):
    name = "isolation_forest"

    def __init__(self, *, seed: int = 42, n_estimators: int = 200, max_samples: int = 512) -> None:
        self.seed = seed
        self.model = IsolationForest(n_estimators=n_estimators, max_samples=max_samples, random_state=seed)

    def fit(self, features_normal: pa.Table) -> IsolationForestDetector:
        self.model.fit(self._x(features_normal))
        return self

    def score(self, features: pa.Table) -> np.ndarray:
        return -self.model.score_samples(self._x(features))  # sklearn: lower = more abnormal


class AutoencoderDetector(Detector):
    """A small MLP reconstructing standardised deviations through a bottleneck; score = squared error."""

    name = "autoencoder"

    def __init__(self, *, seed: int = 42, hidden: tuple[int, ...] = (16, 4, 16), max_rows: int = 60_000):
        self.seed = seed
        self.max_rows = max_rows
        self.model = Pipeline(
            [
                ("scale", StandardScaler()),
                (
                    "mlp",
                    MLPRegressor(
                        hidden_layer_sizes=hidden,
                        max_iter=60,
                        early_stopping=True,
                        random_state=seed,
                        tol=1e-5,
                    ),
                ),
            ]
        )

    def fit(self, features_normal: pa.Table) -> AutoencoderDetector:
        x = self._x(features_normal)
        if len(x) > self.max_rows:  # a seeded subsample: normal data is redundant, training time is not
            rng = np.random.default_rng(self.seed)
            x = x[rng.choice(len(x), self.max_rows, replace=False)]
        self.model.fit(x, x)
        return self

    def score(self, features: pa.Table) -> np.ndarray:
        x = self._x(features)
        scaler = self.model.named_steps["scale"]
        target = scaler.transform(x)
        recon = self.model.named_steps["mlp"].predict(target)
        return np.asarray(((target - recon) ** 2).mean(axis=1))


class News2Detector(Detector):
    """Reference: the NEWS2 aggregate itself."""

    name = "news2"
    features = (c.NEWS2_SCORE,)

    def score(self, features: pa.Table) -> np.ndarray:
        return np.nan_to_num(float_column(features, c.NEWS2_SCORE), nan=0.0)


DETECTORS: Final[dict[str, type[Detector]]] = {
    d.name: d for d in (RobustZScore, IsolationForestDetector, AutoencoderDetector, News2Detector)
}


def make_detector(name: str, *, seed: int = 42) -> Detector:
    if name in (IsolationForestDetector.name, AutoencoderDetector.name):
        return DETECTORS[name](seed=seed)  # type: ignore[call-arg]
    return DETECTORS[name]()


def fix_threshold(scores_on_normal: np.ndarray, target_fpr: float) -> float:
    """The score at or above which only ``target_fpr`` of normal readings fall."""
    if not 0.0 < target_fpr < 1.0:
        raise ValueError("target_fpr must be within (0, 1)")
    s = np.asarray(scores_on_normal, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ValueError("no finite scores to fix a threshold on")
    # "higher" quantile, nudged up: ties at the quantile then count as normal, not as alerts.
    q = float(np.quantile(s, 1.0 - target_fpr, method="higher"))
    return float(np.nextafter(q, np.inf))


def alert_decisions(
    scores: np.ndarray,
    threshold: float,
    patient_ids: np.ndarray | pa.Array | pa.ChunkedArray,
    timestamps: np.ndarray | pa.Array | pa.ChunkedArray,
    *,
    news2: np.ndarray | None = None,
    news2_max_subscore: np.ndarray | None = None,
    persistence: int = 2,
) -> np.ndarray:
    """Alert per row: the condition held for ``persistence`` consecutive readings of the patient.

    Condition: model score >= threshold, or NEWS2 >= 7, or a single NEWS2 parameter scored 3 (when
    known). Persistence suppresses one-reading sensor artefacts. Rows may come in any order; runs are
    counted per patient in timestamp order, and the result is in the input order.
    """
    if persistence < 1:
        raise ValueError("persistence must be >= 1")
    cond = np.asarray(scores, dtype=np.float64) >= threshold
    if news2 is not None:
        cond |= np.nan_to_num(np.asarray(news2, dtype=np.float64), nan=0.0) >= NEWS2_EMERGENCY
    if news2_max_subscore is not None:
        sub = np.nan_to_num(np.asarray(news2_max_subscore, dtype=np.float64), nan=0.0)
        cond |= sub >= NEWS2_RED_SUBSCORE
    pid = _numpy(patient_ids)
    ts = _numpy(timestamps)
    _, codes = np.unique(pid, return_inverse=True)
    order = np.lexsort((ts, codes))
    c_sorted = cond[order]
    new_patient = np.r_[True, codes[order][1:] != codes[order][:-1]]
    # Run length of consecutive True per patient: index minus where the current run started (a False
    # row restarts the run after itself, a patient's first row restarts it at itself).
    idx = np.arange(len(c_sorted))
    run_start = np.maximum.accumulate(np.where(~c_sorted, idx + 1, np.where(new_patient, idx, 0)))
    run = np.where(c_sorted, idx - run_start + 1, 0)
    out = np.zeros(len(cond), dtype=bool)
    out[order] = run >= persistence
    return out


def _numpy(values: np.ndarray | pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        if pa.types.is_timestamp(values.type):
            values = values.cast(pa.int64())
        return np.asarray(values.to_numpy(zero_copy_only=False))
    return np.asarray(values)
