-- Hourly vital-sign trends from the one-hour Gold windows, at two grains told apart by `scope`:
--   scope = 'patient'   one row per patient and hour: that hour's Gold means (patient_key set,
--                       ward as of the hour's latest reading, patients = 1)
--   scope = 'hospital'  one row per hour over every patient (patient_key and ward NULL): means
--                       weighted by each patient's reading count of that vital (the mean of all
--                       readings, not the mean of patient means)
-- Filter on scope first. hour_start is the window start (UTC). anomaly_score_mean is the mean
-- score of the scored readings; high_risk_patients counts patients whose hour reached "high".
WITH hours AS (
  SELECT *
  FROM `${project}.${dataset}.gold_latest`
  WHERE window_seconds = 3600
)
SELECT
  'patient' AS scope,
  window_start AS hour_start,
  patient_key,
  ward,
  CAST(1 AS INT64) AS patients,
  CAST(reading_count AS INT64) AS readings,
  heart_rate_mean,
  temperature_mean,
  spo2_mean,
  respiration_rate_mean,
  systolic_mean,
  diastolic_mean,
  CAST(news2_score_max AS INT64) AS news2_score_max,
  anomaly_score_mean,
  CAST(alert_readings AS INT64) AS alert_readings,
  CAST(IF(risk_level = 'high', 1, 0) AS INT64) AS high_risk_patients
FROM hours
UNION ALL
SELECT
  'hospital' AS scope,
  window_start AS hour_start,
  CAST(NULL AS STRING) AS patient_key,
  CAST(NULL AS STRING) AS ward,
  COUNT(DISTINCT patient_key) AS patients,
  CAST(SUM(reading_count) AS INT64) AS readings,
  SAFE_DIVIDE(SUM(heart_rate_mean * heart_rate_count), SUM(heart_rate_count)) AS heart_rate_mean,
  SAFE_DIVIDE(SUM(temperature_mean * temperature_count), SUM(temperature_count)) AS temperature_mean,
  SAFE_DIVIDE(SUM(spo2_mean * spo2_count), SUM(spo2_count)) AS spo2_mean,
  SAFE_DIVIDE(SUM(respiration_rate_mean * respiration_rate_count), SUM(respiration_rate_count)) AS respiration_rate_mean,
  SAFE_DIVIDE(SUM(systolic_mean * systolic_count), SUM(systolic_count)) AS systolic_mean,
  SAFE_DIVIDE(SUM(diastolic_mean * diastolic_count), SUM(diastolic_count)) AS diastolic_mean,
  CAST(MAX(news2_score_max) AS INT64) AS news2_score_max,
  SAFE_DIVIDE(SUM(anomaly_score_mean * scored_readings), SUM(scored_readings)) AS anomaly_score_mean,
  CAST(SUM(alert_readings) AS INT64) AS alert_readings,
  COUNT(DISTINCT IF(risk_level = 'high', patient_key, NULL)) AS high_risk_patients
FROM hours
GROUP BY window_start
