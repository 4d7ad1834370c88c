-- One row per patient: the latest measured value of each vital sign, from the one-minute Gold
-- windows. A vital missing from the latest minute (e.g. blood pressure measured every 15 minutes)
-- keeps its last measured value; <vital>_minute is the start of the minute it was measured in, so
-- a stale value is visible. Enrichment (ward, bed, ...), risk and NEWS2 are the latest minute's.
-- Patients are named by their pseudonymous patient_key only: the raw id is in patient_identity.
WITH minutes AS (
  SELECT *
  FROM `${project}.${dataset}.gold_latest`
  WHERE window_seconds = 60
),
filled AS (
  SELECT
    patient_key,
    ward,
    bed,
    age_band,
    diagnosis_code,
    window_start,
    last_reading_time,
    risk_level,
    CAST(news2_score_max AS INT64) AS news2_score_max,
    LAST_VALUE(heart_rate_last IGNORE NULLS) OVER history AS heart_rate,
    LAST_VALUE(IF(heart_rate_last IS NULL, NULL, window_start) IGNORE NULLS) OVER history AS heart_rate_minute,
    LAST_VALUE(temperature_last IGNORE NULLS) OVER history AS temperature,
    LAST_VALUE(IF(temperature_last IS NULL, NULL, window_start) IGNORE NULLS) OVER history AS temperature_minute,
    LAST_VALUE(spo2_last IGNORE NULLS) OVER history AS spo2,
    LAST_VALUE(IF(spo2_last IS NULL, NULL, window_start) IGNORE NULLS) OVER history AS spo2_minute,
    LAST_VALUE(respiration_rate_last IGNORE NULLS) OVER history AS respiration_rate,
    LAST_VALUE(IF(respiration_rate_last IS NULL, NULL, window_start) IGNORE NULLS) OVER history AS respiration_rate_minute,
    LAST_VALUE(systolic_last IGNORE NULLS) OVER history AS systolic,
    LAST_VALUE(IF(systolic_last IS NULL, NULL, window_start) IGNORE NULLS) OVER history AS systolic_minute,
    LAST_VALUE(diastolic_last IGNORE NULLS) OVER history AS diastolic,
    LAST_VALUE(IF(diastolic_last IS NULL, NULL, window_start) IGNORE NULLS) OVER history AS diastolic_minute
  FROM minutes
  WINDOW history AS (
    PARTITION BY patient_key
    ORDER BY window_start
    ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
  )
)
SELECT *
FROM filled
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY patient_key ORDER BY window_start DESC) = 1
