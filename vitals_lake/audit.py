"""Account for every record: counts per layer, quarantine by rule, and the conservation checks.

produced (by the simulator) = Bronze
Bronze = Silver + quarantine + duplicates removed

A quarantine row with a ``record_part`` (an entry of a FHIR Bundle rejected on its own while the rest of
the Bundle reached Silver) is counted apart: its record is already in Silver.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.lake import Lake


@dataclass(frozen=True)
class LakeCounts:
    bronze: int
    silver: int
    quarantine: int
    duplicates_removed: int
    gold_rows: dict[int, int]  # window length (s) -> rows
    gold_readings: dict[int, int]  # window length (s) -> sum of reading_count (each should equal Silver)
    quarantine_by_rule: dict[str, int] = field(default_factory=dict)
    quarantined_parts: int = 0  # rejected parts of records whose other parts reached Silver

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    name: str
    left: int
    right: int

    @property
    def ok(self) -> bool:
        return self.left == self.right

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "left": self.left, "right": self.right, "ok": self.ok}


def count_lake(lake: Lake) -> LakeCounts:
    quarantine = lake.read("quarantine", columns=[c.RULES, c.RECORD_PART])
    parts = int(pc.sum(pc.is_valid(quarantine[c.RECORD_PART])).as_py() or 0) if quarantine.num_rows else 0
    by_rule = Counter(pc.list_flatten(quarantine[c.RULES]).to_pylist()) if quarantine.num_rows else Counter()
    commits = lake.read("silver_commits", columns=[c.DUPLICATE_ROWS])
    gold = lake.read("gold", columns=[c.WINDOW_SECONDS, c.READING_COUNT])
    per_window = gold.group_by(c.WINDOW_SECONDS).aggregate(
        [(c.READING_COUNT, "sum"), (c.READING_COUNT, "count")]
    )
    seconds = per_window[c.WINDOW_SECONDS].to_pylist()
    readings = dict(zip(seconds, per_window[f"{c.READING_COUNT}_sum"].to_pylist(), strict=True))
    rows = dict(zip(seconds, per_window[f"{c.READING_COUNT}_count"].to_pylist(), strict=True))
    return LakeCounts(
        bronze=lake.count("bronze"),
        silver=lake.count("silver"),
        quarantine=quarantine.num_rows - parts,
        duplicates_removed=int(pc.sum(commits[c.DUPLICATE_ROWS]).as_py() or 0),
        gold_rows={w: int(rows.get(w, 0)) for w in c.GOLD_WINDOWS},
        gold_readings={w: int(readings.get(w, 0)) for w in c.GOLD_WINDOWS},
        quarantine_by_rule=dict(sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))),
        quarantined_parts=parts,
    )


def clinical_summary(lake: Lake) -> dict[str, Any]:
    """What the demo shows beyond counts: enrichment, NEWS2 responses, data-quality rule totals."""
    silver = lake.read(
        "silver",
        columns=[
            c.KNOWN_PATIENT,
            c.NEWS2_RESPONSE,
            c.TEMPERATURE_CONVERTED,
            c.ANOMALY_SCORE,
            c.IS_ANOMALY,
            c.MODEL_VERSION,
            c.ALERT_OPEN,
            c.ALERT_OPENED,
        ],
    )
    dq = lake.read("dq_metrics", columns=[c.RULE, c.ACTION, c.CHECKED_ROWS, c.FAILED_ROWS])
    by_rule = dq.group_by([c.RULE, c.ACTION]).aggregate([(c.CHECKED_ROWS, "sum"), (c.FAILED_ROWS, "sum")])
    failing = sorted(
        (
            (r[f"{c.FAILED_ROWS}_sum"], r[c.RULE], r[c.ACTION])
            for r in by_rule.to_pylist()
            if r[f"{c.FAILED_ROWS}_sum"]
        ),
        reverse=True,
    )
    known = int(pc.sum(silver[c.KNOWN_PATIENT]).as_py() or 0)
    return {
        "patients_in_admissions": lake.count("patients"),
        "silver_known_patient": known,
        "silver_unknown_patient": silver.num_rows - known,
        "silver_temperature_converted_from_f": int(pc.sum(silver[c.TEMPERATURE_CONVERTED]).as_py() or 0),
        "news2_response": dict(Counter(silver[c.NEWS2_RESPONSE].to_pylist())),
        "scored_readings": silver.num_rows - silver[c.ANOMALY_SCORE].null_count,
        "model_versions": sorted({v for v in silver[c.MODEL_VERSION].to_pylist() if v}),
        "anomalous_readings": _true(silver[c.IS_ANOMALY]),
        "alerts_opened": _true(silver[c.ALERT_OPENED]),
        "readings_with_alert_open": _true(silver[c.ALERT_OPEN]),
        "dq_rules_evaluated": by_rule.num_rows,
        "dq_failures": {f"{rule} ({action})": n for n, rule, action in failing},
    }


def _true(values: pa.ChunkedArray) -> int:
    return int(pc.sum(pc.fill_null(values, False)).as_py() or 0)


def conservation(counts: LakeCounts, *, produced: int) -> list[Check]:
    return [
        Check("produced = Bronze", produced, counts.bronze),
        Check(
            "Bronze = Silver + quarantine + duplicates",
            counts.bronze,
            counts.silver + counts.quarantine + counts.duplicates_removed,
        ),
        *(
            Check(f"Silver = readings in Gold {w} s windows", counts.silver, counts.gold_readings[w])
            for w in c.GOLD_WINDOWS
        ),
    ]
