# One service account per component, each with only what it needs, bound on the narrowest resource
# that works (a bucket, a topic, a subscription, a secret, a dataset); project-level roles only where
# the permission exists at project level alone, and then with an IAM condition where one applies.
# No primitive roles (owner/editor/viewer) anywhere: tests/infra/test_terraform.py checks it.

resource "google_service_account" "dataflow" {
  account_id   = "${var.name_prefix}-dataflow"
  display_name = "Vitals Lake: Dataflow launcher and workers"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "alert_notifier" {
  account_id   = "${var.name_prefix}-alert-notifier"
  display_name = "Vitals Lake: alert notifier function (runtime)"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "alert_trigger" {
  account_id   = "${var.name_prefix}-alert-trigger"
  display_name = "Vitals Lake: Eventarc trigger that invokes the alert notifier"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "function_build" {
  account_id   = "${var.name_prefix}-function-build"
  display_name = "Vitals Lake: Cloud Build of the alert notifier"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "image_build" {
  account_id   = "${var.name_prefix}-image-build"
  display_name = "Vitals Lake: Cloud Build of the pipeline image (make flex-build)"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "maintenance" {
  account_id   = "${var.name_prefix}-maintenance"
  display_name = "Vitals Lake: scheduled Delta maintenance"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "admissions" {
  account_id   = "${var.name_prefix}-admissions"
  display_name = "Vitals Lake: scheduled admission-file loader"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "training" {
  account_id   = "${var.name_prefix}-training"
  display_name = "Vitals Lake: anomaly-model training (signs and publishes model versions)"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Vitals Lake: Cloud Scheduler, starts the Cloud Run jobs"

  depends_on = [google_project_service.enabled]
}

# --- Dataflow ---------------------------------------------------------------------------------------
# roles/dataflow.worker exists only at project level (workers lease work items of their job).
resource "google_project_iam_member" "dataflow_worker" {
  project = var.project_id
  role    = "roles/dataflow.worker"
  member  = google_service_account.dataflow.member
}

resource "google_pubsub_subscription_iam_member" "dataflow_subscriber" {
  for_each = toset(["roles/pubsub.subscriber", "roles/pubsub.viewer"])

  subscription = google_pubsub_subscription.vitals.name
  role         = each.value
  member       = google_service_account.dataflow.member
}

resource "google_pubsub_topic_iam_member" "dataflow_alerts_publisher" {
  topic  = google_pubsub_topic.alerts.name
  role   = "roles/pubsub.publisher"
  member = google_service_account.dataflow.member
}

resource "google_storage_bucket_iam_member" "dataflow_staging" {
  bucket = module.staging_bucket.name
  role   = "roles/storage.objectUser"
  member = google_service_account.dataflow.member
}

resource "google_artifact_registry_repository_iam_member" "dataflow_image_reader" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.dataflow.member
}

# --- Image build (make flex-build: gcloud builds submit --service-account ...) ---------------------------
resource "google_artifact_registry_repository_iam_member" "image_build_writer" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.image_build.member
}

resource "google_storage_bucket_iam_member" "image_build_staging" {
  bucket = module.staging_bucket.name
  role   = "roles/storage.objectUser" # the build's source upload and logs go to staging/cloudbuild/
  member = google_service_account.image_build.member
}

resource "google_project_iam_member" "build_log_writers" {
  for_each = {
    image    = google_service_account.image_build.member
    function = google_service_account.function_build.member
  }

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = each.value
}

# --- Alert function ---------------------------------------------------------------------------------------
# Firestore roles exist only at project level: the condition limits them to the one database.
resource "google_project_iam_member" "notifier_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.alert_notifier.member

  condition {
    title       = "only-${replace(replace(var.firestore_database, "(", ""), ")", "")}-database"
    description = "Idempotency records of the alert notifier, in its database only"
    expression  = "resource.name.startsWith(\"projects/${var.project_id}/databases/${var.firestore_database}\")"
  }
}

# The function's build reads the source Cloud Functions copies into its gcf-v2-sources bucket and
# pushes the image to its gcf-artifacts repository; both are created by the service, hence the
# conditions instead of resource-level bindings.
resource "google_project_iam_member" "function_build_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.function_build.member

  condition {
    title       = "function-sources-only"
    description = "Only the buckets Cloud Functions stages function sources in"
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${local.project_number}-\") || resource.name.startsWith(\"projects/_/buckets/${local.buckets.function}\")"
  }
}

resource "google_project_iam_member" "function_build_artifacts" {
  project = var.project_id
  role    = "roles/artifactregistry.writer"
  member  = google_service_account.function_build.member

  condition {
    title       = "gcf-artifacts-only"
    description = "Only the repository Cloud Functions keeps function images in"
    expression  = "resource.name.startsWith(\"projects/${var.project_id}/locations/${var.region}/repositories/gcf-artifacts\")"
  }
}

resource "google_storage_bucket_iam_member" "function_build_source_bucket" {
  bucket = module.function_bucket.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.function_build.member
}

# --- Scheduled jobs ---------------------------------------------------------------------------------------
resource "google_storage_bucket_iam_member" "admissions_landing" {
  bucket = module.landing_bucket.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.admissions.member
}

# --- Anomaly models ----------------------------------------------------------------------------------------
# Only the training account and var.model_publisher_members write models; the pipeline reads them.
resource "google_storage_bucket_iam_member" "model_writers" {
  for_each = toset(concat([google_service_account.training.member], var.model_publisher_members))

  bucket = module.models_bucket.name
  role   = "roles/storage.objectUser"
  member = each.value
}

resource "google_storage_bucket_iam_member" "dataflow_models" {
  bucket = module.models_bucket.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.dataflow.member
}

# --- The lake: per table, never per bucket ------------------------------------------------------------
# Each Delta table is a managed folder with its own IAM; nobody holds a role on the lake bucket
# itself, so the identity tables (silver_patients, patient_keys, bronze_admissions) are readable only
# by the principals granted them. Who gets which role on which table is vitals_lake/access.py,
# written into generated/names.json; tests/pipeline/test_lake_access.py runs each job and checks it
# touches nothing beyond its grants.
locals {
  lake_principals = {
    pipeline    = { pipeline = google_service_account.dataflow.member }
    admissions  = { admissions = google_service_account.admissions.member }
    maintenance = { maintenance = google_service_account.maintenance.member }
    training    = { training = google_service_account.training.member }
    operators   = { for m in toset(var.lake_operators) : m => m }
  }
  # The lake's prefix, and while a move to a new one runs, the previous one too (same grants).
  lake_prefixes = distinct(compact([local.lake_prefix, var.lake_previous_prefix]))
  lake_folders  = toset([for pair in setproduct(local.lake_prefixes, local.names.lake.tables) : join("/", pair)])
  # Keyed by folder and principal name (or the operator's member): known at plan time.
  lake_grants = merge([
    for pair in setproduct(local.lake_prefixes, local.names.lake.grants) : {
      for who, member in local.lake_principals[pair[1].principal] :
      "${pair[0]}/${pair[1].table}/${who}" => {
        folder = "${pair[0]}/${pair[1].table}", role = pair[1].role, member = member
      }
    }
  ]...)
}

resource "google_storage_managed_folder" "lake_tables" {
  for_each = local.lake_folders

  bucket        = module.lake_bucket.name
  name          = "${each.value}/"
  force_destroy = true # removing a folder removes its IAM only: the table's objects stay in the bucket
}

resource "google_storage_managed_folder_iam_member" "lake_tables" {
  for_each = local.lake_grants

  bucket         = module.lake_bucket.name
  managed_folder = google_storage_managed_folder.lake_tables[each.value.folder].name
  role           = each.value.role
  member         = each.value.member
}
