-- One row per diagnosis code over all one-hour Gold windows, with the code's description from the
-- diagnosis reference (newest load). A patient-hour counts under the diagnosis the patient had at
-- the hour's latest reading; patients not yet admitted count under 'UNKNOWN'.
--   patients             distinct patients
--   readings             readings (sum of the hours' reading counts)
--   <vital>_mean         mean of all readings of that vital (weighted by each hour's count)
--   news2_score_max      the worst NEWS2 seen
--   high_risk_patients   distinct patients with at least one hour at risk level "high"
--   high_risk_share      high_risk_patients / patients
--   first_hour / last_hour  the earliest and latest hour seen
WITH hours AS (
  SELECT
    *,
    COALESCE(diagnosis_code, 'UNKNOWN') AS code
  FROM `${project}.${dataset}.gold_latest`
  WHERE window_seconds = 3600
)
SELECT
  h.code AS diagnosis_code,
  d.diagnosis_description,
  COUNT(DISTINCT h.patient_key) AS patients,
  CAST(SUM(h.reading_count) AS INT64) AS readings,
  SAFE_DIVIDE(SUM(h.heart_rate_mean * h.heart_rate_count), SUM(h.heart_rate_count)) AS heart_rate_mean,
  SAFE_DIVIDE(SUM(h.temperature_mean * h.temperature_count), SUM(h.temperature_count)) AS temperature_mean,
  SAFE_DIVIDE(SUM(h.spo2_mean * h.spo2_count), SUM(h.spo2_count)) AS spo2_mean,
  SAFE_DIVIDE(SUM(h.respiration_rate_mean * h.respiration_rate_count), SUM(h.respiration_rate_count)) AS respiration_rate_mean,
  SAFE_DIVIDE(SUM(h.systolic_mean * h.systolic_count), SUM(h.systolic_count)) AS systolic_mean,
  SAFE_DIVIDE(SUM(h.diastolic_mean * h.diastolic_count), SUM(h.diastolic_count)) AS diastolic_mean,
  CAST(MAX(h.news2_score_max) AS INT64) AS news2_score_max,
  COUNT(DISTINCT IF(h.risk_level = 'high', h.patient_key, NULL)) AS high_risk_patients,
  SAFE_DIVIDE(COUNT(DISTINCT IF(h.risk_level = 'high', h.patient_key, NULL)), COUNT(DISTINCT h.patient_key)) AS high_risk_share,
  MIN(h.window_start) AS first_hour,
  MAX(h.window_start) AS last_hour
FROM hours AS h
LEFT JOIN `${project}.${dataset}.diagnosis_latest` AS d ON d.diagnosis_code = h.code
GROUP BY h.code, d.diagnosis_description
