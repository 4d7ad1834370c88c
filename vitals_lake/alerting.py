"""The combined alert rule: the anomaly model and NEWS2 together, held for a while before it fires.

A patient's *condition* is present on a reading when the model flags it (``is_anomaly``) or NEWS2
reaches the emergency level (7), and optionally when a single NEWS2 parameter scores 3. An alert
**opens** once the condition has held for ``persistence_seconds`` (a one-reading sensor artefact never
gets there), stays open while it holds, **closes** after ``clear_seconds`` without it (one normal
reading in the middle of a deterioration does not close and re-open it), and a closed alert does not
re-open within ``cooldown_seconds``. Clinicians see one alert per deterioration, not one per reading.

:class:`AlertTracker` is a state machine per patient, carried from batch to batch in the stream and
run over whole histories in the evaluation: one implementation, so what is measured is what runs.
Why these defaults (``ml/README.md``, measured on the default cohort): the single-parameter "red"
arm fires all day for patients whose baseline sits in a red band (chronic low SpO2) and costs about
two false alarms per patient-day for no recall gained once the model is in the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa

from vitals_lake.patient_slots import PatientSlots

NEWS2_EMERGENCY: Final = 7  # aggregate NEWS2 that calls for an emergency response (RCP 2017)
NEWS2_RED_SUBSCORE: Final = 3  # a single parameter scoring 3 calls for urgent review (RCP 2017)

# Why a row's condition is present: a bit each, so a row can carry several.
REASON_MODEL: Final = 1
REASON_NEWS2: Final = 2
REASON_RED_SUBSCORE: Final = 4


@dataclass(frozen=True, kw_only=True)
class AlertRule:
    """When the combined condition becomes an alert. Validated once, here."""

    persistence_seconds: float = 60.0  # at one reading a minute: two consecutive readings
    clear_seconds: float = 120.0
    cooldown_seconds: float = 1800.0
    news2_emergency: int = NEWS2_EMERGENCY
    red_subscore: bool = False

    def __post_init__(self) -> None:
        for name in ("persistence_seconds", "clear_seconds", "cooldown_seconds"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"AlertRule.{name} must be a finite number >= 0, got {value!r}")
        if not 0 < self.news2_emergency <= 20:
            raise ValueError(f"AlertRule.news2_emergency must be within 1..20, got {self.news2_emergency}")

    def reasons(
        self,
        *,
        anomaly: np.ndarray,
        news2: np.ndarray | None = None,
        news2_max_subscore: np.ndarray | None = None,
    ) -> np.ndarray:
        """Per row, the bit set of arms whose condition is present (0 = none). Missing values count
        as absent: no evidence is not an alarm."""
        out = np.where(_bools(anomaly), REASON_MODEL, 0)
        if news2 is not None:
            out |= np.where(_floats(news2) >= self.news2_emergency, REASON_NEWS2, 0)
        if self.red_subscore and news2_max_subscore is not None:
            out |= np.where(_floats(news2_max_subscore) >= NEWS2_RED_SUBSCORE, REASON_RED_SUBSCORE, 0)
        return out.astype(np.int8)


# What a reading did to its patient's alert.
NO_CHANGE: Final = 0
OPENED: Final = 1
ESCALATED: Final = 2  # open, and the severity rose
RESOLVED: Final = 3  # the condition stayed absent for the clear time
TRANSITION_STATES: Final = {OPENED: "opened", ESCALATED: "escalated", RESOLVED: "resolved"}


@dataclass
class PatientAlert:
    last_ts: float = -np.inf  # newest reading applied
    run_start: float | None = None  # when the current unbroken run of the condition began
    is_open: bool = False
    absent_since: float | None = None  # while open: when the condition was last lost
    closed_at: float = -np.inf
    opened_at: float = np.nan  # the open alert's (or the last closed one's) opening time
    severity: int = -1  # the open alert's severity rank (highest seen while open)


@dataclass(frozen=True)
class AlertDecisions:
    """Per input row: the condition, the alert state change it caused (``transition``: NO_CHANGE,
    OPENED, ESCALATED, RESOLVED), whether an alert is open at it, the alert's severity rank after it
    (-1: none), when that alert opened, and for OPENED rows when the condition's run began."""

    condition: np.ndarray
    transition: np.ndarray
    open: np.ndarray
    severity: np.ndarray
    opened_at: np.ndarray
    run_start: np.ndarray

    @property
    def opened(self) -> np.ndarray:
        return self.transition == OPENED

    @classmethod
    def empty(cls, condition: np.ndarray) -> AlertDecisions:
        n = len(condition)
        nan = np.full(n, np.nan)
        return cls(
            condition, np.zeros(n, np.int8), np.zeros(n, bool), np.full(n, -1, np.int8), nan, nan.copy()
        )


_STATE: Final = ("last_ts", "run_start", "is_open", "absent_since", "closed_at", "opened_at", "severity")


