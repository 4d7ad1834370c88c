# The alert notifier (Cloud Functions 2nd gen, functions/alert_notifier/, entry point `notify`, a
# CloudEvent function) triggered by every message on the alerts topic. It emails and webhooks
# clinicians, and records what it sent in Firestore so a redelivered alert is sent once.
# Only what the function deploys (as its own .gcloudignore says): main.py, requirements.txt, notifier/,
# alert_event.schema.json.
data "archive_file" "alert_notifier" {
  type        = "zip"
  source_dir  = local.function_dir
  output_path = "${path.module}/.build/alert_notifier.zip"
  excludes    = local.alert_function_excludes
}

resource "google_storage_bucket_object" "alert_notifier_source" {
  count = var.deploy_alert_function ? 1 : 0

  # Named by content: a changed source is a new object, which redeploys the function.
  name   = "alert_notifier/${data.archive_file.alert_notifier.output_md5}.zip"
  bucket = module.function_bucket.name
  source = data.archive_file.alert_notifier.output_path
}

locals {
  alert_function_excludes = [
    ".gcloudignore",
    ".ruff_cache/**",
    "**/__pycache__/**",
    "**/*.pyc",
    "README.md",
    "routing.example.yaml",
    "ruff.toml",
    "tests/**",
    "var/**",
  ]

  # The routing config is mounted as a file from its Secret Manager secret (it names clinicians).
  alert_routing_dir  = "/etc/vitals-notifier"
  alert_routing_file = "routing.json"

  # Secrets the routing config may name -> their key in names.json. The function resolves NAME from
  # $NAME_SECRET (a Secret Manager resource name, re-read within 10 minutes after a rotation).
  alert_function_secrets = {
    SMTP_PASSWORD       = "smtp_password"
    WEBHOOK_SIGNING_KEY = "webhook_signing_key"
    SLACK_WEBHOOK_URL   = "slack_webhook_url"
  }

  # Environment of the function (names as functions/alert_notifier reads them).
  alert_function_env = merge(
    {
      NOTIFIER_CONFIG             = "${local.alert_routing_dir}/${local.alert_routing_file}"
      NOTIFIER_STATE              = "firestore"
      NOTIFIER_FIRESTORE_PROJECT  = var.project_id
      NOTIFIER_FIRESTORE_DATABASE = var.firestore_database
    },
    { for name, key in local.alert_function_secrets : "${name}_SECRET" => google_secret_manager_secret.secrets[key].id },
  )

  # Every secret the routing config names must be one the function can read.
  alert_routing_secret_refs = var.alert_routing == null ? [] : compact(concat(
    [try(var.alert_routing.smtp.password_secret, null)],
    flatten([
      for name, hook in try(var.alert_routing.webhooks, {}) : [try(hook.url_secret, null), try(hook.signing_secret, null)]
    ]),
  ))

  # Firestore collections of the idempotency records (functions/alert_notifier/notifier/state.py);
  # their documents carry expire_at, which the TTL policies below act on.
  alert_state_collections = ["alert_deliveries", "alert_dead_letters"]
}

resource "google_secret_manager_secret_version" "alert_routing" {
  count = var.alert_routing == null ? 0 : 1

  secret      = google_secret_manager_secret.secrets["alert_routing"].id
  secret_data = jsonencode(var.alert_routing)
}

resource "google_cloudfunctions2_function" "alert_notifier" {
  count = var.deploy_alert_function ? 1 : 0

  name        = "${var.name_prefix}-alert-notifier"
  location    = var.region
  description = "Emails and webhooks clinicians about vitals alerts (from the alerts topic)"

  build_config {
    runtime         = "python311"
    entry_point     = "notify"
    service_account = google_service_account.function_build.id

    source {
      storage_source {
        bucket = module.function_bucket.name
        object = google_storage_bucket_object.alert_notifier_source[0].name
      }
    }
  }

  service_config {
    available_memory               = "256M"
    timeout_seconds                = 60
    min_instance_count             = 0
    max_instance_count             = var.alert_function_max_instances
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.alert_notifier.email
    environment_variables          = local.alert_function_env

    secret_volumes {
      mount_path = local.alert_routing_dir
      project_id = var.project_id
      secret     = google_secret_manager_secret.secrets["alert_routing"].secret_id

      versions {
        version = "latest"
        path    = local.alert_routing_file
      }
    }
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.alerts.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.alert_trigger.email
  }

  lifecycle {
    precondition {
      condition     = var.alert_routing != null
      error_message = "deploy_alert_function needs alert_routing (see functions/alert_notifier/routing.example.yaml)."
    }
    precondition {
      condition     = alltrue([for s in local.alert_routing_secret_refs : contains(keys(local.alert_function_secrets), s)])
      error_message = "alert_routing names a secret the function cannot read; use SMTP_PASSWORD, WEBHOOK_SIGNING_KEY or SLACK_WEBHOOK_URL."
    }
  }

  depends_on = [
    google_secret_manager_secret_version.alert_routing,
    google_secret_manager_secret_iam_member.readers,
    google_project_iam_member.notifier_firestore,
    google_project_iam_member.function_build_sources,
    google_project_iam_member.function_build_artifacts,
    google_project_iam_member.build_log_writers,
    google_storage_bucket_iam_member.function_build_source_bucket,
    google_firestore_database.alerts,
  ]
}

resource "google_firestore_field" "alert_state_ttl" {
  for_each = var.deploy_alert_function ? toset(local.alert_state_collections) : toset([])

  project    = var.project_id
  database   = var.firestore_database
  collection = each.value
  field      = "expire_at"

  ttl_config {}

  depends_on = [google_firestore_database.alerts]
}

# Eventarc pushes each alert to the function's underlying Cloud Run service as the trigger's account.
resource "google_cloud_run_v2_service_iam_member" "alert_trigger_invoker" {
  count = var.deploy_alert_function ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.alert_notifier[0].name
  role     = "roles/run.invoker"
  member   = google_service_account.alert_trigger.member
}

# Eventarc creates (and owns) the push subscription of the trigger, so Terraform cannot give it a
# dead-letter policy. This runs gcloud once per trigger to add one (and exponential retry backoff):
# an alert that keeps failing lands in the alerts dead-letter topic instead of expiring.
resource "terraform_data" "alert_trigger_dead_letter" {
  count = var.deploy_alert_function && var.alert_trigger_dead_letter ? 1 : 0

  triggers_replace = [
    google_cloudfunctions2_function.alert_notifier[0].event_trigger[0].trigger,
    google_pubsub_topic.alerts_dead_letter.id,
    var.max_delivery_attempts,
  ]

  provisioner "local-exec" {
    command = "bash ${path.module}/scripts/trigger_dead_letter.sh"
    environment = {
      PROJECT               = var.project_id
      REGION                = var.region
      TRIGGER               = google_cloudfunctions2_function.alert_notifier[0].event_trigger[0].trigger
      DEAD_LETTER_TOPIC     = google_pubsub_topic.alerts_dead_letter.id
      MAX_DELIVERY_ATTEMPTS = tostring(var.max_delivery_attempts)
      PUBSUB_SERVICE_AGENT  = local.pubsub_service_agent
    }
  }
}
