"""Clinical episodes with ground-truth labels, for training and scoring anomaly detection.

An episode shifts some vitals of one patient away from baseline along a trapezoid: it rises over
the first part of its window, holds, and falls back over the last part. Sepsis-like drift only rises.
Shifts are drawn so the result stays inside the contract's ``possible`` ranges (the signal model
clips as a last resort): episodes are real, extreme readings, never contract violations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import numpy as np

from simulator.cohort import Patient
from simulator.signals import COL, N_VITALS, Baselines
from vitals_lake.contract import (
    DIASTOLIC,
    HEART_RATE,
    RESPIRATION_RATE,
    SPO2,
    SYSTOLIC,
    TEMPERATURE,
)
from vitals_lake.labels import Episode, EpisodeType

DeltaFn = Callable[[Baselines, np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class _Spec:
    weight: float
    minutes: tuple[float, float]  # typical length; artifacts are sized in intervals instead
    rise: float  # share of the window spent reaching full severity
    fall: float  # share spent recovering (0: still at its worst when the label ends)
    delta: DeltaFn


def _shift(rows: int, **columns: np.ndarray) -> np.ndarray:
    out = np.zeros((rows, N_VITALS))
    for name, values in columns.items():
        out[:, COL[name]] = values
    return out


def _tachycardia(b: Baselines, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = len(idx)
    hr = np.maximum(rng.uniform(35, 60, m), 120 - b.column(HEART_RATE)[idx])
    return _shift(m, heart_rate=hr, respiration_rate=rng.uniform(0, 3, m))


def _bradycardia(b: Baselines, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = len(idx)
    return _shift(m, heart_rate=rng.uniform(36, 46, m) - b.column(HEART_RATE)[idx])


def _desaturation(b: Baselines, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = len(idx)
    # Scale-2 patients start lower, so they fall to lower absolute values.
    target = np.where(b.hypercapnic[idx], rng.uniform(78, 84, m), rng.uniform(83, 89, m))
    return _shift(
        m,
        spo2=target - b.column(SPO2)[idx],
        heart_rate=rng.uniform(6, 14, m),
        respiration_rate=rng.uniform(4, 8, m),
    )


def _fever(b: Baselines, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = len(idx)
    return _shift(
        m,
        temperature=rng.uniform(1.6, 2.4, m),
        heart_rate=rng.uniform(8, 20, m),
        respiration_rate=rng.uniform(1, 4, m),
    )


def _hypotension(b: Baselines, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = len(idx)
    sys_drop = rng.uniform(72, 86, m) - b.column(SYSTOLIC)[idx]
    return _shift(m, systolic=sys_drop, diastolic=0.6 * sys_drop, heart_rate=rng.uniform(10, 20, m))


def _sepsis(b: Baselines, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = len(idx)
    return _shift(
        m,
        heart_rate=rng.uniform(30, 45, m),
        temperature=rng.uniform(1.4, 2.2, m),
        systolic=-rng.uniform(28, 40, m),
        diastolic=-rng.uniform(14, 22, m),
        respiration_rate=rng.uniform(8, 12, m),
        spo2=-rng.uniform(3, 6, m),
    )


def _artifact(b: Baselines, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # A motion artefact: a heart-rate spike or an SpO2 plunge for a few seconds, alarming but possible.
    m = len(idx)
    hr_spike = rng.random(m) < 0.7
    hr = np.where(hr_spike, rng.uniform(190, 240, m) - b.column(HEART_RATE)[idx], 0.0)
    spo2 = np.where(hr_spike, 0.0, rng.uniform(56, 68, m) - b.column(SPO2)[idx])
    return _shift(m, heart_rate=hr, spo2=spo2)


SPECS: Final[dict[EpisodeType, _Spec]] = {
    EpisodeType.TACHYCARDIA: _Spec(2.0, (5, 20), 0.1, 0.15, _tachycardia),
    EpisodeType.BRADYCARDIA: _Spec(1.0, (5, 20), 0.1, 0.15, _bradycardia),
    EpisodeType.DESATURATION: _Spec(2.0, (3, 15), 0.2, 0.2, _desaturation),
    EpisodeType.FEVER: _Spec(2.0, (30, 120), 0.3, 0.3, _fever),
    EpisodeType.HYPOTENSION: _Spec(1.5, (10, 40), 0.2, 0.2, _hypotension),
    EpisodeType.SEPSIS: _Spec(1.5, (40, 120), 0.75, 0.0, _sepsis),
    EpisodeType.SENSOR_ARTIFACT: _Spec(2.0, (0, 0), 0.0, 0.0, _artifact),
}
_TYPES: Final = tuple(SPECS)
# The vitals each type visibly moves (for evaluation: which signal should have caught it).
PRIMARY_VITALS: Final[dict[EpisodeType, tuple[str, ...]]] = {
    EpisodeType.TACHYCARDIA: (HEART_RATE,),
    EpisodeType.BRADYCARDIA: (HEART_RATE,),
    EpisodeType.DESATURATION: (SPO2,),
    EpisodeType.FEVER: (TEMPERATURE,),
    EpisodeType.HYPOTENSION: (SYSTOLIC, DIASTOLIC),
    EpisodeType.SEPSIS: (HEART_RATE, TEMPERATURE, SYSTOLIC, RESPIRATION_RATE),
    EpisodeType.SENSOR_ARTIFACT: (HEART_RATE, SPO2),
}


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True)
class EpisodePlan:
    """Every episode of a run, also held column-wise so a tick's shifts are one vectorised pass."""

    episodes: tuple[Episode, ...]
    patient_idx: np.ndarray
    start_ms: np.ndarray  # true time (the simulator's clock)
    end_ms: np.ndarray
    rise_ms: np.ndarray
    fall_ms: np.ndarray
    deltas: np.ndarray  # episodes x vitals, the shift at full severity

    def delta_at(self, t_ms: np.ndarray) -> np.ndarray:
        """Shift per patient and vital (n x vitals) at each patient's true reading time ``t_ms``."""
        out = np.zeros((len(t_ms), N_VITALS))
        if not self.episodes:
            return out
        t = t_ms[self.patient_idx]
        active = (t >= self.start_ms) & (t < self.end_ms)
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where(self.rise_ms > 0, (t - self.start_ms) / self.rise_ms, np.inf)
            down = np.where(self.fall_ms > 0, (self.end_ms - t) / self.fall_ms, np.inf)
        severity = np.where(active, np.clip(np.minimum(up, down), 0.0, 1.0), 0.0)
        np.add.at(out, self.patient_idx, severity[:, None] * self.deltas)
        return out


