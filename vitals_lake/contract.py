"""The reading contract: every field name, unit, range, LOINC code and table schema, in one place.

Every other component (simulator, bridge, pipeline, function, SQL tests) imports these names;
nothing redefines them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import pyarrow as pa

# --- Fields of a reading as a device sends it (JSON) -------------------------------------------
EVENT_ID: Final = "event_id"  # unique per reading, assigned by the device
PATIENT_ID: Final = "patient_id"
DEVICE_ID: Final = "device_id"
TIMESTAMP: Final = "timestamp"  # ISO 8601 with a UTC offset, e.g. 2026-11-22T06:30:00.250+01:00
HEART_RATE: Final = "heart_rate"
TEMPERATURE: Final = "temperature"
SPO2: Final = "spo2"
RESPIRATION_RATE: Final = "respiration_rate"
BLOOD_PRESSURE: Final = "blood_pressure"  # "120/80" ...
SYSTOLIC: Final = "systolic"  # ... or two numeric fields instead
DIASTOLIC: Final = "diastolic"

# --- Fields the platform adds ----------------------------------------------------------------
RAW: Final = "raw"  # the reading's bytes exactly as received
RECORD_REF: Final = "record_ref"  # where the record came from, e.g. kafka:patient-vitals:0:1234
SOURCE: Final = "source"  # kafka | pubsub | file
KAFKA_TOPIC: Final = "kafka_topic"
KAFKA_PARTITION: Final = "kafka_partition"
KAFKA_OFFSET: Final = "kafka_offset"
KAFKA_KEY: Final = "kafka_key"
KAFKA_TIMESTAMP: Final = "kafka_timestamp"
PUBSUB_MESSAGE_ID: Final = "pubsub_message_id"
PUBLISH_TIME: Final = "publish_time"
INGEST_TIME: Final = "ingest_time"
INGEST_DATE: Final = "ingest_date"
EVENT_DATE: Final = "event_date"
RULES: Final = "rules"  # names of the expectations a quarantined record failed
DETAIL: Final = "detail"  # the offending value or parser message
WINDOW_START: Final = "window_start"
WINDOW_END: Final = "window_end"
WINDOW_SECONDS: Final = "window_seconds"
READING_COUNT: Final = "reading_count"
LAST_READING_TIME: Final = "last_reading_time"
UPDATED_AT: Final = "updated_at"
BATCH_ID: Final = "batch_id"
VALID_ROWS: Final = "valid_rows"
INSERTED_ROWS: Final = "inserted_rows"
DUPLICATE_ROWS: Final = "duplicate_rows"
COMMITTED_AT: Final = "committed_at"

# --- Admission files (CSV drops) and the diagnosis reference --------------------------------------
NAME: Final = "name"  # a direct identifier: stays in the restricted patients table
AGE: Final = "age"
GENDER: Final = "gender"
ADMISSION_DATE: Final = "admission_date"
DIAGNOSIS_CODE: Final = "diagnosis_code"  # ICD-10
DIAGNOSIS_DESCRIPTION: Final = "diagnosis_description"
WARD: Final = "ward"
ADMISSION_COLUMNS: Final = (PATIENT_ID, NAME, AGE, GENDER, ADMISSION_DATE, DIAGNOSIS_CODE, WARD)
DIAGNOSIS_COLUMNS: Final = (DIAGNOSIS_CODE, DIAGNOSIS_DESCRIPTION)
ADMISSION_FILE_PATTERN: Final = "patients_daily_file_{date:%Y%m%d}.csv"
ADMISSION_FILE_GLOB: Final = "patients_daily_file_*.csv"
DIAGNOSIS_MAPPING_FILE: Final = "diagnosis_mapping.csv"

# --- Table and topic names ---------------------------------------------------------------------
BRONZE_TABLE: Final = "bronze_patient_vitals"
SILVER_TABLE: Final = "silver_patient_vitals"
GOLD_TABLE: Final = "gold_patient_summary"
QUARANTINE_TABLE: Final = "quarantine_patient_vitals"
SILVER_COMMITS_TABLE: Final = "silver_commit_log"
VITALS_TOPIC: Final = "patient-vitals"
VITALS_SUBSCRIPTION: Final = "patient-vitals-beam"


@dataclass(frozen=True)
class VitalSign:
    """One measured vital sign: its unit (UCUM), LOINC code and two ranges.

    ``possible`` is what a living adult can physiologically show: a value outside it is a sensor or
    transmission fault and goes to quarantine. ``normal`` is the adult clinical reference range: a
    value outside it is real and kept, but flagged.
    """

    name: str
    unit: str
    loinc: str
    arrow_type: pa.DataType
    possible: tuple[float, float]
    normal: tuple[float, float]
    integral: bool


VITAL_SIGNS: Final[tuple[VitalSign, ...]] = (
    VitalSign(HEART_RATE, "/min", "8867-4", pa.int16(), (20, 300), (60, 100), integral=True),
    VitalSign(TEMPERATURE, "Cel", "8310-5", pa.float64(), (25.0, 45.0), (36.1, 38.0), integral=False),
    VitalSign(SPO2, "%", "2708-6", pa.float64(), (50.0, 100.0), (95.0, 100.0), integral=False),
    VitalSign(RESPIRATION_RATE, "/min", "9279-1", pa.int16(), (2, 80), (12, 20), integral=True),
    VitalSign(SYSTOLIC, "mm[Hg]", "8480-6", pa.int16(), (40, 300), (90, 140), integral=True),
    VitalSign(DIASTOLIC, "mm[Hg]", "8462-4", pa.int16(), (20, 200), (60, 90), integral=True),
)
VITALS_BY_NAME: Final = {v.name: v for v in VITAL_SIGNS}
VITAL_NAMES: Final = tuple(v.name for v in VITAL_SIGNS)
LOINC_VITAL_SIGNS_PANEL: Final = "85353-1"
LOINC_BLOOD_PRESSURE_PANEL: Final = "85354-9"
LOINC_SPO2_PULSE_OXIMETRY: Final = "59408-5"  # US Core pulse-oximetry profile code

# The JSON shape a device sends, as Arrow types for the parser. Numbers are read as float64 so that
# 72 and 72.0 both parse; integral vitals are checked and narrowed afterwards.
READING_JSON_SCHEMA: Final = pa.schema(
    [
        (EVENT_ID, pa.string()),
        (PATIENT_ID, pa.string()),
        (DEVICE_ID, pa.string()),
        (TIMESTAMP, pa.string()),
        (HEART_RATE, pa.float64()),
        (TEMPERATURE, pa.float64()),
        (SPO2, pa.float64()),
        (RESPIRATION_RATE, pa.float64()),
        (BLOOD_PRESSURE, pa.string()),
        (SYSTOLIC, pa.float64()),
        (DIASTOLIC, pa.float64()),
    ]
)

_UTC_US = pa.timestamp("us", tz="UTC")

# Columns that trace a record back to its source; shared by Bronze, Silver and quarantine.
_LINEAGE = [
    pa.field(RECORD_REF, pa.string(), nullable=False),
    pa.field(SOURCE, pa.string(), nullable=False),
    pa.field(KAFKA_TOPIC, pa.string()),
    pa.field(KAFKA_PARTITION, pa.int32()),
    pa.field(KAFKA_OFFSET, pa.int64()),
    pa.field(KAFKA_KEY, pa.string()),
    pa.field(KAFKA_TIMESTAMP, _UTC_US),
    pa.field(PUBSUB_MESSAGE_ID, pa.string()),
    pa.field(PUBLISH_TIME, _UTC_US),
]

BRONZE_SCHEMA: Final = pa.schema(
    [
        pa.field(RAW, pa.binary(), nullable=False),
        *_LINEAGE,
        pa.field(INGEST_TIME, _UTC_US, nullable=False),
        pa.field(INGEST_DATE, pa.date32(), nullable=False),
    ]
)

SILVER_SCHEMA: Final = pa.schema(
    [
        pa.field(EVENT_ID, pa.string(), nullable=False),
        pa.field(PATIENT_ID, pa.string(), nullable=False),
        pa.field(DEVICE_ID, pa.string()),
        pa.field(TIMESTAMP, _UTC_US, nullable=False),
        *(pa.field(v.name, v.arrow_type) for v in VITAL_SIGNS),
        pa.field(RECORD_REF, pa.string(), nullable=False),
        pa.field(INGEST_TIME, _UTC_US, nullable=False),
        pa.field(EVENT_DATE, pa.date32(), nullable=False),
    ]
)

QUARANTINE_SCHEMA: Final = pa.schema(
    [
        pa.field(RAW, pa.binary(), nullable=False),
        pa.field(RULES, pa.list_(pa.string()), nullable=False),
        pa.field(DETAIL, pa.string()),
        pa.field(EVENT_ID, pa.string()),
        pa.field(PATIENT_ID, pa.string()),
        *_LINEAGE,
        pa.field(INGEST_TIME, _UTC_US, nullable=False),
        pa.field(INGEST_DATE, pa.date32(), nullable=False),
    ]
)

# Aggregates kept per vital in Gold, in column order.
GOLD_STATS: Final = ("mean", "min", "max", "last", "count")


def gold_column(vital: str, stat: str) -> str:
    """Name of a Gold aggregate column, e.g. ``heart_rate_mean``."""
    return f"{vital}_{stat}"


def _gold_vital_fields() -> list[pa.Field]:
    fields = []
    for v in VITAL_SIGNS:
        for stat in GOLD_STATS:
            typ = pa.int32() if stat == "count" else pa.float64()
            fields.append(pa.field(gold_column(v.name, stat), typ))
    return fields


GOLD_SCHEMA: Final = pa.schema(
    [
        pa.field(PATIENT_ID, pa.string(), nullable=False),
        pa.field(WINDOW_SECONDS, pa.int32(), nullable=False),
        pa.field(WINDOW_START, _UTC_US, nullable=False),
        pa.field(WINDOW_END, _UTC_US, nullable=False),
        pa.field(READING_COUNT, pa.int32(), nullable=False),
        *_gold_vital_fields(),
        pa.field(LAST_READING_TIME, _UTC_US, nullable=False),
        pa.field(UPDATED_AT, _UTC_US, nullable=False),
        pa.field(EVENT_DATE, pa.date32(), nullable=False),
    ]
)
GOLD_KEY: Final = (PATIENT_ID, WINDOW_SECONDS, WINDOW_START)

# One row per Silver commit: what the batch held and how many duplicates it dropped.
SILVER_COMMITS_SCHEMA: Final = pa.schema(
    [
        pa.field(BATCH_ID, pa.string(), nullable=False),
        pa.field(VALID_ROWS, pa.int64(), nullable=False),
        pa.field(INSERTED_ROWS, pa.int64(), nullable=False),
        pa.field(DUPLICATE_ROWS, pa.int64(), nullable=False),
        pa.field(COMMITTED_AT, _UTC_US, nullable=False),
    ]
)

Layer = Literal["bronze", "silver", "gold", "quarantine", "silver_commits"]


@dataclass(frozen=True)
class TableSpec:
    """A Delta table of the lake: its name, schema and partition columns (dates only, never patient_id)."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...]


TABLES: Final[dict[Layer, TableSpec]] = {
    "bronze": TableSpec(BRONZE_TABLE, BRONZE_SCHEMA, (INGEST_DATE,)),
    "silver": TableSpec(SILVER_TABLE, SILVER_SCHEMA, (EVENT_DATE,)),
    "gold": TableSpec(GOLD_TABLE, GOLD_SCHEMA, (EVENT_DATE,)),
    "quarantine": TableSpec(QUARANTINE_TABLE, QUARANTINE_SCHEMA, (INGEST_DATE,)),
    "silver_commits": TableSpec(SILVER_COMMITS_TABLE, SILVER_COMMITS_SCHEMA, ()),
}
