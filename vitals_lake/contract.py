"""The reading contract: every field name, unit, range, LOINC code and table schema, in one place.

Every other component (simulator, bridge, pipeline, function, SQL tests) imports these names;
nothing redefines them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
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
# Optional device fields (NEWS2 inputs; documented defaults when absent: alert, on room air)
TEMPERATURE_UNIT: Final = "temperature_unit"  # "Cel" (default) or "[degF]" / "F"
CONSCIOUSNESS: Final = "consciousness"  # ACVPU: "A" alert, "C" new confusion, "V", "P", "U"
SUPPLEMENTAL_OXYGEN: Final = "supplemental_oxygen"  # true when on supplemental oxygen
# A correction (FHIR status amended / corrected): the event_id of the reading it corrects. Both stay in
# Silver; the correction is marked by this field, the original is never dropped.
SUPERSEDES: Final = "supersedes"

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
# Lake layout only, never in a warehouse: the UTC hour (0-23) of an upserted table's time column, a
# second partition level under the date so that a MERGE rewrites one hour's file, not the day's.
EVENT_HOUR: Final = "event_hour"
RULES: Final = "rules"  # names of the expectations a quarantined record failed
DETAIL: Final = "detail"  # the offending value or parser message
RAW_BYTES: Final = "raw_bytes"  # the record's size as received (quarantine keeps at most RAW_CAP_BYTES of it)
RAW_TRUNCATED: Final = "raw_truncated"  # quarantine holds only the first RAW_CAP_BYTES (Bronze has all)
RECORD_PART: Final = "record_part"  # the part of a record that was rejected (a FHIR Bundle entry); null: all
# A quarantine row keeps at most this much of the record: a 10 MB poison message must not bloat triage
# tables. Bronze keeps every byte, so nothing is lost; raw_bytes says how large it was.
RAW_CAP_BYTES: Final = 64 * 1024
# A record larger than this is no reading (a FHIR Bundle of one reading is a few KB) and is quarantined
# unparsed; the bridge forwards at most this much of a Kafka record (Pub/Sub takes 10 MB a message).
MAX_RECORD_BYTES: Final = 1024 * 1024
# Readings stamped before this are from a device whose clock was never set (1970, 1980, 2000 epochs).
PLAUSIBLE_AFTER: Final = datetime(2010, 1, 1, tzinfo=UTC)
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

# --- Derived clinical fields (Silver) ---------------------------------------------------------------
TEMPERATURE_CONVERTED: Final = "temperature_converted"  # the device sent °F; Silver holds °C
SPO2_SCALE: Final = "spo2_scale"  # NEWS2 SpO2 scale: 1, or 2 for hypercapnic respiratory failure
NEWS2_SCORE: Final = "news2_score"  # aggregate 0-20
NEWS2_RESPONSE: Final = "news2_response"  # low | low-medium | medium | high
NEWS2_MISSING: Final = "news2_missing"  # parameters absent from the reading (the score is then a floor)
NEWS2_PARAMETERS: Final = (
    RESPIRATION_RATE,
    SPO2,
    SUPPLEMENTAL_OXYGEN,
    SYSTOLIC,
    HEART_RATE,
    CONSCIOUSNESS,
    TEMPERATURE,
)
NEWS2_RESPONSES: Final = ("low", "low-medium", "medium", "high")
MEAN_ARTERIAL_PRESSURE: Final = "mean_arterial_pressure"  # mm[Hg], (systolic + 2 diastolic) / 3
SHOCK_INDEX: Final = "shock_index"  # heart_rate / systolic
ALERT_FLAGS: Final = (
    "tachycardia",
    "bradycardia",
    "hypoxia",
    "fever",
    "hypothermia",
    "hypotension",
    "hypertension",
    "tachypnoea",
)


def news2_subscore_column(parameter: str) -> str:
    """Silver column holding one NEWS2 parameter's sub-score, e.g. ``news2_heart_rate``."""
    return f"news2_{parameter}"


def flag_column(flag: str) -> str:
    """Silver boolean column of a simple alert flag, e.g. ``flag_tachycardia``."""
    return f"flag_{flag}"


