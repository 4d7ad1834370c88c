-- Every Gold window (one minute and one hour), its newest version, named by the pseudonymous
-- patient_key: gold_latest without the raw patient_id, for the reporting dataset that analysts and
-- Looker Studio read (the patient-detail page's minute-by-minute charts).
SELECT * EXCEPT (patient_id)
FROM `${project}.${dataset}.gold_latest`
