output "bootstrap_servers" {
  description = "Bootstrap address of the Kafka cluster (SASL: OAUTHBEARER with Google credentials, or PLAIN with a service-account key)."
  value       = "bootstrap.${google_managed_kafka_cluster.this.cluster_id}.${var.region}.managedkafka.${var.project_id}.cloud.goog:9092"
}

output "topic" {
  description = "The Kafka topic readings are produced to."
  value       = google_managed_kafka_topic.vitals.topic_id
}

output "connector" {
  description = "Full name of the Pub/Sub sink connector."
  value       = google_managed_kafka_connector.pubsub_sink.name
}
