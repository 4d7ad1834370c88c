# Jobs beside the stream, on the pipeline's image (so they run the same vitals_lake code):
# Delta maintenance (vitals_lake.maintenance) and the admission-file loader (pipelines.load_admissions).
module "maintenance_job" {
  source = "./modules/scheduled_job"
  count  = var.image_tag == null ? 0 : 1

  name        = "${var.name_prefix}-delta-maintenance"
  description = "Expire partitions past their retention, compact, z-order, checkpoint and vacuum every Delta table"
  project_id  = var.project_id
  region      = var.region
  image       = local.image
  command     = ["python", "-m", "vitals_lake.maintenance"]
  args = concat(
    ["--lake", local.lake_uri, "--json"],
    var.maintenance_vacuum_delete ? ["--vacuum-delete"] : [],
    flatten([for table, days in var.lake_retention_days : ["--retention-days", "${table}=${days == 0 ? "forever" : days}"]]),
  )
  service_account_email         = google_service_account.maintenance.email
  invoker_service_account_email = google_service_account.scheduler.email
  schedule                      = var.maintenance_schedule
  time_zone                     = var.schedule_time_zone
  timeout                       = "10800s"
  memory                        = "4Gi"
  cpu                           = "2"
  kms_key_name                  = var.kms_key_name
  labels                        = local.labels

  depends_on = [google_storage_managed_folder_iam_member.lake_tables]
}

module "admissions_job" {
  source = "./modules/scheduled_job"
  count  = var.image_tag == null ? 0 : 1

  name        = "${var.name_prefix}-load-admissions"
  description = "Load new admission files from the landing bucket into the lake (each file once); keep ref_diagnosis_mapping current in BigQuery"
  project_id  = var.project_id
  region      = var.region
  image       = local.image
  command     = ["python", "-m", "pipelines.load_admissions"]
  args = [
    "--landing", local.landing_uri,
    "--reference", local.reference_uri,
    "--lake", local.lake_uri,
    "--require-key",
    "--bigquery",
  ]
  env = {
    VITALS_GCP_PROJECT = var.project_id
    VITALS_BQ_DATASET  = local.dataset_id
    VITALS_BQ_LOCATION = var.bigquery_location
  }
  secret_env = {
    VITALS_PSEUDONYM_KEY = google_secret_manager_secret.secrets["pseudonym_key"].secret_id
  }
  service_account_email         = google_service_account.admissions.email
  invoker_service_account_email = google_service_account.scheduler.email
  schedule                      = var.admissions_schedule
  time_zone                     = var.schedule_time_zone
  timeout                       = "1800s"
  kms_key_name                  = var.kms_key_name
  labels                        = local.labels

  depends_on = [
    google_storage_managed_folder_iam_member.lake_tables,
    google_storage_bucket_iam_member.admissions_landing,
    google_secret_manager_secret_iam_member.readers,
    google_bigquery_dataset.warehouse,
    google_project_iam_member.admissions_job_user,
    google_bigquery_table.tables,
  ]
}
