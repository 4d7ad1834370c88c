"""Ground-truth labels of clinical episodes (JSONL): the format the simulator writes and training reads.

One label per line: ``{"patient_id", "type", "start", "end"}``, times in UTC ISO 8601 on the device's
clock (what its readings carry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Final

import orjson

from vitals_lake.contract import PATIENT_ID


class EpisodeType(StrEnum):
    TACHYCARDIA = "tachycardia"
    BRADYCARDIA = "bradycardia"
    DESATURATION = "desaturation"
    FEVER = "fever"
    HYPOTENSION = "hypotension"
    SEPSIS = "sepsis"
    SENSOR_ARTIFACT = "sensor_artifact"


# Label fields (JSONL); patient_id reuses the contract's name.
LABEL_TYPE: Final = "type"
LABEL_START: Final = "start"
LABEL_END: Final = "end"


@dataclass(frozen=True)
class Episode:
    """One ground-truth label. Times are on the device's clock (what its readings carry), in UTC."""

    patient_id: str
    type: EpisodeType
    start: datetime
    end: datetime

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                PATIENT_ID: self.patient_id,
                LABEL_TYPE: str(self.type),
                LABEL_START: _iso(self.start),
                LABEL_END: _iso(self.end),
            }
        )


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds")


def write_labels(path: Path, episodes: Sequence[Episode]) -> None:
    """JSONL, one label per line, ordered by start then patient."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(episodes, key=lambda e: (e.start, e.patient_id))
    path.write_bytes(b"".join(e.to_json() + b"\n" for e in ordered))


def read_labels(path: Path) -> list[Episode]:
    """Inverse of :func:`write_labels`."""
    out = []
    for line in path.read_bytes().splitlines():
        row = orjson.loads(line)
        out.append(
            Episode(
                patient_id=row[PATIENT_ID],
                type=EpisodeType(row[LABEL_TYPE]),
                start=datetime.fromisoformat(row[LABEL_START]),
                end=datetime.fromisoformat(row[LABEL_END]),
            )
        )
    return out
