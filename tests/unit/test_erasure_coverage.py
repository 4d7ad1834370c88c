"""forget-patient reaches every table that names a patient, in the lake and the warehouse."""

from __future__ import annotations

from vitals_lake import contract as c
from vitals_lake.erasure import KEPT_LAYERS, NAMED_LAYERS
from warehouse.tables import WAREHOUSE_TABLES


def test_every_lake_table_that_names_a_patient_is_erased():
    naming = {layer for layer, spec in c.TABLES.items() if c.patient_column(spec.schema) is not None}
    # A table added to the contract with a patient column and not to the erasure fails here.
    assert naming - set(KEPT_LAYERS) == set(NAMED_LAYERS)
    assert NAMED_LAYERS[-1] == "patients"  # identity last: a failure part-way leaves the key


def test_the_identity_map_is_erased_by_id_and_gold_by_key():
    assert c.patient_column(c.PATIENT_KEYS_SCHEMA) == c.PATIENT_ID
    assert c.patient_column(c.GOLD_SCHEMA) == c.PATIENT_KEY
    # The warehouse's erasure walks its tables by the same rule: each of these names a patient.
    assert {name for name, spec in WAREHOUSE_TABLES.items() if c.patient_column(spec.schema) is not None} == {
        c.GOLD_TABLE,
        c.ALERTS_TABLE,
        c.PATIENT_KEYS_TABLE,
    }
