"""Vital-sign signals: per-patient baselines, circadian rhythm, slow drift, sensor noise, dropouts.

Every array has one row per patient and one column per vital in ``contract.VITAL_NAMES`` order, so a
whole tick is a handful of NumPy operations whatever the cohort size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from simulator.cohort import Patient
from vitals_lake.contract import (
    DIASTOLIC,
    HEART_RATE,
    RESPIRATION_RATE,
    SPO2,
    SYSTOLIC,
    TEMPERATURE,
    VITAL_NAMES,
    VITALS_BY_NAME,
)

COL: Final = {name: i for i, name in enumerate(VITAL_NAMES)}
N_VITALS: Final = len(VITAL_NAMES)

POSSIBLE_LO: Final = np.array([VITALS_BY_NAME[v].possible[0] for v in VITAL_NAMES], dtype=float)
POSSIBLE_HI: Final = np.array([VITALS_BY_NAME[v].possible[1] for v in VITAL_NAMES], dtype=float)


def _per_vital(**values: float) -> np.ndarray:
    return np.array([values[name] for name in VITAL_NAMES], dtype=float)


# Circadian amplitude and the hour (UTC, the hospital's clock) of the daily peak: heart rate,
# temperature and blood pressure are lowest in the early morning.
_CIRCADIAN_AMP: Final = _per_vital(
    heart_rate=5.0, temperature=0.3, spo2=0.3, respiration_rate=1.0, systolic=6.0, diastolic=4.0
)
_CIRCADIAN_PEAK_H: Final = _per_vital(
    heart_rate=16.0, temperature=17.0, spo2=14.0, respiration_rate=15.0, systolic=15.0, diastolic=15.0
)
# Beat-to-beat measurement noise (white) and slow physiological wander (AR(1), ~10 min memory).
_NOISE_SD: Final = _per_vital(
    heart_rate=2.0, temperature=0.05, spo2=0.5, respiration_rate=1.0, systolic=4.0, diastolic=3.0
)
_DRIFT_SD: Final = _per_vital(
    heart_rate=3.0, temperature=0.1, spo2=0.6, respiration_rate=1.0, systolic=4.0, diastolic=2.5
)
_DRIFT_TAU_S: Final = 600.0
_DIASTOLIC_GAP: Final = 10  # a real pulse pressure: diastolic stays this far below systolic


@dataclass(frozen=True)
class Baselines:
    """Each patient's resting values (n x vitals) and their scale-2 flag."""

    values: np.ndarray
    hypercapnic: np.ndarray

    def column(self, vital: str) -> np.ndarray:
        return self.values[:, COL[vital]]


def make_baselines(cohort: Sequence[Patient], *, rng: np.random.Generator) -> Baselines:
    """Resting vitals per patient, shaped by age, diagnosis and the hypercapnic flag."""
    n = len(cohort)
    age = np.array([p.age for p in cohort], dtype=float)
    hyper = np.array([p.hypercapnic for p in cohort], dtype=bool)
    dx = np.array([p.diagnosis_code for p in cohort])
    icu = np.array([p.ward == "ICU" for p in cohort], dtype=bool)
    infected = np.isin(dx, ["A41.9", "J18.9", "U07.1", "N39.0", "J44.0"])
    copd = np.isin(dx, ["J44.1", "J44.0", "J96.02"])
    heart_failure = np.isin(dx, ["I50.9", "I48.91"])

    hr = rng.normal(76.0, 9.0, n) + 6.0 * infected + 4.0 * icu + 6.0 * heart_failure
    temp = rng.normal(36.75, 0.2, n) + 0.35 * infected
    # Scale-2 patients live at 88-92 %: their monitors must not look like constant desaturation.
    spo2 = np.where(hyper, rng.normal(90.0, 1.2, n), rng.normal(97.0, 1.0, n) - 1.0 * copd)
    rr = rng.normal(15.5, 1.8, n) + 3.0 * copd + 1.5 * heart_failure
    sbp = rng.normal(122.0, 12.0, n) + 0.35 * (age - 55.0)
    dbp = 0.55 * sbp + rng.normal(10.0, 5.0, n)

    values = np.empty((n, N_VITALS))
    values[:, COL[HEART_RATE]] = np.clip(hr, 55, 110)
    values[:, COL[TEMPERATURE]] = np.clip(temp, 36.1, 37.6)
    values[:, COL[SPO2]] = np.where(hyper, np.clip(spo2, 87.5, 92.5), np.clip(spo2, 93.5, 99.0))
    values[:, COL[RESPIRATION_RATE]] = np.clip(rr, 11, 24)
    values[:, COL[SYSTOLIC]] = np.clip(sbp, 98, 175)
    values[:, COL[DIASTOLIC]] = np.clip(dbp, 55, 100)
    return Baselines(values=values, hypercapnic=hyper)


