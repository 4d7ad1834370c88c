"""The catalogue: a description of every table and column, generated from the contract.

Units, LOINC codes, ranges and derivations come from the contract's own definitions
(:data:`~vitals_lake.contract.VITAL_SIGNS`, the NEWS2 parameters, the alert flags, the Gold statistics),
so a description cannot drift from what the pipeline computes. Where they go:

* BigQuery: every column's ``description`` in ``infra/terraform/generated/bq_schemas/`` and in the
  tables the warehouse sink creates; every table's description through ``names.json``;
* the lake: each Delta table's description when it is created;
* ``docs/data-model.md``: the description column of the generated tables.

:func:`describe` raises ``KeyError`` for a column it does not know, and a test describes every column of
every table, so a new column cannot ship undescribed.
"""

from __future__ import annotations

from typing import Final

from vitals_lake import contract as c

_STAT: Final = {
    "mean": "mean",
    "min": "lowest value",
    "max": "highest value",
    "last": "value of the latest reading",
}
_NEWS2_PARAMETER: Final = {
    c.RESPIRATION_RATE: "respiration rate",
    c.SPO2: "SpO2 (on the patient's scale)",
    c.SUPPLEMENTAL_OXYGEN: "supplemental oxygen (2 when on oxygen)",
    c.SYSTOLIC: "systolic blood pressure",
    c.HEART_RATE: "heart rate (pulse)",
    c.CONSCIOUSNESS: "consciousness (3 for anything but Alert)",
    c.TEMPERATURE: "temperature",
}
_FLAG: Final = {
    "tachycardia": "heart rate above its normal range",
    "bradycardia": "heart rate below its normal range",
    "hypoxia": "SpO2 below its normal range",
    "fever": "temperature above its normal range",
    "hypothermia": "temperature below its normal range",
    "hypotension": "systolic pressure below its normal range",
    "hypertension": "systolic pressure above its normal range",
    "tachypnoea": "respiration rate above its normal range",
}
_LABEL: Final = {
    c.HEART_RATE: "heart rate",
    c.TEMPERATURE: "body temperature",
    c.SPO2: "oxygen saturation (SpO2, pulse oximetry)",
    c.RESPIRATION_RATE: "respiration rate",
    c.SYSTOLIC: "systolic blood pressure",
    c.DIASTOLIC: "diastolic blood pressure",
}
_WINDOW: Final = "over the Gold window (one minute or one hour)"

