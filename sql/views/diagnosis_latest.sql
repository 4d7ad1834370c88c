-- Base view: the diagnosis reference (ref_diagnosis_mapping), newest load of each code.
-- The lake replaces the reference when the mapping file changes; the warehouse appends each load
-- with its loaded_at. A code dropped from the file keeps its last description here.
SELECT *
FROM `${project}.${dataset}.ref_diagnosis_mapping`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY diagnosis_code ORDER BY loaded_at DESC) = 1