@dataclass
class AlertTracker:
    """Per-patient alert state as arrays (one row per patient); :meth:`update` applies a batch of rows
    and advances it.

    The common case is decided for whole batches at once: a patient with no alert open and no row with
    the condition only moves their clock. Only the rows of patients with the condition present or an
    alert open are stepped one by one (``stepped`` counts them): the rule's timing is a sequence.
    """

    rule: AlertRule = field(default_factory=AlertRule)
    index: PatientSlots = field(default_factory=PatientSlots)
    last_ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    run_start: np.ndarray = field(default_factory=lambda: np.zeros(0))  # NaN: no run
    is_open: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    absent_since: np.ndarray = field(default_factory=lambda: np.zeros(0))  # NaN: not lost
    closed_at: np.ndarray = field(default_factory=lambda: np.zeros(0))
    opened_at: np.ndarray = field(default_factory=lambda: np.zeros(0))
    severity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    stepped: int = 0  # rows that took the one-by-one path

    def patient(self, patient_id: str) -> PatientAlert | None:
        """One patient's state (None: never seen)."""
        slot = self.index.slot(patient_id)
        return None if slot is None else self._load(slot)

    def update(
        self,
        *,
        patient_ids: np.ndarray | pa.Array | pa.ChunkedArray,
        seconds: np.ndarray,
        condition: np.ndarray,
        severity: np.ndarray | None = None,
    ) -> AlertDecisions:
        """Rows in any order (taken per patient in time order); results in the input order.

        ``severity`` ranks each row (higher = worse; used while the condition is present): an open
        alert escalates when a reading is worse than any before it. A reading older than one the
        patient already had cannot change the past: it gets the patient's current state.
        """
        cond = np.asarray(condition, dtype=bool)
        out = AlertDecisions.empty(cond)
        n = len(cond)
        if n == 0:
            return out
        sev = np.zeros(n, np.int8) if severity is None else np.asarray(severity, np.int8)
        ts = np.asarray(seconds, dtype=np.float64)
        slot, new = self.index.slots(patient_ids)
        if new:
            self._grow(len(self.index))
        order = np.lexsort((ts, slot))
        s_slot = slot[order]
        first = np.flatnonzero(np.r_[True, s_slot[1:] != s_slot[:-1]])
        g_slot = s_slot[first]
        present = np.logical_or.reduceat(cond[order], first)
        quiet = ~present & ~self.is_open[g_slot]
        # Nothing present, nothing open: the clock moves (rows in time order: the last is the newest).
        newest = ts[order][np.r_[first[1:], n] - 1]
        moved = quiet & (newest >= self.last_ts[g_slot])
        self.run_start[g_slot[moved]] = np.nan
        self.last_ts[g_slot[moved]] = newest[moved]
        busy = np.flatnonzero(~quiet)
        if busy.size:
            ends = np.r_[first[1:], n]
            s_ts = ts[order]
            # A patient without an open alert is quiet up to their first row with the condition.
            first_present = np.minimum.reduceat(np.where(cond[order], np.arange(n), n), first)
            for g in busy.tolist():
                state = self._load(int(g_slot[g]))
                lo = int(first[g])
                if not state.is_open and first_present[g] > lo:
                    lo = int(first_present[g])
                    if s_ts[lo - 1] >= state.last_ts:
                        state.run_start, state.last_ts = None, float(s_ts[lo - 1])
                rows = order[lo : ends[g]]
                for i in rows.tolist():
                    self._step(state, float(ts[i]), bool(cond[i]), int(sev[i]), out=out, i=i)
                self._store(int(g_slot[g]), state)
                self.stepped += len(rows)
        return out

    def _load(self, slot: int) -> PatientAlert:
        def opt(value: float) -> float | None:
            return None if np.isnan(value) else float(value)

        return PatientAlert(
            last_ts=float(self.last_ts[slot]),
            run_start=opt(self.run_start[slot]),
            is_open=bool(self.is_open[slot]),
            absent_since=opt(self.absent_since[slot]),
            closed_at=float(self.closed_at[slot]),
            opened_at=float(self.opened_at[slot]),
            severity=int(self.severity[slot]),
        )

    def _store(self, slot: int, s: PatientAlert) -> None:
        self.last_ts[slot] = s.last_ts
        self.run_start[slot] = np.nan if s.run_start is None else s.run_start
        self.is_open[slot] = s.is_open
        self.absent_since[slot] = np.nan if s.absent_since is None else s.absent_since
        self.closed_at[slot] = s.closed_at
        self.opened_at[slot] = s.opened_at
        self.severity[slot] = s.severity

    def _grow(self, rows: int) -> None:
        more = rows - len(self.last_ts)
        fresh = PatientAlert()
        for name in _STATE:
            default = getattr(fresh, name)
            array = getattr(self, name)
            fill = np.nan if default is None else default
            setattr(self, name, np.r_[array, np.full(more, fill, array.dtype)])

    def _step(
        self, s: PatientAlert, t: float, present: bool, severity: int, *, out: AlertDecisions, i: int
    ) -> None:
        rule = self.rule
        transition = NO_CHANGE
        if t >= s.last_ts:
            s.last_ts = t
            if not present:
                s.run_start = None
                if s.is_open:
                    s.absent_since = t if s.absent_since is None else s.absent_since
                    if t - s.absent_since >= rule.clear_seconds:
                        s.is_open, s.absent_since, s.closed_at = False, None, t
                        transition = RESOLVED
            else:
                s.absent_since = None
                if s.run_start is None:
                    s.run_start = t
                if s.is_open and severity > s.severity:
                    s.severity = severity
                    transition = ESCALATED
                elif (
                    not s.is_open
                    and t - s.run_start >= rule.persistence_seconds
                    and t - s.closed_at >= rule.cooldown_seconds
                ):
                    s.is_open, s.opened_at, s.severity = True, t, severity
                    transition = OPENED
                    out.run_start[i] = s.run_start
        out.transition[i] = transition
        out.open[i] = s.is_open
        out.severity[i] = s.severity if s.is_open or transition == RESOLVED else -1
        out.opened_at[i] = s.opened_at if s.is_open or transition == RESOLVED else np.nan


def _bools(values: np.ndarray) -> np.ndarray:
    a = np.asarray(values)
    if a.dtype == object:  # Arrow bools with nulls arrive as objects
        return np.array([bool(v) for v in a], dtype=bool)
    return np.nan_to_num(a.astype(np.float64), nan=0.0) > 0


def _floats(values: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