def plan_episodes(
    cohort: Sequence[Patient],
    baselines: Baselines,
    *,
    rng: np.random.Generator,
    rate: float,
    start_ms: int,
    end_ms: int,
    interval_ms: int,
    clock_skew_ms: np.ndarray,
) -> EpisodePlan:
    """One episode for ``round(rate * n)`` patients, placed inside [start, end).

    Lengths are clipped to 60 % of the run so short demo runs still show whole episodes; an artefact
    lasts one to three reporting intervals, so it always covers at least one reading.
    """
    n = len(cohort)
    m = round(min(max(rate, 0.0), 1.0) * n)
    idx = np.sort(rng.choice(n, size=m, replace=False)) if m else np.zeros(0, dtype=np.int64)
    weights = np.array([SPECS[t].weight for t in _TYPES])
    kinds = rng.choice(len(_TYPES), size=m, p=weights / weights.sum())

    run_ms = end_ms - start_ms
    lo_ms = np.array([SPECS[_TYPES[k]].minutes[0] * 60_000 for k in kinds], dtype=float)
    hi_ms = np.array([SPECS[_TYPES[k]].minutes[1] * 60_000 for k in kinds], dtype=float)
    is_artifact = np.array([_TYPES[k] is EpisodeType.SENSOR_ARTIFACT for k in kinds], dtype=bool)
    length = rng.uniform(lo_ms, hi_ms)
    length = np.clip(length, 3 * interval_ms, max(3 * interval_ms, 0.6 * run_ms))
    length = np.where(is_artifact, rng.uniform(1.0, 3.0, m) * interval_ms, length)
    length = np.minimum(length, run_ms).astype(np.int64)
    starts = start_ms + (rng.random(m) * (run_ms - length)).astype(np.int64)
    ends = starts + length

    deltas = np.zeros((m, N_VITALS))
    for k, episode_type in enumerate(_TYPES):
        sel = kinds == k
        if sel.any():
            deltas[sel] = SPECS[episode_type].delta(baselines, idx[sel], rng)
    rise = np.array([SPECS[_TYPES[k]].rise for k in kinds]) * length
    fall = np.array([SPECS[_TYPES[k]].fall for k in kinds]) * length

    episodes = tuple(
        Episode(
            patient_id=cohort[int(p)].patient_id,
            type=_TYPES[int(k)],
            start=_from_ms(int(s + clock_skew_ms[p])),
            end=_from_ms(int(e + clock_skew_ms[p])),
        )
        for p, k, s, e in zip(idx, kinds, starts, ends, strict=True)
    )
    return EpisodePlan(
        episodes=episodes,
        patient_idx=idx.astype(np.int64),
        start_ms=starts,
        end_ms=ends,
        rise_ms=rise,
        fall_ms=fall,
        deltas=deltas,
    )
