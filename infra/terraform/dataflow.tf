# The streaming pipeline as a Dataflow Flex Template job, once `make flex-build` has pushed the image
# and written the template spec for var.image_tag. The same image is the workers' SDK container, so
# the launcher and the workers run identical code and dependencies. Changing image_tag (or a
# parameter) updates the running job in place (Dataflow checks the update is compatible); destroying
# it drains, so in-flight batches are committed to the lake first.
resource "google_dataflow_flex_template_job" "vitals" {
  provider = google-beta
  count    = local.launch_pipeline ? 1 : 0

  name                    = var.pipeline_job_name
  region                  = var.region
  container_spec_gcs_path = local.template_spec_path
  sdk_container_image     = local.image
  parameters              = local.pipeline_parameters

  service_account_email   = google_service_account.dataflow.email
  staging_location        = "gs://${module.staging_bucket.name}/staging"
  temp_location           = "gs://${module.staging_bucket.name}/temp"
  subnetwork              = google_compute_subnetwork.vitals.self_link
  ip_configuration        = "WORKER_IP_PRIVATE"
  enable_streaming_engine = true
  machine_type            = var.dataflow_machine_type
  num_workers             = var.dataflow_num_workers
  max_workers             = var.dataflow_max_workers
  kms_key_name            = var.kms_key_name
  labels                  = local.labels

  on_delete                    = "drain"
  skip_wait_on_job_termination = false

  depends_on = [
    google_project_iam_member.dataflow_worker,
    google_pubsub_subscription_iam_member.dataflow_subscriber,
    google_pubsub_topic_iam_member.dataflow_alerts_publisher,
    google_storage_bucket_iam_member.dataflow_staging,
    google_storage_managed_folder_iam_member.lake_tables,
    google_bigquery_dataset.warehouse,
    google_secret_manager_secret_iam_member.readers,
    google_artifact_registry_repository_iam_member.dataflow_image_reader,
    google_compute_firewall.dataflow_internal,
    google_bigquery_table.tables,
  ]
}
