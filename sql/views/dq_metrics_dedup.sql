-- Base view: data-quality metrics, one row per (batch_id, layer, rule).
-- Metrics rows never change; duplicates only come from retried inserts, so any one copy is kept.
SELECT *
FROM `${project}.${dataset}.dq_metrics`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY batch_id, layer, rule) = 1
