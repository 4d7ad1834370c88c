# Secret containers: credential values never pass through Terraform (or its state); add their versions
# with gcloud (docs/deploy.md). The one exception is the notifier's routing config (not a credential,
# but it names clinicians), written from var.alert_routing in function.tf. Each reader is granted on
# the one secret it needs.
resource "google_secret_manager_secret" "secrets" {
  for_each = local.names.secrets

  secret_id = each.value

  replication {
    user_managed {
      replicas {
        location = var.region

        dynamic "customer_managed_encryption" {
          for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }
  }

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

locals {
  # secret key (names.json) -> members that read it
  secret_readers = {
    pseudonym_key = {
      dataflow   = google_service_account.dataflow.member
      admissions = google_service_account.admissions.member
    }
    # The training account and the model publishers sign (the private key); the pipeline verifies with
    # the public key only, so a worker cannot make a model it would serve.
    model_signing_key = merge(
      { training = google_service_account.training.member },
      { for m in var.model_publisher_members : "publisher-${m}" => m },
    )
    model_verify_key    = { dataflow = google_service_account.dataflow.member }
    smtp_password       = { notifier = google_service_account.alert_notifier.member }
    webhook_signing_key = { notifier = google_service_account.alert_notifier.member }
    slack_webhook_url   = { notifier = google_service_account.alert_notifier.member }
    alert_routing       = { notifier = google_service_account.alert_notifier.member }
  }
  secret_bindings = merge([
    for secret, readers in local.secret_readers : {
      for who, member in readers : "${secret}/${who}" => { secret = secret, member = member }
    }
  ]...)
}

resource "google_secret_manager_secret_iam_member" "readers" {
  for_each = local.secret_bindings

  secret_id = google_secret_manager_secret.secrets[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value.member
}