# --- Enrichment (Silver and Gold carry a pseudonym, never the name or the id) ----------------------
PATIENT_KEY: Final = "patient_key"  # keyed hash (HMAC-SHA256) of patient_id
BED: Final = "bed"
AGE_BAND: Final = "age_band"  # e.g. "60-69"
KNOWN_PATIENT: Final = "known_patient"  # false: no admission record yet (kept, flagged, back-filled)

# --- Admission files (CSV drops) and the diagnosis reference --------------------------------------
NAME: Final = "name"  # a direct identifier: stays in the restricted patients table
AGE: Final = "age"
GENDER: Final = "gender"
ADMISSION_DATE: Final = "admission_date"
DIAGNOSIS_CODE: Final = "diagnosis_code"  # ICD-10
DIAGNOSIS_DESCRIPTION: Final = "diagnosis_description"
WARD: Final = "ward"
HYPERCAPNIC: Final = "hypercapnic_respiratory_failure"  # Y/N in the file: selects NEWS2 SpO2 scale 2
ADMISSION_COLUMNS: Final = (
    PATIENT_ID,
    NAME,
    AGE,
    GENDER,
    ADMISSION_DATE,
    DIAGNOSIS_CODE,
    WARD,
    BED,
    HYPERCAPNIC,
)
DIAGNOSIS_COLUMNS: Final = (DIAGNOSIS_CODE, DIAGNOSIS_DESCRIPTION)
ADMISSION_FILE_PATTERN: Final = "patients_daily_file_{date:%Y%m%d}.csv"
ADMISSION_FILE_GLOB: Final = "patients_daily_file_*.csv"
DIAGNOSIS_MAPPING_FILE: Final = "diagnosis_mapping.csv"

# --- Table and topic names ---------------------------------------------------------------------
LAYER: Final = "layer"
RULE: Final = "rule"
ACTION: Final = "action"
CHECKED_ROWS: Final = "checked_rows"
PASSED_ROWS: Final = "passed_rows"
FAILED_ROWS: Final = "failed_rows"
SOURCE_FILE: Final = "source_file"
SOURCE_LINE: Final = "source_line"
LOADED_AT: Final = "loaded_at"
BRONZE_TABLE: Final = "bronze_patient_vitals"
SILVER_TABLE: Final = "silver_patient_vitals"
GOLD_TABLE: Final = "gold_patient_summary"
QUARANTINE_TABLE: Final = "quarantine_patient_vitals"
SILVER_COMMITS_TABLE: Final = "silver_commit_log"
DQ_METRICS_TABLE: Final = "dq_metrics"
DIAGNOSIS_HOURLY_TABLE: Final = "gold_diagnosis_hourly"
ROLLING_TABLE: Final = "gold_patient_rolling"
BRONZE_ADMISSIONS_TABLE: Final = "bronze_admissions"
PATIENTS_TABLE: Final = "silver_patients"  # restricted: holds names
DIAGNOSIS_TABLE: Final = "ref_diagnosis_mapping"
ERASURE_LOG_TABLE: Final = "erasure_log"  # one row per forgotten patient: who, when, why, how much
PATIENT_KEYS_TABLE: Final = "patient_keys"  # restricted: each key with the raw id it stands for
FIRST_SEEN: Final = "first_seen"
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
    # Values devices send for "no reading" that fall inside ``possible``: 8-bit pulse oximeters report
    # a pulse rate of 255 (0xFF) with no finger in the probe (1,306 of 1,570 rows of vitaldsp's ppg.csv).
    no_reading_codes: tuple[float, ...] = ()


