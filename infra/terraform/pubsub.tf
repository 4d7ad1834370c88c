# Readings: Kafka connector (or the simulator, or pipelines/kafka_bridge.py) -> patient-vitals -> Dataflow.
resource "google_pubsub_topic" "vitals" {
  name                       = local.names.pubsub.vitals_topic
  kms_key_name               = var.kms_key_name
  message_retention_duration = var.message_retention_duration # new subscriptions can replay a week

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

resource "google_pubsub_topic" "vitals_dead_letter" {
  name         = local.names.pubsub.vitals_dead_letter_topic
  kms_key_name = var.kms_key_name

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

# Alert state changes the pipeline publishes; the notifier function is triggered by them.
resource "google_pubsub_topic" "alerts" {
  name                       = local.names.pubsub.alerts_topic
  kms_key_name               = var.kms_key_name
  message_retention_duration = var.message_retention_duration

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

resource "google_pubsub_topic" "alerts_dead_letter" {
  name         = local.names.pubsub.alerts_dead_letter_topic
  kms_key_name = var.kms_key_name

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

# The pipeline's subscription. Acknowledged messages are retained so the subscription can be seeked
# back to a time to replay (the recovery path after a lake restore). Note: Dataflow acknowledges a
# message once its first stage has persisted it and does not NACK (Google documents dead-letter topics
# as unsupported by Dataflow), so the policy, at the maximum attempts, only catches messages Dataflow
# never manages to take; it is no substitute for the pipeline's quarantine.
resource "google_pubsub_subscription" "vitals" {
  name  = local.names.pubsub.vitals_subscription
  topic = google_pubsub_topic.vitals.id

  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = true

  expiration_policy {
    ttl = "" # never expires while the pipeline is stopped
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.vitals_dead_letter.id
    max_delivery_attempts = var.pipeline_max_delivery_attempts
  }
}

# Dead-lettered messages are kept for inspection and replay (a topic without a subscription drops them).
resource "google_pubsub_subscription" "vitals_dead_letter" {
  name  = local.names.pubsub.vitals_dead_letter_subscription
  topic = google_pubsub_topic.vitals_dead_letter.id

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "alerts_dead_letter" {
  name  = local.names.pubsub.alerts_dead_letter_subscription
  topic = google_pubsub_topic.alerts_dead_letter.id

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }
}

# Pub/Sub's service agent forwards dead letters: it publishes to the dead-letter topics and
# acknowledges on the source subscriptions.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = {
    vitals = google_pubsub_topic.vitals_dead_letter.name
    alerts = google_pubsub_topic.alerts_dead_letter.name
  }

  topic  = each.value
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  subscription = google_pubsub_subscription.vitals.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

resource "google_pubsub_topic_iam_member" "vitals_publishers" {
  for_each = toset(var.publisher_members)

  topic  = google_pubsub_topic.vitals.name
  role   = "roles/pubsub.publisher"
  member = each.value
}
