"""Per-patient state as arrays: each patient a row (a *slot*), found for a whole batch in one lookup.

The stateful steps of a shard (baselines, the alert rule) keep one row per patient in NumPy arrays
instead of an object per patient, so that a batch is folded in with array operations; this maps a
batch's patient ids to those rows, giving new patients the next ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class PatientSlots:
    ids: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))  # slot i: ids[i]

    def __len__(self) -> int:
        return len(self.ids)

    def slots(self, patient_ids: pa.Array | pa.ChunkedArray | np.ndarray) -> tuple[np.ndarray, int]:
        """Each row's slot, and how many patients were new (their slots are the last ones)."""
        if isinstance(patient_ids, np.ndarray):
            patient_ids = pa.array(patient_ids, pa.string())
        if isinstance(patient_ids, pa.ChunkedArray):
            patient_ids = patient_ids.combine_chunks()
        encoded = pc.dictionary_encode(patient_ids.cast(pa.string()))
        batch = encoded.dictionary
        known = pc.index_in(batch, value_set=self.ids)
        new = batch.filter(pc.is_null(known))
        if len(new):
            self.ids = pa.concat_arrays([self.ids, new])
            known = pc.index_in(batch, value_set=self.ids)
        codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64)
        return np.asarray(known.to_numpy(zero_copy_only=False), np.int64)[codes], len(new)

    def forget(self, patient_ids: pa.Array, state: object, arrays: tuple[str, ...]) -> int:
        """Drop these patients' slots, and their rows of ``state``'s per-slot ``arrays`` (attribute
        names); the others are renumbered from 0 in their order. Returns how many were dropped."""
        gone = self.among(patient_ids)
        if not gone.any():
            return 0
        kept = np.flatnonzero(~gone)
        self.ids = self.ids.take(pa.array(kept, pa.int64()))
        for name in arrays:
            setattr(state, name, getattr(state, name)[kept])
        return int(gone.sum())

    def find(self, patient_ids: pa.Array) -> np.ndarray:
        """Each id's slot, -1 for an id without one."""
        found = pc.index_in(patient_ids, value_set=self.ids)
        return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), np.int64)

    def among(self, patient_ids: pa.Array) -> np.ndarray:
        """Mask over the slots: which hold one of ``patient_ids``."""
        return np.asarray(pc.is_in(self.ids, value_set=patient_ids).to_numpy(zero_copy_only=False), bool)

    def slot(self, patient_id: str) -> int | None:
        found = pc.index_in(pa.array([patient_id], pa.string()), value_set=self.ids)[0].as_py()
        return None if found is None else int(found)
