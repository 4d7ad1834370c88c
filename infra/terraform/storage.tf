# The Delta Lake (Bronze / Silver / Gold tables under lake/).
module "lake_bucket" {
  source = "./modules/bucket"

  name          = local.buckets.lake
  location      = local.bucket_location
  purpose       = "delta-lake"
  labels        = local.labels
  kms_key_name  = var.kms_key_name
  force_destroy = var.force_destroy
  lifecycle_rules = [
    # Files vacuum deleted (and superseded checkpoints) stay restorable for a while, then go.
    { action = "Delete", with_state = "ARCHIVED", days_since_noncurrent_time = var.lake_noncurrent_version_days },
    { action = "AbortIncompleteMultipartUpload", age = 1 },
  ]

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

# Dataflow staging and temp files, and the Flex Template specs (templates/).
module "staging_bucket" {
  source = "./modules/bucket"

  name          = local.buckets.staging
  location      = local.bucket_location
  purpose       = "dataflow-staging"
  labels        = local.labels
  kms_key_name  = var.kms_key_name
  force_destroy = var.force_destroy
  lifecycle_rules = [
    { action = "Delete", age = var.staging_retention_days, matches_prefix = ["staging/", "temp/"] },
    { action = "Delete", with_state = "ARCHIVED", days_since_noncurrent_time = 7 },
    { action = "AbortIncompleteMultipartUpload", age = 1 },
  ]

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

# Zipped source of the alert Cloud Function (one object per content hash).
module "function_bucket" {
  source = "./modules/bucket"

  name          = local.buckets.function
  location      = local.bucket_location
  purpose       = "function-source"
  labels        = local.labels
  kms_key_name  = var.kms_key_name
  force_destroy = true # only build artefacts live here
  lifecycle_rules = [
    { action = "Delete", with_state = "ARCHIVED", days_since_noncurrent_time = 30 },
    { action = "Delete", num_newer_versions = 5, with_state = "ARCHIVED" },
  ]

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

# Where the hospital drops its daily admission files (incoming/) and the diagnosis mapping
# (reference/); the scheduled loader reads them into the lake.
module "landing_bucket" {
  source = "./modules/bucket"

  name          = local.buckets.landing
  location      = local.bucket_location
  purpose       = "admission-landing"
  labels        = local.labels
  kms_key_name  = var.kms_key_name
  force_destroy = var.force_destroy
  lifecycle_rules = [
    { action = "Delete", age = var.landing_retention_days, matches_prefix = ["${local.names.admissions.incoming_prefix}/"] },
    { action = "Delete", with_state = "ARCHIVED", days_since_noncurrent_time = 30 },
    { action = "AbortIncompleteMultipartUpload", age = 1 },
  ]

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket_iam_member" "landing_writers" {
  for_each = toset(var.landing_writer_members)

  bucket = module.landing_bucket.name
  role   = "roles/storage.objectCreator"
  member = each.value
}

# The image of the pipeline and of the scheduled jobs (pushed by `make flex-build`).
resource "google_artifact_registry_repository" "images" {
  repository_id = "${var.name_prefix}-images"
  location      = var.region
  format        = "DOCKER"
  description   = "vitals-lake images: the Dataflow Flex Template launcher, its workers and the scheduled jobs"
  kms_key_name  = var.kms_key_name

  docker_config {
    immutable_tags = true
  }

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "7776000s" # 90 days, except the 10 most recent (kept above)
    }
  }

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

# Signed anomaly-model versions (anomaly/). A bucket of its own so that only the training job's account
# and the model publishers may write it: the pipeline, maintenance and admissions accounts, which write
# the lake, can only read a model (iam.tf), and the pipeline refuses one whose signature does not match.
module "models_bucket" {
  source = "./modules/bucket"

  name          = local.buckets.models
  location      = local.bucket_location
  purpose       = "anomaly-models"
  labels        = local.labels
  kms_key_name  = var.kms_key_name
  force_destroy = var.force_destroy
  lifecycle_rules = [
    { action = "Delete", with_state = "ARCHIVED", days_since_noncurrent_time = var.lake_noncurrent_version_days },
    { action = "AbortIncompleteMultipartUpload", age = 1 },
  ]

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}
