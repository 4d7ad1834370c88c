"""The baseline features as they were computed before the hot path was vectorised: a Python loop per
patient and per reading over a ring object per patient. Kept, unchanged, as the reference the
vectorised :class:`vitals_lake.model.features.BaselineState` must match row for row."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from vitals_lake import contract as c
from vitals_lake.model.features import (
    _FLOOR,
    _N,
    DATA_AGE,
    DEVIATION_FEATURES,
    MAD_TO_SIGMA,
    NEWS2_MAX_SUBSCORE,
    POPULATION_MEDIAN,
    POPULATION_SCALE,
    _max_subscore,
    _news2,
    epoch_seconds,
)
from vitals_lake.news2 import float_column


@dataclass
class _Ring:
    """One patient's baseline: a bounded ring of past readings and the statistics last computed."""

    values: np.ndarray  # capacity x vitals
    size: int = 0
    head: int = 0
    last_ts: float = -np.inf  # newest reading seen (seconds)
    last_add_ts: float = -np.inf  # newest reading that entered the ring
    added_since_refresh: int = 0
    median: np.ndarray = field(default_factory=POPULATION_MEDIAN.copy)
    scale: np.ndarray = field(default_factory=POPULATION_SCALE.copy)

    def add(self, x: np.ndarray, *, warmup: int, refresh_every: int) -> None:
        cap = len(self.values)
        self.values[self.head] = x
        self.head = (self.head + 1) % cap
        self.size = min(self.size + 1, cap)
        self.added_since_refresh += 1
        # Recompute only at warm-up and then every few entries: medians are the costly part.
        if self.size == warmup or (self.size > warmup and self.added_since_refresh >= refresh_every):
            self._refresh()

    def _refresh(self) -> None:
        window = self.values[: self.size]
        # An unmeasured vital gives an all-NaN column: expected, so its warning is silenced.
        with np.errstate(all="ignore"), warnings.catch_warnings(action="ignore", category=RuntimeWarning):
            # np.median is several times faster than nanmedian; most windows hold no gap.
            median = np.nanmedian if np.isnan(window).any() else np.median
            med = median(window, axis=0)
            mad = median(np.abs(window - med), axis=0)
        scale = np.maximum(mad * MAD_TO_SIGMA, _FLOOR)
        # A vital never measured in the window keeps the population reference.
        missing = ~np.isfinite(med)
        self.median = np.where(missing, POPULATION_MEDIAN, med)
        self.scale = np.where(missing | ~np.isfinite(scale), POPULATION_SCALE, scale)
        self.added_since_refresh = 0


@dataclass
class PerReadingBaselines:
    """Per-patient robust baselines carried across batches.

    ``spacing_seconds`` thins the ring (at most one entry per spacing) so ``capacity`` entries span
    about ``capacity * spacing_seconds`` (default 24 h) whatever the device's reporting rate.
    """

    capacity: int = 1440
    spacing_seconds: float = 55.0
    warmup: int = 12
    refresh_every: int = 10
    rings: dict[str, _Ring] = field(default_factory=dict)

    @property
    def patients(self) -> int:
        return len(self.rings)

    def idle(self, *, before: float) -> pa.Array:
        return pa.array([p for p, ring in self.rings.items() if ring.last_ts < before], pa.string())

    def forget(self, patient_ids: pa.Array) -> int:
        gone = [p for p in patient_ids.to_pylist() if self.rings.pop(p, None) is not None]
        return len(gone)

    def update(self, table: pa.Table) -> pa.Table:
        """Features for ``table``'s rows (same order), then fold the rows into the baselines.

        Rows are taken per patient in timestamp order; a reading older than one already seen gets a
        data age of 0.
        """
        n = table.num_rows
        ts = epoch_seconds(table)
        pid = np.asarray(table[c.PATIENT_KEY].to_numpy(zero_copy_only=False), dtype=object)
        x = np.column_stack([float_column(table, v) for v in c.VITAL_NAMES]) if n else np.zeros((0, _N))
        med = np.empty((n, _N))
        scale = np.empty((n, _N))
        age = np.zeros(n)

        _uniq, codes = np.unique(pid, return_inverse=True) if n else (np.array([]), np.zeros(0, int))
        order = np.lexsort((ts, codes))  # by patient, then time (stable)
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        for rows in np.split(order, bounds) if n else []:
            ring = self._ring(str(pid[rows[0]]))
            for i in rows:
                med[i] = ring.median
                scale[i] = ring.scale
                t = ts[i]
                if np.isfinite(ring.last_ts):
                    age[i] = max(t - ring.last_ts, 0.0)
                ring.last_ts = max(ring.last_ts, t)
                if t - ring.last_add_ts >= self.spacing_seconds:
                    ring.last_add_ts = t
                    ring.add(x[i], warmup=self.warmup, refresh_every=self.refresh_every)

        dev = (x - med) / scale
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            c.PATIENT_KEY: table[c.PATIENT_KEY],
            c.TIMESTAMP: table[c.TIMESTAMP],
        }
        for j, v in enumerate(c.VITAL_NAMES):
            columns[v] = pa.array(x[:, j], pa.float64(), from_pandas=True)
        for j, name in enumerate(DEVIATION_FEATURES):
            columns[name] = pa.array(dev[:, j], pa.float64(), from_pandas=True)
        columns[DATA_AGE] = pa.array(age, pa.float64())
        columns[c.NEWS2_SCORE] = _news2(table)
        columns[NEWS2_MAX_SUBSCORE] = _max_subscore(table)
        return pa.table(columns)

    def _ring(self, patient: str) -> _Ring:
        ring = self.rings.get(patient)
        if ring is None:
            ring = self.rings[patient] = _Ring(values=np.full((self.capacity, _N), np.nan))
        return ring