class SignalModel:
    """Produces one tick of vitals for every patient: baseline + circadian + drift + noise + episodes."""

    def __init__(self, baselines: Baselines, *, rng: np.random.Generator, interval_s: float) -> None:
        self._baselines = baselines
        self._rng = rng
        self._phi = float(np.exp(-interval_s / _DRIFT_TAU_S))
        n = baselines.values.shape[0]
        self._drift = rng.normal(0.0, 1.0, (n, N_VITALS)) * _DRIFT_SD  # stationary start

    def sample(self, t_ms: np.ndarray, episode_delta: np.ndarray) -> np.ndarray:
        """Vitals (n x vitals, float, unrounded) at each patient's reading time ``t_ms`` (epoch ms)."""
        n = len(t_ms)
        self._drift = self._phi * self._drift + np.sqrt(1.0 - self._phi**2) * _DRIFT_SD * self._rng.normal(
            0.0, 1.0, (n, N_VITALS)
        )
        hour = (t_ms / 3_600_000.0) % 24.0
        circadian = _CIRCADIAN_AMP * np.cos(2 * np.pi * (hour[:, None] - _CIRCADIAN_PEAK_H) / 24.0)
        noise = self._rng.normal(0.0, 1.0, (n, N_VITALS)) * _NOISE_SD
        return self._baselines.values + circadian + self._drift + noise + episode_delta


def round_like_devices(values: np.ndarray, spo2_decimals: np.ndarray) -> np.ndarray:
    """Clip into the contract's ``possible`` ranges and round as monitors display.

    HR, RR and blood pressure are integers, temperature has one decimal, SpO2 has 0 or 1 decimal
    per device. Diastolic is kept a real pulse pressure below systolic, so every valid reading
    satisfies systolic > diastolic.
    """
    v = np.clip(values, POSSIBLE_LO, POSSIBLE_HI)
    out = np.rint(v)
    out[:, COL[TEMPERATURE]] = np.round(v[:, COL[TEMPERATURE]], 1)
    spo2 = v[:, COL[SPO2]]
    out[:, COL[SPO2]] = np.where(spo2_decimals > 0, np.round(spo2, 1), np.rint(spo2))
    sys_col, dia_col = COL[SYSTOLIC], COL[DIASTOLIC]
    out[:, dia_col] = np.clip(
        np.minimum(out[:, dia_col], out[:, sys_col] - _DIASTOLIC_GAP),
        POSSIBLE_LO[dia_col],
        POSSIBLE_HI[dia_col],
    )
    out[:, sys_col] = np.maximum(out[:, sys_col], out[:, dia_col] + _DIASTOLIC_GAP)
    return out


class Dropouts:
    """Device dropouts: a device that drops out sends nothing for a while (battery, out of range)."""

    def __init__(
        self, n: int, *, rng: np.random.Generator, rate: float, seconds: tuple[float, float]
    ) -> None:
        self._rng = rng
        self._rate = rate
        self._seconds = seconds
        self._until_ms = np.zeros(n, dtype=np.int64)

    def present(self, t_ms: np.ndarray) -> np.ndarray:
        """Which devices report at ``t_ms``; ``rate`` is the chance per device and tick of a new gap."""
        n = len(t_ms)
        starts = (self._rng.random(n) < self._rate) & (t_ms >= self._until_ms)
        lengths = (self._rng.uniform(*self._seconds, n) * 1000).astype(np.int64)
        self._until_ms = np.where(starts, t_ms + lengths, self._until_ms)
        return t_ms >= self._until_ms
