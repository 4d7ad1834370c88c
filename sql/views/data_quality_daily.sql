-- Data quality per day (UTC date of the batch's processing-time window, dq_metrics.event_date),
-- layer, rule and action (drop | warn | fail):
--   batches       batches the rule ran on
--   checked_rows / passed_rows / failed_rows   summed over those batches
--   failure_rate  failed_rows / checked_rows (NULL when no row was checked)
SELECT
  event_date AS day,
  layer,
  rule,
  action,
  COUNT(*) AS batches,
  CAST(SUM(checked_rows) AS INT64) AS checked_rows,
  CAST(SUM(passed_rows) AS INT64) AS passed_rows,
  CAST(SUM(failed_rows) AS INT64) AS failed_rows,
  SAFE_DIVIDE(SUM(failed_rows), SUM(checked_rows)) AS failure_rate
FROM `${project}.${dataset}.dq_metrics_dedup`
GROUP BY 1, 2, 3, 4
