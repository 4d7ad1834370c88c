"""The identity map's feed: which pseudonymous keys are new to a patient shard.

Every table after the gate names a patient by ``patient_key`` only, except the two restricted identity
tables. ``patient_keys`` maps each key the stream has seen to its raw id, admitted patient or not, so
that whoever may re-identify (the warehouse's identity view, the dashboard's detail page) can. A shard
remembers the keys it has already written (:class:`KnownKeys`, part of its state), so a key is
appended once per shard state: a restarted or moved shard appends its keys again, and readers keep
one row per key (:func:`identity_map`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.lake import first_per_key


@dataclass
class KnownKeys:
    """The keys a shard has appended to ``patient_keys`` (one string array, kept unique)."""

    keys: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))

    def new_rows(self, silver: pa.Table) -> pa.Table:
        """``PATIENT_KEYS_SCHEMA`` rows for the keys of ``silver`` not seen before (remembered now),
        each with its earliest reading of the batch."""
        if silver.num_rows == 0:
            return c.PATIENT_KEYS_SCHEMA.empty_table()
        # Only the three columns it needs are filtered (a shard's first batch has every row unseen).
        needed = silver.select([c.PATIENT_KEY, c.PATIENT_ID, c.TIMESTAMP])
        unseen = needed.filter(pc.invert(pc.is_in(needed[c.PATIENT_KEY], value_set=self.keys)))
        if unseen.num_rows == 0:
            return c.PATIENT_KEYS_SCHEMA.empty_table()
        # Key and id are one-to-one (an HMAC of the id): grouping by both keeps each pair once.
        first = unseen.group_by([c.PATIENT_KEY, c.PATIENT_ID], use_threads=False).aggregate(
            [(c.TIMESTAMP, "min")]
        )
        rows = pa.table(
            {
                c.PATIENT_KEY: first[c.PATIENT_KEY],
                c.PATIENT_ID: first[c.PATIENT_ID],
                c.FIRST_SEEN: first[f"{c.TIMESTAMP}_min"],
            },
            schema=c.PATIENT_KEYS_SCHEMA,
        )
        self.keys = pa.concat_arrays([self.keys, rows[c.PATIENT_KEY].combine_chunks()])
        return rows

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes)


def identity_map(rows: pa.Table) -> pa.Table:
    """One row per key of a read of ``patient_keys`` (the earliest sighting), in key order."""
    ordered = rows.sort_by([(c.PATIENT_KEY, "ascending"), (c.FIRST_SEEN, "ascending")])
    return first_per_key(ordered, c.PATIENT_KEY)
