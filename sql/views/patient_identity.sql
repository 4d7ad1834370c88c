-- One row per patient: the pseudonymous patient_key with the raw patient_id it stands for, and the
-- patient's latest ward and bed. The only view that re-identifies a patient: Terraform creates it in
-- the restricted identity dataset (readers: var.identity_readers, clinicians' re-identification
-- path), never in the reporting dataset that analysts and Looker Studio read.
SELECT
  patient_key,
  patient_id,
  ward,
  bed,
  window_start AS last_window_start,
  last_reading_time
FROM `${project}.${dataset}.gold_latest`
WHERE window_seconds = 60
QUALIFY ROW_NUMBER() OVER (PARTITION BY patient_key ORDER BY window_start DESC) = 1