VITAL_SIGNS: Final[tuple[VitalSign, ...]] = (
    VitalSign(
        HEART_RATE, "/min", "8867-4", pa.int16(), (20, 300), (60, 100), integral=True, no_reading_codes=(255,)
    ),
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
        (TEMPERATURE_UNIT, pa.string()),
        (CONSCIOUSNESS, pa.string()),
        (SUPPLEMENTAL_OXYGEN, pa.bool_()),
        (SUPERSEDES, pa.string()),
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

ANOMALY_SCORE: Final = "anomaly_score"  # the anomaly model's score (higher = more anomalous)
IS_ANOMALY: Final = "is_anomaly"  # anomaly_score at or above the model's threshold
MODEL_VERSION: Final = "model_version"  # which model version scored the reading
ALERT_OPEN: Final = "alert_open"  # the combined alert rule (vitals_lake.alerting) has an alert open
ALERT_OPENED: Final = "alert_opened"  # ... and it opened on this reading
RISK_LEVEL: Final = "risk_level"  # Gold: low | low-medium | medium | high
RISK_LEVEL_ON_ALERT: Final = "medium"  # an open alert raises the risk level at least to this
SCORED_READINGS: Final = "scored_readings"  # Gold: readings the anomaly model scored
ANOMALOUS_READINGS: Final = "anomalous_readings"  # Gold: readings at or above the model's threshold
ALERT_READINGS: Final = "alert_readings"  # Gold: readings with an alert open

# Columns derived per reading (clinical) and joined from admissions (enrichment), in Silver order.
CLINICAL_FIELDS: Final = [
    pa.field(TEMPERATURE_CONVERTED, pa.bool_(), nullable=False),
    pa.field(CONSCIOUSNESS, pa.string()),
    pa.field(SUPPLEMENTAL_OXYGEN, pa.bool_()),
    pa.field(MEAN_ARTERIAL_PRESSURE, pa.float64()),
    pa.field(SHOCK_INDEX, pa.float64()),
    *(pa.field(flag_column(f), pa.bool_()) for f in ALERT_FLAGS),
    pa.field(SPO2_SCALE, pa.int8(), nullable=False),
    *(pa.field(news2_subscore_column(p), pa.int8()) for p in NEWS2_PARAMETERS),
    pa.field(NEWS2_SCORE, pa.int8()),
    pa.field(NEWS2_MISSING, pa.int8(), nullable=False),
    pa.field(NEWS2_RESPONSE, pa.string()),
    pa.field(ANOMALY_SCORE, pa.float64()),  # null while no model is deployed
    pa.field(IS_ANOMALY, pa.bool_()),
    pa.field(MODEL_VERSION, pa.string()),
    pa.field(ALERT_OPEN, pa.bool_()),
    pa.field(ALERT_OPENED, pa.bool_()),
]
ENRICHMENT_FIELDS: Final = [
    pa.field(PATIENT_KEY, pa.string(), nullable=False),
    pa.field(WARD, pa.string()),
    pa.field(BED, pa.string()),
    pa.field(AGE_BAND, pa.string()),
    pa.field(DIAGNOSIS_CODE, pa.string()),
    pa.field(DIAGNOSIS_DESCRIPTION, pa.string()),
    pa.field(KNOWN_PATIENT, pa.bool_(), nullable=False),
]

# What the gate hands a patient shard: Silver's columns and the raw patient_id, which goes no further
# than the shard's append to the identity map (``patient_keys``).
GATED_SCHEMA: Final = pa.schema(
    [
        pa.field(EVENT_ID, pa.string(), nullable=False),
        pa.field(PATIENT_ID, pa.string(), nullable=False),
        pa.field(DEVICE_ID, pa.string()),
        pa.field(TIMESTAMP, _UTC_US, nullable=False),
        *(pa.field(v.name, v.arrow_type) for v in VITAL_SIGNS),
        pa.field(SUPERSEDES, pa.string()),
        *CLINICAL_FIELDS,
        *ENRICHMENT_FIELDS,
        pa.field(RECORD_REF, pa.string(), nullable=False),
        pa.field(INGEST_TIME, _UTC_US, nullable=False),
        pa.field(EVENT_DATE, pa.date32(), nullable=False),
    ]
)
# Silver names the patient by ``patient_key`` only (minimum necessary).
SILVER_SCHEMA: Final = pa.schema([f for f in GATED_SCHEMA if f.name != PATIENT_ID])

QUARANTINE_SCHEMA: Final = pa.schema(
    [
        pa.field(RAW, pa.binary(), nullable=False),
        pa.field(RULES, pa.list_(pa.string()), nullable=False),
        pa.field(DETAIL, pa.string()),
        pa.field(EVENT_ID, pa.string()),
        pa.field(PATIENT_ID, pa.string()),
        pa.field(RAW_BYTES, pa.int64(), nullable=False),
        pa.field(RAW_TRUNCATED, pa.bool_(), nullable=False),
        pa.field(RECORD_PART, pa.string()),
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


# Per-window clinical aggregates: the worst NEWS2, how many readings raised each flag, the combined
# risk level (the highest NEWS2 response reached in the window, raised to "medium" while the combined
# alert rule had an alert open) and the anomaly model's score aggregates.
GOLD_CLINICAL_FIELDS: Final = [
    pa.field(gold_column(NEWS2_SCORE, "max"), pa.int8()),
    *(pa.field(gold_column(flag_column(f), "count"), pa.int32()) for f in ALERT_FLAGS),
    pa.field(RISK_LEVEL, pa.string()),
    pa.field(gold_column(ANOMALY_SCORE, "max"), pa.float64()),
    pa.field(gold_column(ANOMALY_SCORE, "mean"), pa.float64()),
    pa.field(SCORED_READINGS, pa.int32()),
    pa.field(ANOMALOUS_READINGS, pa.int32()),
    pa.field(ALERT_READINGS, pa.int32()),
]

GOLD_SCHEMA: Final = pa.schema(
    [
        pa.field(PATIENT_KEY, pa.string(), nullable=False),  # the patient by key only (minimum necessary)
        pa.field(WINDOW_SECONDS, pa.int32(), nullable=False),
        pa.field(WINDOW_START, _UTC_US, nullable=False),
        pa.field(WINDOW_END, _UTC_US, nullable=False),
        pa.field(READING_COUNT, pa.int32(), nullable=False),
        *_gold_vital_fields(),
        *GOLD_CLINICAL_FIELDS,
        # as of the latest reading
        *(f for f in ENRICHMENT_FIELDS if f.name not in (PATIENT_KEY, DIAGNOSIS_DESCRIPTION)),
        pa.field(LAST_READING_TIME, _UTC_US, nullable=False),
        pa.field(UPDATED_AT, _UTC_US, nullable=False),
        pa.field(EVENT_DATE, pa.date32(), nullable=False),
    ]
)
GOLD_WINDOWS: Final = (60, 3600)  # one-minute and one-hour summaries, in the same table

# --- Seed-two summaries, derived from Gold -----------------------------------------------------------
PATIENTS_COUNT: Final = "patients"
HIGH_RISK_PATIENTS: Final = "high_risk_patients"  # patients whose risk level reached "high"
ROLLING_MINUTES: Final = 15


def rolling_column(vital: str) -> str:
    """Trailing ``ROLLING_MINUTES``-minute mean of a vital, e.g. ``heart_rate_rolling_mean``."""
    return f"{vital}_rolling_mean"


DIAGNOSIS_HOURLY_SCHEMA: Final = pa.schema(
    [
        pa.field(DIAGNOSIS_CODE, pa.string(), nullable=False),  # "UNKNOWN" for patients not yet admitted
        pa.field(WINDOW_START, _UTC_US, nullable=False),
        pa.field(PATIENTS_COUNT, pa.int32(), nullable=False),
        pa.field(READING_COUNT, pa.int64(), nullable=False),
        *(pa.field(gold_column(v, "mean"), pa.float64()) for v in VITAL_NAMES),
        pa.field(gold_column(NEWS2_SCORE, "max"), pa.int8()),
        *(pa.field(gold_column(flag_column(f), "count"), pa.int64()) for f in ALERT_FLAGS),
        pa.field(HIGH_RISK_PATIENTS, pa.int32(), nullable=False),
        pa.field(UPDATED_AT, _UTC_US, nullable=False),
        pa.field(EVENT_DATE, pa.date32(), nullable=False),
    ]
)
DIAGNOSIS_HOURLY_KEY: Final = (DIAGNOSIS_CODE, WINDOW_START)

ROLLING_SCHEMA: Final = pa.schema(
    [
        pa.field(PATIENT_KEY, pa.string(), nullable=False),  # the patient by key only (minimum necessary)
        pa.field(WINDOW_START, _UTC_US, nullable=False),  # the minute the trailing window ends with
        pa.field(READING_COUNT, pa.int64(), nullable=False),  # readings in the trailing window
        *(pa.field(rolling_column(v), pa.float64()) for v in VITAL_NAMES),
        pa.field(UPDATED_AT, _UTC_US, nullable=False),
        pa.field(EVENT_DATE, pa.date32(), nullable=False),
    ]
)
ROLLING_KEY: Final = (PATIENT_KEY, WINDOW_START)
UNKNOWN_DIAGNOSIS: Final = "UNKNOWN"
GOLD_KEY: Final = (PATIENT_KEY, WINDOW_SECONDS, WINDOW_START)

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

# One row per expectation per batch: how many rows it checked, passed and failed.
DQ_METRICS_SCHEMA: Final = pa.schema(
    [
        pa.field(BATCH_ID, pa.string(), nullable=False),
        pa.field(WINDOW_START, _UTC_US, nullable=False),  # the batch's processing-time window
        pa.field(LAYER, pa.string(), nullable=False),
        pa.field(RULE, pa.string(), nullable=False),
        pa.field(ACTION, pa.string(), nullable=False),  # drop | warn | fail
        pa.field(CHECKED_ROWS, pa.int64(), nullable=False),
        pa.field(PASSED_ROWS, pa.int64(), nullable=False),
        pa.field(FAILED_ROWS, pa.int64(), nullable=False),
        pa.field(EVENT_DATE, pa.date32(), nullable=False),  # the window's date
    ]
)

# Admission files as received: every cell as text, plus where it came from.
BRONZE_ADMISSIONS_SCHEMA: Final = pa.schema(
    [
        *(pa.field(name, pa.string()) for name in ADMISSION_COLUMNS),
        pa.field(SOURCE_FILE, pa.string(), nullable=False),
        pa.field(SOURCE_LINE, pa.int64(), nullable=False),
        pa.field(INGEST_TIME, _UTC_US, nullable=False),
        pa.field(INGEST_DATE, pa.date32(), nullable=False),
    ]
)

# One row per patient (latest admission), cleaned. Restricted: it holds the name.
PATIENTS_SCHEMA: Final = pa.schema(
    [
        pa.field(PATIENT_ID, pa.string(), nullable=False),
        pa.field(PATIENT_KEY, pa.string(), nullable=False),
        pa.field(NAME, pa.string()),
        pa.field(AGE, pa.int16()),
        pa.field(AGE_BAND, pa.string()),
        pa.field(GENDER, pa.string()),  # F | M | U (unknown or inconsistent)
        pa.field(ADMISSION_DATE, pa.date32()),
        pa.field(DIAGNOSIS_CODE, pa.string()),
        pa.field(DIAGNOSIS_DESCRIPTION, pa.string()),
        pa.field(WARD, pa.string()),
        pa.field(BED, pa.string()),
        pa.field(SPO2_SCALE, pa.int8(), nullable=False),
        pa.field(SOURCE_FILE, pa.string(), nullable=False),
        pa.field(UPDATED_AT, _UTC_US, nullable=False),
    ]
)

DIAGNOSIS_SCHEMA: Final = pa.schema(
    [
        pa.field(DIAGNOSIS_CODE, pa.string(), nullable=False),
        pa.field(DIAGNOSIS_DESCRIPTION, pa.string()),
        pa.field(LOADED_AT, _UTC_US, nullable=False),
    ]
)

# Alert events: one row per state change of an alert (the pipeline publishes them to the alerts
# topic; the warehouse keeps them for ward_alert_counts). Pseudonymous: no names.
ALERTS_TOPIC: Final = "vitals-alerts"
ALERTS_TABLE: Final = "alerts"
ALERT_ID: Final = "alert_id"  # deterministic: the same alert re-derived after a restart has the same id
SEVERITY: Final = "severity"  # one of NEWS2_RESPONSES
ALERT_STATE: Final = "state"  # one of ALERT_STATES
ALERT_STATES: Final = ("opened", "escalated", "resolved")
ALERT_REASONS: Final = "reasons"  # the arms of the rule that held: model, news2_emergency, red_subscore
ALERT_FLAGS_RAISED: Final = "flags"  # the simple flags (ALERT_FLAGS) the reading raised
EVENT_TIME: Final = "event_time"  # when the state changed (the reading that changed it)
ALERTS_SCHEMA: Final = pa.schema(
    [
        pa.field(ALERT_ID, pa.string(), nullable=False),
        pa.field(ALERT_STATE, pa.string(), nullable=False),
        pa.field(PATIENT_KEY, pa.string(), nullable=False),  # the patient by key only (minimum necessary)
        pa.field(WARD, pa.string()),
        pa.field(BED, pa.string()),
        pa.field(SEVERITY, pa.string(), nullable=False),
        pa.field(ALERT_REASONS, pa.list_(pa.string()), nullable=False),
        pa.field(NEWS2_SCORE, pa.int8()),
        *(pa.field(news2_subscore_column(p), pa.int8()) for p in NEWS2_PARAMETERS),
        pa.field(ALERT_FLAGS_RAISED, pa.list_(pa.string()), nullable=False),
        pa.field(ANOMALY_SCORE, pa.float64()),
        pa.field(MODEL_VERSION, pa.string()),
        *(pa.field(v.name, pa.float64()) for v in VITAL_SIGNS),  # the reading that changed the state
        pa.field(WINDOW_START, _UTC_US, nullable=False),  # the readings the state change is about
        pa.field(WINDOW_END, _UTC_US, nullable=False),
        pa.field(EVENT_TIME, _UTC_US, nullable=False),
        pa.field(EVENT_DATE, pa.date32(), nullable=False),
    ]
)

# The identity map: every pseudonymous key the stream has seen, with the raw id it stands for, so
# that the tables keyed by ``PATIENT_KEY`` alone can be re-identified by whoever may (the identity
# dataset's view, the dashboard's detail page), admitted patients or not. Restricted like ``patients``.
# Appended by the patient shards when a key is new to their state; a shard that lost its state
# appends its keys again, so readers keep one row per key.
PATIENT_KEYS_SCHEMA: Final = pa.schema(
    [
        pa.field(PATIENT_KEY, pa.string(), nullable=False),
        pa.field(PATIENT_ID, pa.string(), nullable=False),
        pa.field(FIRST_SEEN, _UTC_US, nullable=False),  # the earliest reading of the batch that added it
    ]
)
PATIENT_KEYS_KEY: Final = (PATIENT_KEY,)

# The audit row of one erasure (``vitals_lake.erasure``): the pseudonymous key, never the patient id.
ERASURE_LOG_SCHEMA: Final = pa.schema(
    [
        pa.field("erased_at", _UTC_US, nullable=False),
        pa.field(PATIENT_KEY, pa.string(), nullable=False),
        pa.field("requested_by", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("rows_deleted", pa.int64(), nullable=False),
        pa.field("rows_by_table", pa.string(), nullable=False),  # JSON: {table: rows}
        pa.field("vacuumed", pa.bool_(), nullable=False),  # the files are gone from history too
    ]
)

Layer = Literal[
    "bronze",
    "silver",
    "gold",
    "quarantine",
    "silver_commits",
    "dq_metrics",
    "diagnosis_hourly",
    "rolling",
    "bronze_admissions",
    "patients",
    "diagnoses",
    "alerts",
    "erasure_log",
    "patient_keys",
]


@dataclass(frozen=True)
class TableSpec:
    """A Delta table of the lake: its name, schema and partition columns (dates, and Gold's window
    length; never patient_id)."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...]
    # Upserted tables also partition by the hour of this column (``EVENT_HOUR``): Delta's MERGE
    # rewrites every file holding a matched row, and a date partition upserted all day is one file.
    hour_of: str | None = None
    # The column whose UTC date is ``EVENT_DATE``: a time range on it selects date partitions.
    dated_by: str | None = None
    # Days a date partition is kept (None: until deleted); maintenance deletes older partitions and
    # BigQuery expires them (a deployment overrides: ``--retention-days``, ``warehouse_retention_days``).
    retention_days: int | None = None
    # "payloads": the records as received (Bronze, quarantine), nearly every value distinct. Their
    # files skip dictionaries and use ZSTD level 1: 716,132 readings made 32 MB of Bronze against
    # 63 MB with the default (Snappy, dictionaries), for the same 0.6 CPU-s in 100,000-row commits.
    holds: Literal["columns", "payloads"] = "columns"

    @property
    def date_partition(self) -> str | None:
        """The date partition column retention counts by (None: the table has none)."""
        return self.partition_by[0] if self.partition_by else None

    @property
    def lake_schema(self) -> pa.Schema:
        """The Delta table's schema: the contract's, plus the layout column of an hourly table."""
        if self.hour_of is None:
            return self.schema
        return self.schema.append(pa.field(EVENT_HOUR, pa.int8(), nullable=False))

    @property
    def lake_partition_by(self) -> tuple[str, ...]:
        return (*self.partition_by, EVENT_HOUR) if self.hour_of else self.partition_by


# Default retention, days. Raw payloads and admission files (names, dates of birth) only as long as a
# replay or a reload may need them; quarantine long enough to investigate a feed; the clinical tables
# (Silver, Gold, alerts, trends) two years. The identity tables (patients: current admissions;
# patient_keys: the key map) have no retention of their own; the commit log and references are small.
TABLES: Final[dict[Layer, TableSpec]] = {
    "bronze": TableSpec(BRONZE_TABLE, BRONZE_SCHEMA, (INGEST_DATE,), retention_days=30, holds="payloads"),
    "silver": TableSpec(SILVER_TABLE, SILVER_SCHEMA, (EVENT_DATE,), dated_by=TIMESTAMP, retention_days=730),
    "gold": TableSpec(
        GOLD_TABLE,
        GOLD_SCHEMA,
        (EVENT_DATE, WINDOW_SECONDS),
        hour_of=WINDOW_START,
        dated_by=WINDOW_START,
        retention_days=730,
    ),
    "quarantine": TableSpec(
        QUARANTINE_TABLE, QUARANTINE_SCHEMA, (INGEST_DATE,), retention_days=90, holds="payloads"
    ),
    "silver_commits": TableSpec(SILVER_COMMITS_TABLE, SILVER_COMMITS_SCHEMA, ()),
    "dq_metrics": TableSpec(DQ_METRICS_TABLE, DQ_METRICS_SCHEMA, (EVENT_DATE,), retention_days=400),
    "diagnosis_hourly": TableSpec(
        DIAGNOSIS_HOURLY_TABLE,
        DIAGNOSIS_HOURLY_SCHEMA,
        (EVENT_DATE,),
        dated_by=WINDOW_START,
        retention_days=730,
    ),
    "rolling": TableSpec(
        ROLLING_TABLE,
        ROLLING_SCHEMA,
        (EVENT_DATE,),
        hour_of=WINDOW_START,
        dated_by=WINDOW_START,
        retention_days=730,
    ),
    "bronze_admissions": TableSpec(
        BRONZE_ADMISSIONS_TABLE, BRONZE_ADMISSIONS_SCHEMA, (INGEST_DATE,), retention_days=30, holds="payloads"
    ),
    "patients": TableSpec(PATIENTS_TABLE, PATIENTS_SCHEMA, ()),
    "diagnoses": TableSpec(DIAGNOSIS_TABLE, DIAGNOSIS_SCHEMA, ()),
    "alerts": TableSpec(ALERTS_TABLE, ALERTS_SCHEMA, (EVENT_DATE,), retention_days=730),
    "erasure_log": TableSpec(ERASURE_LOG_TABLE, ERASURE_LOG_SCHEMA, ()),
    "patient_keys": TableSpec(PATIENT_KEYS_TABLE, PATIENT_KEYS_SCHEMA, ()),
}


def patient_column(schema: pa.Schema) -> str | None:
    """How a table's rows name their patient: by the raw ``PATIENT_ID`` where the table keeps it, else
    by the pseudonymous ``PATIENT_KEY`` (Silver, Gold, the alerts, the rolling means); None when they
    name none."""
    for name in (PATIENT_ID, PATIENT_KEY):
        if name in schema.names:
            return name
    return None


def patient_match(schema: pa.Schema, *, patient_id: str, patient_key: str) -> tuple[str, str] | None:
    """(column, value) that finds one patient's rows in a table of this schema (``patient_column``,
    with the id or the key to look for); None when the table names no patient."""
    column = patient_column(schema)
    if column is None:
        return None
    return column, patient_id if column == PATIENT_ID else patient_key
