-- Every Gold window (one minute and one hour), its newest version, named by the pseudonymous
-- patient_key (Gold holds no raw id): gold_latest for the reporting dataset that analysts and
-- Looker Studio read (the patient-detail page's minute-by-minute charts).
SELECT *
FROM `${project}.${dataset}.gold_latest`
