"""Turn one tick of vitals into reading objects shaped by the contract (and each device's habits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from simulator.devices import DeviceFleet
from simulator.signals import COL
from vitals_lake.contract import (
    BLOOD_PRESSURE,
    DEVICE_ID,
    DIASTOLIC,
    EVENT_ID,
    HEART_RATE,
    PATIENT_ID,
    RESPIRATION_RATE,
    SPO2,
    SYSTOLIC,
    TEMPERATURE,
    TIMESTAMP,
)

Reading = dict[str, Any]


def offset_suffix(minutes: int) -> str:
    """``+01:00`` for 60, ``-05:00`` for -300, ``+00:00`` for 0 (never ``Z``: one form for all)."""
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    return f"{sign}{hh:02d}:{mm:02d}"


def format_timestamps(t_ms: np.ndarray, offset_min: np.ndarray) -> list[str]:
    """ISO 8601 with milliseconds, written in each device's offset; the instant is ``t_ms``."""
    local = (t_ms + offset_min * 60_000).astype("datetime64[ms]")
    text = np.datetime_as_string(local, unit="ms")
    uniques, inverse = np.unique(offset_min, return_inverse=True)
    suffixes = np.array([offset_suffix(int(o)) for o in uniques])[inverse]
    return list(np.char.add(text, suffixes).tolist())


def event_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Random (version 4) UUIDs drawn from the seeded generator, so a seed fixes every id."""
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexes = raw.tobytes().hex()
    return [
        f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        for h in (hexes[i * 32 : (i + 1) * 32] for i in range(n))
    ]


def build_readings(
    *,
    patient_ids: Sequence[str],
    device_ids: Sequence[str],
    fleet: DeviceFleet,
    idx: np.ndarray,
    device_ms: np.ndarray,
    values: np.ndarray,
    ids: Sequence[str],
) -> list[Reading]:
    """Reading objects for patients ``idx``; ``values`` are rounded vitals, ``device_ms`` the device clock."""
    stamps = format_timestamps(device_ms, fleet.utc_offset_min[idx])
    hr = values[:, COL[HEART_RATE]].astype(np.int64).tolist()
    temp = values[:, COL[TEMPERATURE]].tolist()
    spo2 = values[:, COL[SPO2]].tolist()
    rr = values[:, COL[RESPIRATION_RATE]].astype(np.int64).tolist()
    sbp = values[:, COL[SYSTOLIC]].astype(np.int64).tolist()
    dbp = values[:, COL[DIASTOLIC]].astype(np.int64).tolist()
    as_string = fleet.bp_as_string[idx].tolist()
    spo2_int = (fleet.spo2_decimals[idx] == 0).tolist()

    out: list[Reading] = []
    for j, p in enumerate(idx.tolist()):
        r: Reading = {
            EVENT_ID: ids[j],
            PATIENT_ID: patient_ids[p],
            DEVICE_ID: device_ids[p],
            TIMESTAMP: stamps[j],
            HEART_RATE: hr[j],
            TEMPERATURE: temp[j],
            SPO2: int(spo2[j]) if spo2_int[j] else spo2[j],
            RESPIRATION_RATE: rr[j],
        }
        if as_string[j]:
            r[BLOOD_PRESSURE] = f"{sbp[j]}/{dbp[j]}"
        else:
            r[SYSTOLIC] = sbp[j]
            r[DIASTOLIC] = dbp[j]
        out.append(r)
    return out


def encode(reading: Reading) -> bytes:
    """Compact JSON; never contains a raw newline byte (orjson escapes control characters)."""
    return orjson.dumps(reading)
