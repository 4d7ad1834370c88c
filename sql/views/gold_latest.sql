-- Base view: Gold (gold_patient_summary) with only the newest version of each window.
-- Both warehouses append: a window re-sent with a newer updated_at is a new row, and a retried
-- insert may slip through BigQuery's best-effort de-duplication. Key and version are those of
-- warehouse/tables.py (a unit test checks that they agree). Every view reads Gold here.
SELECT *
FROM `${project}.${dataset}.gold_patient_summary`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY patient_key, window_seconds, window_start
  ORDER BY updated_at DESC
) = 1
