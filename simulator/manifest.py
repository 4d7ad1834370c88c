"""What a run put on the sink, counted exactly: the numbers the platform's tables are checked against."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Counts of one run. ``messages_sent == valid_readings + duplicates_sent + malformed_sent``.

    ``messages_sent`` is what Bronze must hold; ``valid_readings`` (unique event ids) is what Silver
    must hold after de-duplication; ``malformed_sent`` is what quarantine must hold. Late and
    out-of-order readings are valid readings too (they are subsets of ``valid_readings``).
    """

    seed: int
    patients: int
    mode: str  # "fast" | "realtime"
    sink: str
    start: str  # simulated window, ISO 8601 UTC
    end: str
    interval_seconds: float
    messages_sent: int
    valid_readings: int
    duplicates_sent: int
    malformed_sent: int
    malformed_by_kind: dict[str, int]
    late_sent: int
    out_of_order_sent: int
    dropped_readings: int  # readings never produced because the device was in a dropout
    skewed_devices: int
    local_offset_devices: int
    episodes: int
    episodes_by_type: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls(**orjson.loads(path.read_bytes()))
