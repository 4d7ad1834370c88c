variable "project_id" {
  description = "Project of the Kafka resources."
  type        = string
}

variable "region" {
  description = "Region of the Kafka and Connect clusters."
  type        = string
}

variable "cluster_id" {
  description = "Id of the Kafka cluster (the Connect cluster is <cluster_id>-connect)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,53}[a-z0-9])?$", var.cluster_id))
    error_message = "cluster_id must be lowercase letters, digits and hyphens (at most 55)."
  }
}

variable "subnet" {
  description = "Subnetwork the clusters are reachable in: projects/P/regions/R/subnetworks/S."
  type        = string
}

variable "topic_id" {
  description = "The Kafka topic readings are produced to."
  type        = string
}

variable "partitions" {
  description = "Partitions of the topic."
  type        = number
}

variable "retention_hours" {
  description = "Hours the topic keeps records (the replay window on the Kafka side)."
  type        = number
  default     = 168
}

variable "vcpu_count" {
  description = "vCPUs of the Kafka cluster."
  type        = number
}

variable "memory_gib" {
  description = "Memory of the Kafka cluster in GiB."
  type        = number
}

variable "connect_vcpu_count" {
  description = "vCPUs of the Connect cluster."
  type        = number
}

variable "connect_memory_gib" {
  description = "Memory of the Connect cluster in GiB."
  type        = number
}

variable "connector_id" {
  description = "Id of the Pub/Sub sink connector."
  type        = string
}

variable "connector_configs" {
  description = "Connector properties (connector.class, cps.project, cps.topic, converters ...); topics is set here."
  type        = map(string)
}

variable "kms_key_name" {
  description = "Optional CMEK of the Kafka cluster."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels of the clusters."
  type        = map(string)
  default     = {}
}
