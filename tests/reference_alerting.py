"""The alert rule's state machine as it ran before the hot path was vectorised: a Python loop over
every patient of a batch and a step per reading for those with the condition. Kept, unchanged, as the
reference :class:`vitals_lake.alerting.AlertTracker` must match row for row."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from vitals_lake.alerting import ESCALATED, NO_CHANGE, OPENED, RESOLVED, AlertDecisions, AlertRule


@dataclass
class _PatientAlert:
    last_ts: float = -np.inf  # newest reading applied
    run_start: float | None = None  # when the current unbroken run of the condition began
    is_open: bool = False
    absent_since: float | None = None  # while open: when the condition was last lost
    closed_at: float = -np.inf
    opened_at: float = np.nan  # the open alert's (or the last closed one's) opening time
    severity: int = -1  # the open alert's severity rank (highest seen while open)


@dataclass
class PerPatientAlertTracker:
    """Per-patient alert state; :meth:`update` applies a batch of rows and advances it."""

    rule: AlertRule = field(default_factory=AlertRule)
    patients: dict[str, _PatientAlert] = field(default_factory=dict)

    def open_for(self, patient_ids: pa.Array) -> np.ndarray:
        return np.array(
            [p in self.patients and self.patients[p].is_open for p in patient_ids.to_pylist()], bool
        )

    def forget(self, patient_ids: pa.Array) -> int:
        return len([p for p in patient_ids.to_pylist() if self.patients.pop(p, None) is not None])

    def update(
        self,
        *,
        patient_ids: np.ndarray,
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
        if len(cond) == 0:
            return out
        sev = np.zeros(len(cond), np.int8) if severity is None else np.asarray(severity, np.int8)
        pid = np.asarray(patient_ids, dtype=object)
        ts = np.asarray(seconds, dtype=np.float64)
        _, codes = np.unique(pid, return_inverse=True)
        order = np.lexsort((ts, codes))
        for rows in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1):
            state = self.patients.setdefault(str(pid[rows[0]]), _PatientAlert())
            if not state.is_open and not cond[rows].any():
                # The common case, kept cheap: nothing present, nothing open.
                newest = float(ts[rows[-1]])
                if newest >= state.last_ts:
                    state.run_start = None
                    state.last_ts = newest
                continue
            for i in rows:
                self._step(state, float(ts[i]), bool(cond[i]), int(sev[i]), out=out, i=i)
        return out

    def _step(
        self, s: _PatientAlert, t: float, present: bool, severity: int, *, out: AlertDecisions, i: int
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
