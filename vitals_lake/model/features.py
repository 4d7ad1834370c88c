"""Features for anomaly detection: each vital against the patient's OWN robust baseline.

One implementation serves training and streaming. :class:`BaselineState` keeps, per patient, a bounded
ring of past readings; :meth:`BaselineState.update` turns a batch of Silver-shaped rows into features
and advances the state, so a streaming pipeline carries it from batch to batch.
:func:`features_for_history` is the same code run over a whole history at once, which makes the two
paths identical by construction (the tests check it batch by batch).

Per reading and vital: ``(value - median) / max(MAD * 1.4826, floor)`` where median and MAD come from
the patient's past only (the reading itself never enters its own baseline: no look-ahead). Until a
patient has ``warmup`` baseline entries, the contract's normal-range midpoints stand in, so a new
patient's first readings are not all anomalies.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.news2 import float_column

DATA_AGE: Final = "data_age_seconds"  # seconds since the patient's previous reading (0 for the first)
NEWS2_MAX_SUBSCORE: Final = "news2_max_subscore"  # worst single NEWS2 parameter (null when unknown)
MAD_TO_SIGMA: Final = 1.4826  # MAD of a normal distribution times this = its standard deviation


def deviation_column(vital: str) -> str:
    """Feature column of a vital's robust z against the patient's baseline, e.g. ``heart_rate_dev``."""
    return f"{vital}_dev"


DEVIATION_FEATURES: Final = tuple(deviation_column(v) for v in c.VITAL_NAMES)
FEATURE_NAMES: Final = (*c.VITAL_NAMES, *DEVIATION_FEATURES, DATA_AGE)

# Smallest scale per vital (native units): a very steady patient must not turn noise into alarms.
SCALE_FLOOR: Final[dict[str, float]] = {
    c.HEART_RATE: 3.0,
    c.TEMPERATURE: 0.15,
    c.SPO2: 0.7,
    c.RESPIRATION_RATE: 1.5,
    c.SYSTOLIC: 4.0,
    c.DIASTOLIC: 3.0,
}
# Population reference during warm-up: the middle of the normal range; half the range spans 2 "sigma".
POPULATION_MEDIAN: Final = np.array([sum(c.VITALS_BY_NAME[v].normal) / 2 for v in c.VITAL_NAMES])
POPULATION_SCALE: Final = np.array(
    [(c.VITALS_BY_NAME[v].normal[1] - c.VITALS_BY_NAME[v].normal[0]) / 4 for v in c.VITAL_NAMES]
)
_FLOOR: Final = np.array([SCALE_FLOOR[v] for v in c.VITAL_NAMES])
_N: Final = len(c.VITAL_NAMES)


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
class BaselineState:
    """Per-patient robust baselines carried across batches.

    ``spacing_seconds`` thins the ring (at most one entry per spacing) so ``capacity`` entries span
    about ``capacity * spacing_seconds`` (default 24 h) whatever the device's reporting rate.
    """

    capacity: int = 1440
    spacing_seconds: float = 55.0
    warmup: int = 12
    refresh_every: int = 10
    patients: dict[str, _Ring] = field(default_factory=dict)

    def update(self, table: pa.Table) -> pa.Table:
        """Features for ``table``'s rows (same order), then fold the rows into the baselines.

        Rows are taken per patient in timestamp order; a reading older than one already seen gets a
        data age of 0.
        """
        n = table.num_rows
        ts = epoch_seconds(table)
        pid = np.asarray(table[c.PATIENT_ID].to_numpy(zero_copy_only=False), dtype=object)
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
            c.PATIENT_ID: table[c.PATIENT_ID],
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
        ring = self.patients.get(patient)
        if ring is None:
            ring = self.patients[patient] = _Ring(values=np.full((self.capacity, _N), np.nan))
        return ring


def features_for_history(table: pa.Table, state: BaselineState | None = None) -> pa.Table:
    """Features for a whole history (training): the streaming code path over all rows at once."""
    return (state or BaselineState()).update(table)


def feature_matrix(features: pa.Table, names: tuple[str, ...] = DEVIATION_FEATURES) -> np.ndarray:
    """Model input: the named columns as float64, with missing values as 0 (no evidence of deviation)."""
    if not names:
        return np.zeros((features.num_rows, 0))
    m = np.column_stack([float_column(features, name) for name in names])
    return np.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)


def epoch_seconds(table: pa.Table) -> np.ndarray:
    """The rows' timestamps as float seconds since the epoch."""
    us = pc.cast(pc.cast(table[c.TIMESTAMP], pa.timestamp("us", tz="UTC")), pa.int64())
    return np.asarray(us.to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6


def _news2(table: pa.Table) -> pa.Array:
    if c.NEWS2_SCORE not in table.column_names:
        return pa.nulls(table.num_rows, pa.float64())
    return pa.array(float_column(table, c.NEWS2_SCORE), pa.float64(), from_pandas=True)


def _max_subscore(table: pa.Table) -> pa.Array:
    cols = [c.news2_subscore_column(p) for p in c.NEWS2_PARAMETERS]
    present = [col for col in cols if col in table.column_names]
    if not present:
        return pa.nulls(table.num_rows, pa.float64())
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):  # all-NaN rows
        worst = np.nanmax(np.column_stack([float_column(table, col) for col in present]), axis=1)
    return pa.array(worst, pa.float64(), from_pandas=True)
