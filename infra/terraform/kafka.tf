# The Kafka side. kafka_mode = "managed": the cluster, its topic and the Pub/Sub sink connector below.
# kafka_mode = "external": nothing is created; run the same connector (output pubsub_sink_connector_config)
# in your own Kafka Connect, or pipelines/kafka_bridge.py, against the patient-vitals topic.
locals {
  pubsub_sink_connector_config = {
    "connector.class"     = "com.google.pubsub.kafka.sink.CloudPubSubSinkConnector"
    "name"                = "${var.name_prefix}-pubsub-sink"
    "tasks.max"           = tostring(var.connector_tasks)
    "topics"              = local.names.kafka.vitals_topic
    "cps.project"         = var.project_id
    "cps.topic"           = google_pubsub_topic.vitals.name
    "key.converter"       = "org.apache.kafka.connect.storage.StringConverter"
    "value.converter"     = "org.apache.kafka.connect.converters.ByteArrayConverter"
    "metadata.publish"    = "true"
    "headers.publish"     = "true"
    "orderingKeySource"   = "none"
    "maxBufferSize"       = "500"
    "maxDelayThresholdMs" = "250"
  }
}

module "kafka" {
  source = "./modules/kafka"
  count  = local.kafka_managed ? 1 : 0

  project_id         = var.project_id
  region             = var.region
  cluster_id         = "${var.name_prefix}-kafka"
  subnet             = "projects/${var.project_id}/regions/${var.region}/subnetworks/${google_compute_subnetwork.vitals.name}"
  topic_id           = local.names.kafka.vitals_topic
  partitions         = var.kafka_partitions
  vcpu_count         = var.kafka_vcpu_count
  memory_gib         = var.kafka_memory_gib
  connect_vcpu_count = var.connect_vcpu_count
  connect_memory_gib = var.connect_memory_gib
  connector_id       = "${var.name_prefix}-pubsub-sink"
  connector_configs  = local.pubsub_sink_connector_config
  kms_key_name       = var.kms_key_name
  labels             = local.labels

  depends_on = [google_pubsub_topic_iam_member.kafka_connector_publisher]
}

# The connector publishes as the Managed Kafka service agent: publisher on this one topic.
resource "google_pubsub_topic_iam_member" "kafka_connector_publisher" {
  count = local.kafka_managed ? 1 : 0

  topic  = google_pubsub_topic.vitals.name
  role   = "roles/pubsub.publisher"
  member = local.kafka_service_agent

  depends_on = [google_project_service.enabled]
}
