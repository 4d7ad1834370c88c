-- One row per patient: the risk of the patient's latest one-minute Gold window, plus a trend.
-- Patients are named by their pseudonymous patient_key only: the raw id is in patient_identity.
--
-- risk_level is Gold's combined level (the highest NEWS2 response in the minute, raised to
-- "medium" while the alert rule had an alert open); risk_rank orders it (0 low .. 3 high).
-- Trend, relative to the patient's own latest minute (not the wall clock):
--   news2_last_hour      mean of the per-minute NEWS2 maxima over the 60 minutes ending with the
--                        latest minute (window_start in (latest - 60 min, latest])
--   news2_previous_hour  the same over the 60 minutes before that
--   news2_change         last hour minus previous hour
--   news2_trend          rising (change >= +1), falling (change <= -1), stable, or unknown when
--                        either hour has no NEWS2 (e.g. the patient has been monitored < 1 hour)
--   anomaly_last_hour / anomaly_previous_hour / anomaly_change: mean anomaly score of the scored
--                        readings in those hours (per-minute means weighted by scored_readings)
WITH minutes AS (
  SELECT *
  FROM `${project}.${dataset}.gold_latest`
  WHERE window_seconds = 60
),
latest AS (
  SELECT *
  FROM minutes
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY patient_key ORDER BY window_start DESC) = 1
),
hours AS (
  SELECT
    m.patient_key,
    m.news2_score_max,
    m.anomaly_score_mean,
    m.scored_readings,
    m.window_start > TIMESTAMP_SUB(l.window_start, INTERVAL 60 MINUTE) AS in_last_hour
  FROM minutes AS m
  JOIN latest AS l ON l.patient_key = m.patient_key
  WHERE m.window_start > TIMESTAMP_SUB(l.window_start, INTERVAL 120 MINUTE)
),
trend AS (
  SELECT
    patient_key,
    AVG(IF(in_last_hour, news2_score_max, NULL)) AS news2_last_hour,
    AVG(IF(in_last_hour, NULL, news2_score_max)) AS news2_previous_hour,
    SAFE_DIVIDE(
      SUM(IF(in_last_hour, anomaly_score_mean * scored_readings, NULL)),
      SUM(IF(in_last_hour, scored_readings, NULL))
    ) AS anomaly_last_hour,
    SAFE_DIVIDE(
      SUM(IF(in_last_hour, NULL, anomaly_score_mean * scored_readings)),
      SUM(IF(in_last_hour, NULL, scored_readings))
    ) AS anomaly_previous_hour
  FROM hours
  GROUP BY patient_key
)
SELECT
  l.patient_key,
  l.ward,
  l.bed,
  l.age_band,
  l.diagnosis_code,
  l.window_start,
  l.window_end,
  l.last_reading_time,
  l.risk_level,
  CAST(
    CASE l.risk_level
      WHEN 'low' THEN 0
      WHEN 'low-medium' THEN 1
      WHEN 'medium' THEN 2
      WHEN 'high' THEN 3
    END AS INT64
  ) AS risk_rank,
  CAST(l.news2_score_max AS INT64) AS news2_score_max,
  l.anomaly_score_max,
  l.anomaly_score_mean,
  CAST(l.reading_count AS INT64) AS reading_count,
  CAST(l.alert_readings AS INT64) AS alert_readings,
  t.news2_last_hour,
  t.news2_previous_hour,
  t.news2_last_hour - t.news2_previous_hour AS news2_change,
  CASE
    WHEN t.news2_last_hour IS NULL OR t.news2_previous_hour IS NULL THEN 'unknown'
    WHEN t.news2_last_hour - t.news2_previous_hour >= 1 THEN 'rising'
    WHEN t.news2_last_hour - t.news2_previous_hour <= -1 THEN 'falling'
    ELSE 'stable'
  END AS news2_trend,
  t.anomaly_last_hour,
  t.anomaly_previous_hour,
  t.anomaly_last_hour - t.anomaly_previous_hour AS anomaly_change
FROM latest AS l
JOIN trend AS t ON t.patient_key = l.patient_key
