output "buckets" {
  description = "Cloud Storage buckets by purpose."
  value = {
    lake     = module.lake_bucket.name
    staging  = module.staging_bucket.name
    function = module.function_bucket.name
    landing  = module.landing_bucket.name
  }
}

output "lake_uri" {
  description = "The lake root the pipeline writes (--lake)."
  value       = local.lake_uri
}

output "model_uri" {
  description = "Where to publish signed anomaly-model versions (--model-uri); the pipeline picks new ones up live."
  value       = local.model_uri
}

output "admissions" {
  description = "Where admission files and the diagnosis mapping go."
  value = {
    incoming  = "${local.landing_uri}/"
    reference = local.reference_uri
  }
}

output "pubsub" {
  description = "Topics and subscriptions."
  value = {
    vitals_topic             = google_pubsub_topic.vitals.id
    vitals_subscription      = google_pubsub_subscription.vitals.id
    vitals_dead_letter_topic = google_pubsub_topic.vitals_dead_letter.id
    vitals_dead_letter_sub   = google_pubsub_subscription.vitals_dead_letter.id
    alerts_topic             = google_pubsub_topic.alerts.id
    alerts_dead_letter_topic = google_pubsub_topic.alerts_dead_letter.id
    alerts_dead_letter_sub   = google_pubsub_subscription.alerts_dead_letter.id
  }
}

output "bigquery_dataset" {
  description = "PROJECT.DATASET of the warehouse (--bigquery-dataset; `python -m dashboard.looker_link --dataset` takes its DATASET)."
  value       = "${var.project_id}.${google_bigquery_dataset.warehouse.dataset_id}"
}

output "bigquery_reporting_dataset" {
  description = "PROJECT.DATASET of the reporting views analysts and Looker Studio read."
  value       = "${var.project_id}.${google_bigquery_dataset.views["reporting"].dataset_id}"
}

output "bigquery_identity_dataset" {
  description = "PROJECT.DATASET of the identity view (patient_key to patient_id)."
  value       = "${var.project_id}.${google_bigquery_dataset.views["identity"].dataset_id}"
}

output "bigquery_views" {
  description = "The views deployed from sql/views/, in creation order."
  value       = local.names.bigquery.views
}

output "secrets" {
  description = "Secret Manager secret ids (add versions with gcloud; see docs/deploy.md)."
  value       = { for k, s in google_secret_manager_secret.secrets : k => s.secret_id }
}

output "service_accounts" {
  description = "Service-account emails by component."
  value = {
    dataflow       = google_service_account.dataflow.email
    alert_notifier = google_service_account.alert_notifier.email
    alert_trigger  = google_service_account.alert_trigger.email
    function_build = google_service_account.function_build.email
    image_build    = google_service_account.image_build.email
    maintenance    = google_service_account.maintenance.email
    admissions     = google_service_account.admissions.email
    scheduler      = google_service_account.scheduler.email
  }
}

# Everything infra/dataflow/flex.py needs to build, launch, update and drain the pipeline
# (`python infra/dataflow/flex.py --from-terraform infra/terraform ...`).
output "flex_template" {
  description = "Settings of the Dataflow Flex Template scripts."
  value = {
    project_id            = var.project_id
    region                = var.region
    image_repository      = local.image_repository
    template_prefix       = local.template_prefix
    staging_bucket        = module.staging_bucket.name
    service_account_email = google_service_account.dataflow.email
    build_service_account = google_service_account.image_build.id
    subnetwork            = google_compute_subnetwork.vitals.self_link
    kms_key_name          = var.kms_key_name
    job_name              = var.pipeline_job_name
    machine_type          = var.dataflow_machine_type
    num_workers           = var.dataflow_num_workers
    max_workers           = var.dataflow_max_workers
    parameters            = local.pipeline_parameters
  }
}

output "pipeline_job_id" {
  description = "Id of the streaming Dataflow job Terraform runs (null when it does not)."
  value       = one(google_dataflow_flex_template_job.vitals[*].job_id)
}

output "alert_function" {
  description = "The alert notifier function and its Eventarc trigger (null until deployed)."
  value = var.deploy_alert_function ? {
    name    = google_cloudfunctions2_function.alert_notifier[0].name
    trigger = google_cloudfunctions2_function.alert_notifier[0].event_trigger[0].trigger
  } : null
}

output "scheduled_jobs" {
  description = "Cloud Run jobs (null until image_tag is set)."
  value = var.image_tag == null ? null : {
    maintenance = module.maintenance_job[0].job_name
    admissions  = module.admissions_job[0].job_name
  }
}

output "kafka" {
  description = "The Kafka side: the managed cluster's bootstrap address and topic, or (external) the connector configuration to run in your own Kafka Connect."
  value = local.kafka_managed ? {
    mode              = "managed"
    bootstrap_servers = module.kafka[0].bootstrap_servers
    topic             = module.kafka[0].topic
    connector         = module.kafka[0].connector
    connector_config  = null
    } : {
    mode              = "external"
    bootstrap_servers = null
    topic             = local.names.kafka.vitals_topic
    connector         = null
    connector_config  = local.pubsub_sink_connector_config
  }
}
