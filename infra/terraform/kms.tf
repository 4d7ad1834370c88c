# Optional CMEK: the service agents that encrypt on our behalf get the key, and only that key.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

data "google_bigquery_default_service_account" "bq" {
  project = var.project_id
}

resource "google_project_service_identity" "secretmanager" {
  provider = google-beta

  project = var.project_id
  service = "secretmanager.googleapis.com"

  depends_on = [google_project_service.enabled]
}

locals {
  kms_users = var.kms_key_name == null ? {} : {
    storage       = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
    bigquery      = "serviceAccount:${data.google_bigquery_default_service_account.bq.email}"
    pubsub        = local.pubsub_service_agent
    secretmanager = "serviceAccount:${google_project_service_identity.secretmanager.email}"
    dataflow      = "serviceAccount:service-${local.project_number}@dataflow-service-producer-prod.iam.gserviceaccount.com"
    compute       = "serviceAccount:service-${local.project_number}@compute-system.iam.gserviceaccount.com"
    artifacts     = "serviceAccount:service-${local.project_number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
    cloudrun      = "serviceAccount:service-${local.project_number}@serverless-robot-prod.iam.gserviceaccount.com"
    kafka         = local.kafka_service_agent
    firestore     = "serviceAccount:service-${local.project_number}@gcp-sa-firestore.iam.gserviceaccount.com"
  }
}

resource "google_kms_crypto_key_iam_member" "service_agents" {
  for_each = local.kms_users

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}