COLUMNS: Final[dict[str, str]] = {
    # the reading and where it came from
    c.EVENT_ID: "The reading's unique id, assigned by the device; de-duplication key of Silver.",
    c.PATIENT_ID: "The hospital's patient id (a direct identifier): restricted tables only.",
    c.FIRST_SEEN: "When the stream first showed this key: the earliest reading of the batch that added it.",
    c.DEVICE_ID: "The monitor or wearable that sent the reading.",
    c.TIMESTAMP: "When the reading was taken (the device's clock), in UTC.",
    c.SUPERSEDES: "The event id of a reading this one corrects (a FHIR amended or corrected observation).",
    c.RAW: "The record's bytes exactly as received.",
    c.RECORD_REF: "Where the record came from, e.g. kafka:patient-vitals:0:1234 (lineage to Bronze).",
    c.SOURCE: "How the record arrived: kafka, pubsub or file.",
    c.KAFKA_TOPIC: "Kafka topic of the record (null when it did not come through Kafka).",
    c.KAFKA_PARTITION: "Kafka partition of the record.",
    c.KAFKA_OFFSET: "Kafka offset of the record in its partition.",
    c.KAFKA_KEY: "Kafka message key of the record.",
    c.KAFKA_TIMESTAMP: "Kafka timestamp of the record, in UTC.",
    c.PUBSUB_MESSAGE_ID: "Pub/Sub message id of the envelope that carried the record.",
    c.PUBLISH_TIME: "When the Pub/Sub message was published, in UTC.",
    c.INGEST_TIME: "When the pipeline received the record, in UTC.",
    c.INGEST_DATE: "UTC date of ingest_time (the partition column).",
    c.EVENT_DATE: "UTC date of the row's event time (the partition column).",
    c.EVENT_HOUR: "UTC hour of the row's event time (lake layout only).",
    # quarantine
    c.RULES: "The expectations the record failed (see dq_metrics and docs/data-model.md).",
    c.DETAIL: "The offending value or the parser's message.",
    c.RAW_BYTES: f"The record's size as received, in bytes (quarantine keeps at most {c.RAW_CAP_BYTES}).",
    c.RAW_TRUNCATED: f"True when only the first {c.RAW_CAP_BYTES} bytes are kept here (Bronze has all).",
    c.RECORD_PART: "The part of the record that was rejected (a FHIR Bundle entry); null: all of it.",
    # clinical, per reading
    c.TEMPERATURE_CONVERTED: "True when the device sent Fahrenheit; temperature holds Celsius.",
    c.CONSCIOUSNESS: "ACVPU level: A alert, C new confusion, V voice, P pain, U unresponsive.",
    c.SUPPLEMENTAL_OXYGEN: "True when the patient is on supplemental oxygen (a NEWS2 parameter).",
    c.MEAN_ARTERIAL_PRESSURE: "Mean arterial pressure in mm[Hg]: (systolic + 2 x diastolic) / 3.",
    c.SHOCK_INDEX: "Shock index: heart rate / systolic pressure (above 1.0 suggests shock).",
    c.SPO2_SCALE: "NEWS2 SpO2 scale: 1, or 2 for hypercapnic respiratory failure (from the admission).",
    c.NEWS2_SCORE: "NEWS2 aggregate score, 0-20 (Royal College of Physicians, 2017).",
    c.NEWS2_MISSING: "NEWS2 parameters absent from the reading (the score is then a lower bound).",
    c.NEWS2_RESPONSE: "NEWS2 clinical response: low, low-medium, medium or high.",
    c.ANOMALY_SCORE: "The anomaly model's score against the patient's own baseline (higher: more unusual).",
    c.IS_ANOMALY: "True when anomaly_score is at or above the model's threshold.",
    c.MODEL_VERSION: "The anomaly model version that scored the reading.",
    c.ALERT_OPEN: "True while the combined alert rule (model and NEWS2, held for a while) has an alert open.",
    c.ALERT_OPENED: "True on the reading that opened the alert.",
    # enrichment from the admission (no direct identifier)
    c.PATIENT_KEY: "Pseudonymous patient key: HMAC-SHA256 of the patient id under the deployment's secret.",
    c.WARD: "The patient's ward, from the latest admission file.",
    c.BED: "The patient's bed, from the latest admission file.",
    c.AGE_BAND: "The patient's age in ten-year bands, e.g. 60-69.",
    c.DIAGNOSIS_CODE: "Admission diagnosis, ICD-10 code (UNKNOWN before the admission file arrives).",
    c.DIAGNOSIS_DESCRIPTION: "The ICD-10 code's description, from the diagnosis mapping.",
    c.KNOWN_PATIENT: "False while no admission record has been seen (kept, flagged, back-filled later).",
    # admissions
    c.NAME: "The patient's name (a direct identifier): restricted tables only.",
    c.AGE: "The patient's age in years at admission (restricted).",
    c.GENDER: "The patient's gender as recorded at admission (restricted).",
    c.ADMISSION_DATE: "The admission date.",
    c.HYPERCAPNIC: "Hypercapnic respiratory failure at admission (selects NEWS2 SpO2 scale 2).",
    c.SOURCE_FILE: "The admission or mapping file the row was loaded from.",
    c.SOURCE_LINE: "The line of that file.",
    c.LOADED_AT: "When the loader stored the row, in UTC.",
    # Gold and trends
    c.WINDOW_SECONDS: "The window's length in seconds: 60 (one minute) or 3600 (one hour).",
    c.WINDOW_START: "Start of the window, in UTC (inclusive).",
    c.WINDOW_END: "End of the window, in UTC (exclusive).",
    c.READING_COUNT: "Readings counted in the window.",
    c.LAST_READING_TIME: "Time of the window's latest reading, in UTC.",
    c.UPDATED_AT: "When this version of the row was written; views keep the newest per key.",
    c.RISK_LEVEL: "Highest NEWS2 response in the window, raised to medium while an alert was open.",
    c.SCORED_READINGS: "Readings in the window the anomaly model scored.",
    c.ANOMALOUS_READINGS: "Readings in the window at or above the model's threshold.",
    c.ALERT_READINGS: "Readings in the window with an alert open.",
    c.PATIENTS_COUNT: "Distinct patients with readings in the hour.",
    c.HIGH_RISK_PATIENTS: "Patients whose risk level reached high in the hour.",
    # commits and data quality
    c.BATCH_ID: "The pipeline batch (commit interval and shard) that wrote the row.",
    c.VALID_ROWS: "Readings of the batch that passed the gate.",
    c.INSERTED_ROWS: "Readings of the batch appended to Silver.",
    c.DUPLICATE_ROWS: "Readings of the batch dropped as duplicates (their event id was already stored).",
    c.COMMITTED_AT: "When the batch was committed, in UTC.",
    c.LAYER: "The layer the rule was checked at.",
    c.RULE: "The data-quality rule (expectation) name.",
    c.ACTION: "What failing the rule does: drop (to quarantine), warn (kept, counted) or fail.",
    c.CHECKED_ROWS: "Records the rule was checked on in the batch.",
    c.PASSED_ROWS: "Records that passed the rule.",
    c.FAILED_ROWS: "Records that failed the rule.",
    # alerts
    c.ALERT_ID: "The alert's id: HMAC of its opening time under the patient's key (same on re-derivation).",
    c.ALERT_STATE: "The alert's state change: opened, escalated or resolved.",
    c.SEVERITY: "The alert's severity: the NEWS2 response (low, low-medium, medium, high).",
    c.ALERT_REASONS: "The arms of the alert rule that held: model, news2_emergency, red_subscore.",
    c.ALERT_FLAGS_RAISED: "The simple flags the reading raised (tachycardia, hypoxia, ...).",
    c.EVENT_TIME: "When the state changed: the time of the reading that changed it, in UTC.",
    # erasure log
    "requested_by": "Who asked for the patient to be forgotten.",
    "reason": "Why (a request reference).",
    "erased_at": "When the patient was removed, in UTC.",
    "rows_deleted": "Rows deleted, over every table.",
    "rows_by_table": "Rows deleted per table, as JSON.",
    "vacuumed": "True when the old files were removed at once (otherwise by the next vacuum).",
    # the warehouse's dead letters
    "table_name": "The warehouse table BigQuery refused the row for.",
    "insert_id": "The row's insert id (the same on a replay: BigQuery de-duplicates on it).",
    "row_json": "The refused row as JSON (cut to fit the request limit when larger).",
    "error": "BigQuery's reason for refusing the row.",
    "failed_at": "When the row was refused, in UTC.",
}

