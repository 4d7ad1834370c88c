"""Per-device traits, held column-wise (one array entry per patient) so a tick is vectorised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

# Offsets some devices are configured with (minutes east of UTC); they report the same instant.
LOCAL_OFFSETS_MIN: Final = (60, 120, -300, 330, 60, 60)


@dataclass(frozen=True)
class DeviceFleet:
    """Traits of every patient's monitor; index i is patient i of the cohort."""

    bp_as_string: np.ndarray  # bool: "120/80" in blood_pressure, else systolic/diastolic fields
    spo2_decimals: np.ndarray  # int 0 or 1: how finely the oximeter reports
    utc_offset_min: np.ndarray  # int: the offset the device writes its timestamps in
    clock_skew_ms: np.ndarray  # int: how far the device clock is off (0 for most)
    phase_ms: np.ndarray  # int in [0, interval): when within each interval the device reports

    @property
    def size(self) -> int:
        return len(self.phase_ms)


def make_fleet(
    n: int,
    *,
    rng: np.random.Generator,
    interval_ms: int,
    local_offset_rate: float,
    skewed_device_rate: float,
    skew_seconds: tuple[float, float],
) -> DeviceFleet:
    """Draw device traits. Both blood-pressure forms are guaranteed once the cohort has two devices."""
    bp_as_string = rng.random(n) < 0.5
    if n >= 2 and (bp_as_string.all() or not bp_as_string.any()):
        bp_as_string[0] = not bp_as_string[1]
    local = rng.random(n) < local_offset_rate
    offsets = np.asarray(LOCAL_OFFSETS_MIN)[rng.integers(0, len(LOCAL_OFFSETS_MIN), n)]
    skewed = rng.random(n) < skewed_device_rate
    lo, hi = skew_seconds
    skew_ms = (rng.uniform(lo, hi, n) * 1000).astype(np.int64) * rng.choice([-1, 1], n)
    return DeviceFleet(
        bp_as_string=bp_as_string,
        spo2_decimals=(rng.random(n) < 0.3).astype(np.int64),
        utc_offset_min=np.where(local, offsets, 0).astype(np.int64),
        clock_skew_ms=np.where(skewed, skew_ms, 0).astype(np.int64),
        phase_ms=rng.integers(0, interval_ms, n, dtype=np.int64),
    )
