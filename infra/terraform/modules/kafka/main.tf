# Google Cloud Managed Service for Apache Kafka: the cluster devices (or their gateway) produce to,
# the patient-vitals topic, and a Kafka Connect cluster running Google's Pub/Sub sink connector
# (CloudPubSubSinkConnector): the managed production bridge from Kafka to the Pub/Sub topic the
# pipeline reads. One Kafka record becomes one Pub/Sub message (its value's bytes untouched); the
# Kafka topic, partition, offset and timestamp travel as message attributes.
terraform {
  required_providers {
    google = {
      source = "hashicorp/google"
    }
  }
}

resource "google_managed_kafka_cluster" "this" {
  cluster_id = var.cluster_id
  project    = var.project_id
  location   = var.region
  labels     = var.labels

  capacity_config {
    vcpu_count   = var.vcpu_count
    memory_bytes = var.memory_gib * 1073741824
  }

  gcp_config {
    kms_key = var.kms_key_name

    access_config {
      network_configs {
        subnet = var.subnet
      }
    }
  }

  rebalance_config {
    mode = "AUTO_REBALANCE_ON_SCALE_UP"
  }
}

resource "google_managed_kafka_topic" "vitals" {
  topic_id           = var.topic_id
  project            = var.project_id
  cluster            = google_managed_kafka_cluster.this.cluster_id
  location           = var.region
  partition_count    = var.partitions
  replication_factor = 3

  configs = {
    "cleanup.policy"      = "delete"
    "retention.ms"        = tostring(var.retention_hours * 3600000)
    "min.insync.replicas" = "2"
  }
}

resource "google_managed_kafka_connect_cluster" "this" {
  connect_cluster_id = "${var.cluster_id}-connect"
  project            = var.project_id
  location           = var.region
  kafka_cluster      = "projects/${var.project_id}/locations/${var.region}/clusters/${google_managed_kafka_cluster.this.cluster_id}"
  labels             = var.labels

  capacity_config {
    vcpu_count   = var.connect_vcpu_count
    memory_bytes = var.connect_memory_gib * 1073741824
  }

  gcp_config {
    access_config {
      network_configs {
        primary_subnet   = var.subnet
        dns_domain_names = ["${google_managed_kafka_cluster.this.cluster_id}.${var.region}.managedkafka.${var.project_id}.cloud.goog"]
      }
    }
  }
}

resource "google_managed_kafka_connector" "pubsub_sink" {
  connector_id    = var.connector_id
  project         = var.project_id
  connect_cluster = google_managed_kafka_connect_cluster.this.connect_cluster_id
  location        = var.region
  configs         = merge(var.connector_configs, { "topics" = google_managed_kafka_topic.vitals.topic_id })

  task_restart_policy {
    minimum_backoff = "60s"
    maximum_backoff = "1800s"
  }
}
