-- Base view: alert state changes, one row per (alert_id, state, event_time).
-- Alert events never change; a row appears twice only when an insert was retried (or a sync
-- re-sent it), so any one copy is kept.
SELECT *
FROM `${project}.${dataset}.alerts`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY alert_id, state, event_time) = 1
