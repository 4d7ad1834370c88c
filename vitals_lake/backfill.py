"""Back-fill: when a patient's admission arrives after their readings, Gold learns who they are.

Readings of a patient unknown at ingest are kept in Silver and Gold with ``known_patient = false``
and no ward, bed, age band or diagnosis. When the admission file lands, the patients table changes
and this writes the enrichment into that patient's Gold rows that were computed without it (a MERGE on
the patient's key, which the patients table maps from the id), stamping them with a new
``updated_at``: a warehouse fed by the stream takes the rows
again (``gold_rows_updated_at`` reads them back), and its views keep the newest. Rows of a known
patient keep the enrichment of their time: a transfer to another ward changes the windows after it,
not the ward the patient was on before (``ward_alert_counts`` counts by the ward of the time). Silver keeps
what was known at ingest (it is the audit trail); the NEWS2 score of a scale-2 patient scored on
scale 1 before their admission arrived is corrected by rebuilding from Bronze
(``--input-bronze``), which re-scores with the admission now known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
from deltalake.exceptions import CommitFailedError

from vitals_lake import contract as c
from vitals_lake.lake import Lake
from vitals_lake.summaries import GOLD_ENRICHMENT

log = logging.getLogger(__name__)
_ATTEMPTS: Final = 6


def backfill_gold(lake: Lake, patient_ids: Sequence[str], *, updated_at_us: int | None = None) -> int:
    """Copy the patients table's enrichment into these patients' Gold rows computed before their
    admission was known (``known_patient`` not true), stamped ``updated_at_us`` (default: now);
    return rows updated."""
    if not patient_ids or not lake.exists("gold"):
        return 0
    patients = lake.read("patients")
    ids = pa.array(list(patient_ids), pa.string())
    source = patients.filter(pc.is_in(patients[c.PATIENT_ID], value_set=ids))
    if source.num_rows == 0:
        return 0
    stamp = time.time_ns() // 1000 if updated_at_us is None else updated_at_us
    source = source.select([c.PATIENT_KEY, *(n for n in GOLD_ENRICHMENT if n != c.KNOWN_PATIENT)])
    source = source.append_column(c.KNOWN_PATIENT, pa.repeat(pa.scalar(True), source.num_rows))
    updated_at = pa.scalar(stamp, pa.int64()).cast(c.GOLD_SCHEMA.field(c.UPDATED_AT).type)
    source = source.append_column(c.UPDATED_AT, pa.repeat(updated_at, source.num_rows))
    updates = {name: f"s.{name}" for name in (*GOLD_ENRICHMENT, c.UPDATED_AT)}
    # Only rows enriched without an admission; they keep their files and updated_at once filled (a
    # second pass changes nothing).
    unknown = f"(t.{c.KNOWN_PATIENT} IS NOT TRUE)"
    differs = " OR ".join(f"(t.{name} IS DISTINCT FROM s.{name})" for name in GOLD_ENRICHMENT)
    for attempt in range(1, _ATTEMPTS + 1):
        # The stream upserts Gold concurrently: a conflicting commit is retried on the new version.
        dt = lake.ensure("gold")
        try:
            metrics = (
                dt.merge(
                    source,
                    predicate=f"t.{c.PATIENT_KEY} = s.{c.PATIENT_KEY}",
                    source_alias="s",
                    target_alias="t",
                )
                .when_matched_update(updates=updates, predicate=f"{unknown} AND ({differs})")
                .execute()
            )
            return int(metrics.get("num_target_rows_updated", 0))
        except CommitFailedError:
            if attempt == _ATTEMPTS:
                raise
            log.info("gold back-fill conflicted with a concurrent commit; retry %d", attempt)
            time.sleep(0.2 * attempt)
    return 0


def gold_rows_updated_at(lake: Lake, patient_ids: Sequence[str], updated_at_us: int) -> pa.Table:
    """These patients' Gold rows a back-fill stamped ``updated_at_us``: what a warehouse is sent."""
    if not patient_ids or not lake.exists("gold"):
        return c.GOLD_SCHEMA.empty_table()
    stamp = pa.scalar(updated_at_us, pa.int64()).cast(c.GOLD_SCHEMA.field(c.UPDATED_AT).type)
    rows = lake.read("gold", where=pc.field(c.UPDATED_AT) == stamp)
    # Gold names patients by key: the patients table maps the ids. Files written by a MERGE hold
    # string views: the keys are compared after the read.
    patients = lake.read("patients", columns=[c.PATIENT_ID, c.PATIENT_KEY])
    ids = pa.array(list(patient_ids), pa.string())
    keys = patients.filter(pc.is_in(patients[c.PATIENT_ID], value_set=ids))[c.PATIENT_KEY]
    return rows.filter(pc.is_in(rows[c.PATIENT_KEY].cast(pa.string()), value_set=keys.combine_chunks()))
