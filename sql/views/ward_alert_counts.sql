-- Alerts per ward, hour (UTC, of the state change's event_time) and severity, from the alert
-- events (one row per state change: opened, escalated, resolved).
--   opened_alerts / escalated_alerts / resolved_alerts  state changes of each kind
--   raised_alerts   distinct alerts opened or escalated to this severity in the hour
--   patients        distinct patients (pseudonymous patient_key) with such an alert
-- severity is the alert's severity after the change (one of low | low-medium | medium | high).
-- Patients without an admission record have no ward: they count under ward 'UNKNOWN'.
SELECT
  COALESCE(ward, 'UNKNOWN') AS ward,
  TIMESTAMP_TRUNC(event_time, HOUR) AS hour_start,
  severity,
  CAST(COUNTIF(state = 'opened') AS INT64) AS opened_alerts,
  CAST(COUNTIF(state = 'escalated') AS INT64) AS escalated_alerts,
  CAST(COUNTIF(state = 'resolved') AS INT64) AS resolved_alerts,
  COUNT(DISTINCT IF(state IN ('opened', 'escalated'), alert_id, NULL)) AS raised_alerts,
  COUNT(DISTINCT IF(state IN ('opened', 'escalated'), patient_key, NULL)) AS patients
FROM `${project}.${dataset}.alerts_dedup`
GROUP BY 1, 2, 3
