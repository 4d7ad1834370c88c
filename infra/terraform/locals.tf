# Every name the code also uses comes from generated/names.json, written from vitals_lake/contract.py by
# `python -m deploy.infra_names --write` (tests/infra checks it is current). Nothing here
# spells a topic, subscription, table or view name by hand.
data "google_project" "this" {
  project_id = var.project_id
}

locals {
  names = jsondecode(file("${path.module}/generated/names.json"))

  repo_root    = "${path.module}/../.."
  views_dir    = "${local.repo_root}/sql/views"
  function_dir = "${local.repo_root}/functions/alert_notifier"

  labels          = merge(var.labels, { app = "vitals-lake", managed-by = "terraform" })
  bucket_location = coalesce(var.bucket_location, upper(var.region))
  dataset_id      = coalesce(var.bigquery_dataset, local.names.bigquery.default_dataset)
  project_number  = data.google_project.this.number

  # Google-managed service agents that act on our resources.
  pubsub_service_agent = "serviceAccount:service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  kafka_service_agent  = "serviceAccount:service-${local.project_number}@gcp-sa-managedkafka.iam.gserviceaccount.com"

  buckets = {
    lake     = "${var.project_id}-${var.name_prefix}-lake"
    staging  = "${var.project_id}-${var.name_prefix}-dataflow"
    function = "${var.project_id}-${var.name_prefix}-functions"
    landing  = "${var.project_id}-${var.name_prefix}-landing"
    models   = "${var.project_id}-${var.name_prefix}-models"
  }

  lake_prefix   = coalesce(var.lake_prefix, local.names.lake.prefix)
  lake_uri      = "gs://${module.lake_bucket.name}/${local.lake_prefix}"
  model_uri     = "gs://${module.models_bucket.name}/${local.names.lake.model_prefix}"
  landing_uri   = "gs://${module.landing_bucket.name}/${local.names.admissions.incoming_prefix}"
  reference_uri = "gs://${module.landing_bucket.name}/${local.names.admissions.reference_prefix}/${local.names.admissions.diagnosis_mapping_file}"

  # The image `make flex-build` pushes, and the Flex Template spec it writes next to it.
  image_repository   = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/vitals-lake"
  image              = var.image_tag == null ? null : "${local.image_repository}:${var.image_tag}"
  template_prefix    = "gs://${module.staging_bucket.name}/templates"
  template_spec_path = var.image_tag == null ? null : "${local.template_prefix}/vitals-lake-${var.image_tag}.json"
  launch_pipeline    = var.launch_pipeline && var.image_tag != null

  # Template parameters of the streaming job (names from infra/dataflow/metadata.json).
  pipeline_parameters = merge(
    {
      subscription      = google_pubsub_subscription.vitals.id
      lake              = local.lake_uri
      model_uri         = local.model_uri
      alerts_topic      = google_pubsub_topic.alerts.id
      bigquery_dataset  = "${var.project_id}.${local.dataset_id}"
      bigquery_location = var.bigquery_location
      shards            = tostring(var.pipeline_shards)
    },
    var.pipeline_parameters,
  )

  # BigQuery views, level by level (a level reads only tables and lower levels), with the
  # ${project}.${dataset} placeholders of sql/views/*.sql filled in.
  view_levels  = local.names.bigquery.view_levels
  datasets     = merge({ warehouse = google_bigquery_dataset.warehouse }, google_bigquery_dataset.views)
  view_dataset = { for v, role in local.names.bigquery.view_datasets : v => local.datasets[role].dataset_id }
  view_sql = {
    for v in local.names.bigquery.views : v => trimsuffix(trimspace(templatefile("${local.views_dir}/${v}.sql", {
      project = var.project_id
      dataset = local.dataset_id
    })), ";")
  }

  kafka_managed = var.kafka_mode == "managed"

  # Days each warehouse table keeps a partition: the contract's retention unless overridden.
  warehouse_retention_days = {
    for name, table in local.names.bigquery.tables :
    name => lookup(var.warehouse_retention_days, name, table.retention_days) == 0 ? null : lookup(var.warehouse_retention_days, name, table.retention_days)
  }
}