TABLES: Final[dict[str, str]] = {
    c.BRONZE_TABLE: "Every raw reading as received, with its lineage (restricted; kept for replays).",
    c.SILVER_TABLE: "One row per valid, de-duplicated reading: typed, enriched from the admission, NEWS2 and"
    " anomaly scored.",
    c.QUARANTINE_TABLE: "Records that failed an expectation, with the rules, the detail and the raw bytes.",
    c.GOLD_TABLE: "Per patient, one-minute and one-hour windows: each vital's mean, lowest, highest, latest"
    " and count, NEWS2, flags, risk level and anomaly scores.",
    c.SILVER_COMMITS_TABLE: "One row per Silver commit: readings offered, inserted and dropped as"
    " duplicates.",
    c.DQ_METRICS_TABLE: "One row per data-quality rule per batch: records checked, passed and failed.",
    c.DIAGNOSIS_HOURLY_TABLE: "Per admission diagnosis and hour: patients, readings, vital means, worst"
    " NEWS2, flags and high-risk patients.",
    c.ROLLING_TABLE: "Per patient and minute: each vital's mean over the trailing"
    f" {c.ROLLING_MINUTES} minutes.",
    c.BRONZE_ADMISSIONS_TABLE: "Admission file rows as loaded (restricted: names and dates of birth).",
    c.PATIENTS_TABLE: "The identity table: each patient's latest admission, id and pseudonymous key"
    " (restricted).",
    c.DIAGNOSIS_TABLE: "ICD-10 codes and their descriptions (the diagnosis mapping).",
    c.ALERTS_TABLE: "Alert state changes (opened, escalated, resolved) as sent to the notifier.",
    c.ERASURE_LOG_TABLE: "One row per forgotten patient: who asked, why, when and what was deleted.",
    c.PATIENT_KEYS_TABLE: "The identity map: every pseudonymous key the stream has seen, with the raw"
    " patient id it stands for, admitted or not (restricted).",
    "dead_letter": "Rows BigQuery refused, with the error, until they are replayed"
    " (vitals-lake replay-dead-letters).",
}


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _vital(vital: c.VitalSign) -> str:
    lo, hi = vital.possible
    nlo, nhi = vital.normal
    return (
        f"{_capital(_LABEL[vital.name])} in {vital.unit} (LOINC {vital.loinc}); possible {lo:g}-{hi:g}"
        f" (outside: quarantined), normal {nlo:g}-{nhi:g} (outside: flagged)."
    )


