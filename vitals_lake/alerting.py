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
    the condition only moves their clock. The rows of patients with the condition present or an alert
    open (``episode_rows`` counts them) are decided by :meth:`_episodes`, also with array operations.
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
    episode_rows: int = 0  # rows of patients with the condition present or an alert open

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
        busy = ~quiet
        if busy.any():
            ends = np.r_[first[1:], n]
            sizes = (ends - first)[busy]
            rows = order[np.repeat(busy, ends - first)]  # the busy patients' rows, still in order
            head = np.r_[0, np.cumsum(sizes)[:-1]]
            self._episodes(rows, head, g_slot[busy], ts=ts, cond=cond, sev=sev, out=out)
        return out

    def _episodes(
        self,
        rows: np.ndarray,
        head: np.ndarray,
        gs: np.ndarray,
        *,
        ts: np.ndarray,
        cond: np.ndarray,
        sev: np.ndarray,
        out: AlertDecisions,
    ) -> None:
        """Decide ``rows`` (indices into the batch, sorted by patient then time; ``head``: where each
        patient's rows begin; ``gs``: the patients' state rows) and advance those patients' state.

        Exactly what stepping each reading through the rule in turn does (the rule in the module's
        doc), for every patient at once. When the condition's runs and gaps began depends on the rows
        alone, not on the alert; the alert depends on them only at its events (opening, resolving).
        So the runs are found first, then the events, one round per event for every patient at once (a
        patient has a few a batch: the cooldown spaces them), then each row's state between its
        patient's events.
        """
        rule = self.rule
        m = len(rows)
        self.episode_rows += m
        t, present, severity = ts[rows], cond[rows], sev[rows].astype(np.int16)
        idx = np.arange(m)
        last = np.r_[head[1:], m] - 1
        group = np.repeat(np.arange(len(gs)), last - head + 1)
        is_head = np.zeros(m, bool)
        is_head[head] = True
        last0, run0, open0 = self.last_ts[gs], self.run_start[gs], self.is_open[gs]
        absent0, closed0, opened0 = self.absent_since[gs], self.closed_at[gs], self.opened_at[gs]
        sev0 = self.severity[gs].astype(np.int16)
        # A reading older than the patient's newest changes nothing; the rest are in time order.
        active = t >= last0[group]
        on, off = active & present, active & ~present
        first_active = active & (is_head | ~np.r_[False, active[:-1]])
        # When each row's unbroken run of the condition (or of its absence) began.
        run_start = _run_starts(on, t, is_head, carried=np.where(first_active, run0[group], np.nan))
        gap_start = _run_starts(
            off, t, is_head, carried=np.where(first_active & open0[group], absent0[group], np.nan)
        )
        can_open = on & (t - run_start >= rule.persistence_seconds)
        can_close = off & (t - gap_start >= rule.clear_seconds)
        # The events: each round finds every waiting patient's next one among their rows still ahead.
        is_open, closed_at = open0.copy(), closed0.copy()
        opens: list[np.ndarray] = []
        closes: list[np.ndarray] = []
        ahead = idx
        while ahead.size:
            owner = group[ahead]
            due = np.where(
                is_open[owner],
                can_close[ahead],
                can_open[ahead] & (t[ahead] - closed_at[owner] >= rule.cooldown_seconds),
            )
            firsts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
            nxt = np.minimum.reduceat(np.where(due, ahead, m), firsts)
            found = nxt < m
            g, j = owner[firsts][found], nxt[found]
            opening = ~is_open[g]
            opens.append(j[opening])
            closes.append(j[~opening])
            closed_at[g[~opening]] = t[j[~opening]]
            is_open[g] = opening
            after = np.full(len(gs), m)  # a patient with no further event has nothing ahead
            after[g] = j
            ahead = ahead[ahead > after[owner]]
        opened_rows = np.concatenate([np.zeros(0, np.int64), *opens])
        closed_rows = np.concatenate([np.zeros(0, np.int64), *closes])
        opening_row = np.zeros(m, bool)
        opening_row[opened_rows] = True
        # Each row's state after it.
        step = np.zeros(m, np.int64)
        step[head] += open0.astype(np.int64)
        step[opened_rows] += 1
        step[closed_rows] -= 1
        total = np.cumsum(step)
        open_after = (total - (total[head] - step[head])[group]).astype(bool)
        open_before = np.r_[False, open_after[:-1]]
        open_before[head] = open0
        transition = np.zeros(m, np.int8)
        transition[opened_rows] = OPENED
        transition[closed_rows] = RESOLVED
        # Severity: set at an opening, raised by a worse reading while open. A running maximum per
        # stretch that starts at a patient's first row or an opening.
        eligible = on & open_before
        contribution = np.where(eligible, severity, _NONE)
        contribution[head] = np.maximum(sev0, contribution[head])
        contribution[opened_rows] = severity[opened_rows]
        starts = is_head | opening_row
        stretch = np.cumsum(starts, dtype=np.int64) - 1
        # One running maximum over all stretches: each stretch's values are lifted above the last's.
        lifted = stretch * _STRETCH + (contribution - _NONE)
        running = np.maximum.accumulate(lifted) - stretch * _STRETCH + _NONE
        before = np.where(is_head, sev0[group], np.r_[_NONE, running[:-1]])
        raised = eligible & ~opening_row & (severity > before)
        transition[raised] = ESCALATED
        opened_at = np.where(opening_row, t, opened0[group])[np.maximum.accumulate(np.where(starts, idx, 0))]
        shown = open_after | (transition == RESOLVED)
        out.transition[rows] = transition
        out.open[rows] = open_after
        out.severity[rows] = np.where(shown, running, -1)
        out.opened_at[rows] = np.where(shown, opened_at, np.nan)
        out.run_start[rows[opened_rows]] = run_start[opened_rows]
        # The state after each patient's last row (the active rows are each patient's last ones).
        moved = active[last]
        self.last_ts[gs] = np.where(moved, t[last], last0)
        self.run_start[gs] = np.where(moved, run_start[last], run0)  # NaN after a gap
        self.is_open[gs] = open_after[last]
        # The gap's start is set by a gap while open, cleared by the condition or a resolution.
        resolving = transition == RESOLVED
        touches_gap = on | (off & open_before)
        gap_value = np.where(off & open_before & ~resolving, gap_start, np.nan)
        setter = np.maximum.reduceat(np.where(touches_gap, idx, -1), head)
        self.absent_since[gs] = np.where(setter >= 0, gap_value[np.maximum(setter, 0)], absent0)
        self.closed_at[gs] = closed_at
        self.opened_at[gs] = opened_at[last]
        self.severity[gs] = running[last].astype(np.int8)

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

    def open_for(self, patient_ids: pa.Array) -> np.ndarray:
        """For each of ``patient_ids``: whether they have an alert open."""
        slots = self.index.find(patient_ids)
        known = slots >= 0
        out = np.zeros(len(slots), bool)
        out[known] = self.is_open[slots[known]]
        return out

    def forget(self, patient_ids: pa.Array) -> int:
        """Drop these patients' alert state (one seen again starts afresh). Returns how many."""
        return self.index.forget(patient_ids, self, _STATE)

    def _grow(self, rows: int) -> None:
        more = rows - len(self.last_ts)
        fresh = PatientAlert()
        for name in _STATE:
            default = getattr(fresh, name)
            array = getattr(self, name)
            fill = np.nan if default is None else default
            setattr(self, name, np.r_[array, np.full(more, fill, array.dtype)])


_NONE: Final = -128  # below every severity rank: "this row does not set the severity"
_STRETCH: Final = 1024  # above the span of (severity - _NONE): lifts each stretch above the last


def _run_starts(member: np.ndarray, t: np.ndarray, is_head: np.ndarray, *, carried: np.ndarray) -> np.ndarray:
    """For each row of a run of ``member`` rows (consecutive within a patient), when the run began:
    its first row's time, or ``carried`` there where that is set (a run going on from the last
    batch). NaN outside the runs."""
    begins = member & (is_head | ~np.r_[False, member[:-1]])
    began = np.where(np.isnan(carried), t, carried)
    at = np.maximum.accumulate(np.where(begins, np.arange(len(t)), 0))
    return np.where(member, began[at], np.nan)


def _bools(values: np.ndarray) -> np.ndarray:
    a = np.asarray(values)
    if a.dtype == object:  # Arrow bools with nulls arrive as objects
        return np.array([bool(v) for v in a], dtype=bool)
    return np.nan_to_num(a.astype(np.float64), nan=0.0) > 0


def _floats(values: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
