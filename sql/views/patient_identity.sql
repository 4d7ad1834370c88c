-- One row per patient: the pseudonymous patient_key with the raw patient_id it stands for (from the
-- identity map, patient_keys, which holds every key the stream has seen, admitted or not), and the
-- patient's latest ward and bed from Gold. The only view that re-identifies a patient: Terraform
-- creates it in the restricted identity dataset (readers: var.identity_readers, clinicians'
-- re-identification path), never in the reporting dataset that analysts and Looker Studio read.
-- A shard that lost its state appends its keys again: the earliest sighting of each key is kept.
WITH identity_map AS (
  SELECT patient_key, patient_id, first_seen
  FROM `${project}.${dataset}.patient_keys`
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY patient_key ORDER BY first_seen) = 1
),
latest_minute AS (
  SELECT patient_key, ward, bed, window_start, last_reading_time
  FROM `${project}.${dataset}.gold_latest`
  WHERE window_seconds = 60
  QUALIFY ROW_NUMBER() OVER (PARTITION BY patient_key ORDER BY window_start DESC) = 1
)
SELECT
  m.patient_key,
  m.patient_id,
  g.ward,
  g.bed,
  g.window_start AS last_window_start,
  g.last_reading_time,
  m.first_seen
FROM identity_map AS m
LEFT JOIN latest_minute AS g ON g.patient_key = m.patient_key
