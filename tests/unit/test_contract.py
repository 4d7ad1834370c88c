from __future__ import annotations

import pyarrow as pa

from vitals_lake import contract as c


def test_every_vital_has_unit_loinc_and_sane_ranges():
    for v in c.VITAL_SIGNS:
        assert v.unit and v.loinc.count("-") == 1
        lo, hi = v.possible
        nlo, nhi = v.normal
        assert lo < nlo < nhi <= hi, v.name


def test_loinc_codes_match_fhir_vital_signs_profile():
    codes = {v.name: v.loinc for v in c.VITAL_SIGNS}
    assert codes == {
        c.HEART_RATE: "8867-4",
        c.TEMPERATURE: "8310-5",
        c.SPO2: "2708-6",
        c.RESPIRATION_RATE: "9279-1",
        c.SYSTOLIC: "8480-6",
        c.DIASTOLIC: "8462-4",
    }
    assert c.LOINC_VITAL_SIGNS_PANEL == "85353-1" and c.LOINC_BLOOD_PRESSURE_PANEL == "85354-9"


def test_tables_are_partitioned_by_date_never_by_patient():
    # Low-cardinality columns only: a date first, then (Gold) the window length and the hour.
    for spec in c.TABLES.values():
        assert c.PATIENT_ID not in spec.lake_partition_by and c.PATIENT_KEY not in spec.lake_partition_by
        if spec.partition_by:
            assert spec.schema.field(spec.partition_by[0]).type == pa.date32()
        for col in spec.partition_by[1:]:
            assert col == c.WINDOW_SECONDS
        assert spec.lake_partition_by[len(spec.partition_by) :] == ((c.EVENT_HOUR,) if spec.hour_of else ())


def test_gold_has_every_stat_for_every_vital_and_its_key():
    names = set(c.GOLD_SCHEMA.names)
    for v in c.VITAL_NAMES:
        for stat in c.GOLD_STATS:
            assert c.gold_column(v, stat) in names
    assert set(c.GOLD_KEY) <= names


def test_silver_carries_every_vital_with_its_contract_type():
    for v in c.VITAL_SIGNS:
        assert c.SILVER_SCHEMA.field(v.name).type == v.arrow_type
    assert c.SILVER_SCHEMA.field(c.TIMESTAMP).type == pa.timestamp("us", tz="UTC")
