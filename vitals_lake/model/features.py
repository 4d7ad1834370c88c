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

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.news2 import float_column
from vitals_lake.patient_slots import PatientSlots

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


_US_PER_S: Final = 1_000_000


@dataclass
class BaselineState:
    """Per-patient robust baselines carried across batches, held as arrays with one row per patient.

    ``spacing_seconds`` thins the ring (at most one entry per spacing) so ``capacity`` entries span
    about ``capacity * spacing_seconds`` (default 24 h) whatever the device's reporting rate. Medians
    are recomputed only at warm-up and then every ``refresh_every`` entries: they are the costly part.
    """

    capacity: int = 1440
    spacing_seconds: float = 55.0
    warmup: int = 12
    refresh_every: int = 10
    index: PatientSlots = field(default_factory=PatientSlots)  # each patient's row in the arrays
    values: np.ndarray = field(init=False, repr=False)  # rows x capacity x vitals ring (first ``size``)
    size: np.ndarray = field(init=False, repr=False)  # entries in each ring
    head: np.ndarray = field(init=False, repr=False)  # where each ring's next entry goes
    added: np.ndarray = field(init=False, repr=False)  # entries since the statistics were refreshed
    last_ts: np.ndarray = field(init=False, repr=False)  # newest reading seen (seconds)
    last_add_ts: np.ndarray = field(init=False, repr=False)  # newest reading that entered the ring
    median: np.ndarray = field(init=False, repr=False)  # rows x vitals, as last refreshed
    scale: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.warmup < 1 or self.refresh_every < 1 or self.spacing_seconds < 0:
            raise ValueError("capacity, warmup and refresh_every must be >= 1, spacing_seconds >= 0")
        self.values = np.empty((0, self.capacity, _N))
        self.size, self.head, self.added = (np.zeros(0, np.int64) for _ in range(3))
        self.last_ts, self.last_add_ts = np.zeros(0), np.zeros(0)
        self.median, self.scale = np.zeros((0, _N)), np.zeros((0, _N))

    @property
    def patients(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        """Bytes of the patients' rings and statistics (allocated spare rows not counted)."""
        n = self.patients
        return int(self.values[:n].nbytes + self.median[:n].nbytes * 2 + n * 5 * 8)

    def __getstate__(self) -> dict[str, object]:
        # Rows are allocated ahead (growth by a quarter): a checkpoint carries only the patients'.
        n = self.patients
        state = dict(self.__dict__)
        for name in _PER_PATIENT:
            state[name] = state[name][:n].copy()
        return state

    def update(self, table: pa.Table) -> pa.Table:
        """Features for ``table``'s rows (same order), then fold the rows into the baselines.

        Rows are taken per patient in timestamp order; a reading older than one already seen gets a
        data age of 0. Whole-batch array operations: the only loop is over ring entries *per patient*
        (round r adds every patient's r-th new entry at once), a few per batch at a stream's rates.
        """
        n = table.num_rows
        x = np.column_stack([float_column(table, v) for v in c.VITAL_NAMES]) if n else np.zeros((0, _N))
        med, scale, age = np.empty((n, _N)), np.empty((n, _N)), np.zeros(n)
        if n:
            us = _micros(table)
            slot = self._slots(table[c.PATIENT_KEY])
            order = np.lexsort((us, slot))  # by patient, then time (stable)
            s_slot, s_us = slot[order], us[order]
            s_ts = s_us / _US_PER_S
            first = np.flatnonzero(np.r_[True, s_slot[1:] != s_slot[:-1]])
            group = np.repeat(np.arange(len(first)), np.diff(np.r_[first, n]))
            # Data age: since the newer of the patient's newest known reading and the row before it.
            prev = np.r_[-np.inf, s_ts[:-1]]
            prev[first] = -np.inf
            prev = np.maximum(prev, self.last_ts[s_slot])
            age[order] = np.where(np.isfinite(prev), np.maximum(s_ts - prev, 0.0), 0.0)
            g_slot = s_slot[first]
            self.last_ts[g_slot] = np.maximum(self.last_ts[g_slot], np.maximum.reduceat(s_ts, first))
            s_med, s_scale = self._advance(
                x[order], us=s_us, ts=s_ts, first=first, group=group, g_slot=g_slot
            )
            med[order], scale[order] = s_med, s_scale

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

    def _advance(
        self,
        x: np.ndarray,
        *,
        us: np.ndarray,
        ts: np.ndarray,
        first: np.ndarray,
        group: np.ndarray,
        g_slot: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows sorted by patient and time (``first``: each patient's first row; ``group``: each row's
        patient; ``g_slot``: each patient's row in the state) -> the median and scale each row is
        measured against (its patient's statistics before it), adding ring entries and refreshing the
        statistics on the way."""
        n, groups = len(ts), len(first)
        end = np.r_[first[1:], n]
        start_med, start_scale = self.median[g_slot], self.scale[g_slot]
        snap_med, snap_scale = np.empty((n, _N)), np.empty((n, _N))
        is_entry = np.zeros(n, bool)
        find = _EntryFinder(us, group, groups)
        pos = first.copy()
        last_add = self.last_add_ts[g_slot].copy()
        active = np.arange(groups)
        while active.size:
            # Each active patient's next row at least ``spacing`` after their newest ring entry.
            j = find.next_at(active, pos[active], last_add[active], self.spacing_seconds)
            while True:  # the float test decides (a row the microsecond search let through may fail it)
                inside = j < end[active]
                late = np.zeros(len(j), bool)
                late[inside] = ts[j[inside]] - last_add[active[inside]] < self.spacing_seconds
                if not late.any():
                    break
                j = np.where(late, j + 1, j)
            inside = j < end[active]
            active, j = active[inside], j[inside]
            if not active.size:
                break
            is_entry[j] = True
            last_add[active] = ts[j]
            pos[active] = j + 1
            slots = g_slot[active]
            self._add(slots, x[j])
            snap_med[j], snap_scale[j] = self.median[slots], self.scale[slots]
        self.last_add_ts[g_slot] = last_add
        # A row is measured against the statistics after its patient's last entry *before* it.
        marks = np.where(is_entry, np.arange(n), -1)
        before = np.r_[-1, np.maximum.accumulate(marks)[:-1]]
        own = before >= first[group]
        idx = np.where(own, before, 0)
        med = np.where(own[:, None], snap_med[idx], start_med[group])
        scale = np.where(own[:, None], snap_scale[idx], start_scale[group])
        return med, scale

    def _add(self, slots: np.ndarray, x: np.ndarray) -> None:
        """One entry into each of these (distinct) patients' rings; refresh where it is due."""
        cap = self.capacity
        self.values[slots, self.head[slots]] = x
        self.head[slots] = (self.head[slots] + 1) % cap
        self.size[slots] = np.minimum(self.size[slots] + 1, cap)
        self.added[slots] += 1
        size = self.size[slots]
        due = (size == self.warmup) | ((size > self.warmup) & (self.added[slots] >= self.refresh_every))
        if due.any():
            self._refresh(slots[due])

    def _refresh(self, slots: np.ndarray) -> None:
        # The ring's filled entries are its first ``size`` (all of them once full); the rest become NaN,
        # which the NaN-aware median skips like the gaps of an unmeasured vital.
        size = self.size[slots]
        window = self.values[slots, : int(size.max())]
        filled = np.arange(window.shape[1])[None, :] < size[:, None]
        window = np.where(filled[:, :, None], window, np.nan)
        med = _nanmedian(window)
        mad = _nanmedian(np.abs(window - med[:, None, :]))
        with np.errstate(invalid="ignore"):
            scale = np.maximum(mad * MAD_TO_SIGMA, _FLOOR)
        # A vital never measured in the window keeps the population reference.
        missing = ~np.isfinite(med)
        self.median[slots] = np.where(missing, POPULATION_MEDIAN, med)
        self.scale[slots] = np.where(missing | ~np.isfinite(scale), POPULATION_SCALE, scale)
        self.added[slots] = 0

    def idle(self, *, before: float) -> pa.Array:
        """The patients whose newest reading is older than ``before`` (epoch seconds)."""
        n = self.patients
        return self.index.ids.filter(pa.array(self.last_ts[:n] < before))

    def forget(self, patient_ids: pa.Array) -> int:
        """Drop these patients' rings and statistics; one seen again starts afresh. Returns how many
        were dropped. Copies every kept ring: for a few patients at a time, not every batch."""
        return self.index.forget(patient_ids, self, _PER_PATIENT)

    def _slots(self, patient_ids: pa.ChunkedArray) -> np.ndarray:
        """Each row's patient row in the state (new patients get one)."""
        slots, new = self.index.slots(patient_ids)
        if new:
            self._grow(self.patients)
        return slots

    def _grow(self, rows: int) -> None:
        have = len(self.size)
        if rows <= have:
            return
        more = max(rows, have + have // 4 + 8) - have
        # Uninitialised, and only the rows in use copied: the spare rows' pages stay untouched (not
        # resident) until a patient takes one; a ring is read only up to its size.
        values = np.empty((have + more, self.capacity, _N))
        values[:have] = self.values
        self.values = values
        self.size, self.head, self.added = (
            np.r_[a, np.zeros(more, np.int64)] for a in (self.size, self.head, self.added)
        )
        self.last_ts = np.r_[self.last_ts, np.full(more, -np.inf)]
        self.last_add_ts = np.r_[self.last_add_ts, np.full(more, -np.inf)]
        self.median = np.concatenate([self.median, np.tile(POPULATION_MEDIAN, (more, 1))])
        self.scale = np.concatenate([self.scale, np.tile(POPULATION_SCALE, (more, 1))])


_PER_PATIENT: Final = ("values", "size", "head", "added", "last_ts", "last_add_ts", "median", "scale")


class _EntryFinder:
    """Each patient's first row at or after a position whose time is at least ``spacing`` after a
    given time, for many patients at once: one binary search over the rows keyed by (patient, time)."""

    def __init__(self, us: np.ndarray, group: np.ndarray, groups: int) -> None:
        self.lo = int(us.min())
        self.span = int(us.max()) - self.lo + 2  # offsets 0 .. span - 1 within a patient
        if groups * self.span >= 2**62:
            raise ValueError("a batch spans too long a time for its patients: split it")
        self.keys = group.astype(np.int64) * self.span + (us - self.lo)

    def next_at(
        self, groups: np.ndarray, pos: np.ndarray, after_s: np.ndarray, spacing_s: float
    ) -> np.ndarray:
        # One microsecond of slack below the target: the caller's float test has the last word.
        with np.errstate(invalid="ignore"):
            target = np.where(
                np.isfinite(after_s),
                np.round(after_s * _US_PER_S) + round(spacing_s * _US_PER_S) - 2,
                self.lo,
            )
        offset = np.clip(target - self.lo, 0, self.span - 1).astype(np.int64)
        j = np.searchsorted(self.keys, groups.astype(np.int64) * self.span + offset, side="left")
        return np.maximum(j, pos)


def _nanmedian(window: np.ndarray) -> np.ndarray:
    """Median along axis 1 of a (patients x entries x vitals) array, NaN skipped (NaN where there is
    none): the middle of the sorted values, or the mean of the middle two as ``np.median`` takes it."""
    ordered = np.sort(window, axis=1)  # NaN sorts last
    count = np.sum(~np.isnan(window), axis=1)  # patients x vitals
    half = count // 2
    lo = np.take_along_axis(ordered, np.maximum(np.where(count % 2 == 1, half, half - 1), 0)[:, None, :], 1)
    hi = np.take_along_axis(ordered, half[:, None, :], 1) if ordered.shape[1] else lo
    with np.errstate(invalid="ignore"):
        median = ((lo + hi) / 2)[:, 0, :]
    return np.where(count > 0, median, np.nan)


def _micros(table: pa.Table) -> np.ndarray:
    us = pc.cast(pc.cast(table[c.TIMESTAMP], pa.timestamp("us", tz="UTC")), pa.int64())
    return np.asarray(us.to_numpy(zero_copy_only=False), dtype=np.int64)


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
    return _micros(table) / 1e6


def _news2(table: pa.Table) -> pa.Array:
    if c.NEWS2_SCORE not in table.column_names:
        return pa.nulls(table.num_rows, pa.float64())
    return pa.array(float_column(table, c.NEWS2_SCORE), pa.float64(), from_pandas=True)


def _max_subscore(table: pa.Table) -> pa.Array:
    cols = [c.news2_subscore_column(p) for p in c.NEWS2_PARAMETERS]
    present = [col for col in cols if col in table.column_names]
    if not present:
        return pa.nulls(table.num_rows, pa.float64())
    # One kernel over the int8 columns (null where every sub-score is): 7 ms on 705,443 rows, where a
    # NaN-aware max over them as a float matrix took 55.
    worst = pc.max_element_wise(*[table[col] for col in present], skip_nulls=True).cast(pa.float64())
    return worst.combine_chunks() if isinstance(worst, pa.ChunkedArray) else worst