def describe(column: str) -> str:
    """The description of a column of any lake or warehouse table (``KeyError`` when unknown)."""
    if column in COLUMNS:
        return COLUMNS[column]
    if column in c.VITALS_BY_NAME:
        return _vital(c.VITALS_BY_NAME[column])
    for vital in c.VITAL_SIGNS:
        unit = f"{vital.unit}, LOINC {vital.loinc}"
        if column == c.rolling_column(vital.name):
            return f"Mean {_LABEL[vital.name]} over the {c.ROLLING_MINUTES} minutes up to this one ({unit})."
        if column == c.gold_column(vital.name, "count"):
            return f"Readings in the window with a {_LABEL[vital.name]} value."
        for stat, text in _STAT.items():
            if column == c.gold_column(vital.name, stat):
                return f"{_capital(text)} of {_LABEL[vital.name]} {_WINDOW} ({unit})."
    for parameter, text in _NEWS2_PARAMETER.items():
        if column == c.news2_subscore_column(parameter):
            return f"NEWS2 sub-score (0-3) of {text}; null when the reading lacks it."
    for flag, text in _FLAG.items():
        if column == c.flag_column(flag):
            return f"Simple alert flag {flag}: {text}."
        if column == c.gold_column(c.flag_column(flag), "count"):
            return f"Readings in the window that raised {flag} ({text})."
    if column == c.gold_column(c.NEWS2_SCORE, "max"):
        return f"Highest NEWS2 score {_WINDOW}."
    if column == c.gold_column(c.ANOMALY_SCORE, "max"):
        return f"Highest anomaly score {_WINDOW}."
    if column == c.gold_column(c.ANOMALY_SCORE, "mean"):
        return f"Mean anomaly score {_WINDOW}."
    raise KeyError(f"no description for column {column!r}: add it to vitals_lake/catalogue.py")


def table_description(name: str) -> str:
    """The description of a lake or warehouse table by its table name (``KeyError`` when unknown)."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no description for table {name!r}: add it to vitals_lake/catalogue.py") from None
