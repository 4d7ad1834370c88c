# --- Where -----------------------------------------------------------------------------------------
variable "project_id" {
  description = "The Google Cloud project to deploy into (it must exist, with billing enabled)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id: 6-30 lowercase letters, digits and hyphens."
  }
}

variable "region" {
  description = "Region for every regional resource (Dataflow, Cloud Run, Pub/Sub storage, Kafka, secrets)."
  type        = string
  default     = "europe-west2"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west2 or us-central1."
  }
}

variable "bigquery_location" {
  description = "BigQuery dataset location (a multi-region such as EU or US, or a region). Keep it with the data's residency."
  type        = string
  default     = "EU"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9-]{1,40}$", var.bigquery_location))
    error_message = "bigquery_location must be a BigQuery location such as EU, US or europe-west2."
  }
}

variable "bucket_location" {
  description = "Location of the Cloud Storage buckets; null means var.region (patient data stays in one region)."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_location == null || can(regex("^[A-Za-z][A-Za-z0-9-]{1,40}$", var.bucket_location))
    error_message = "bucket_location must be a Cloud Storage location such as EU, EUROPE-WEST2 or US-CENTRAL1."
  }
}

variable "name_prefix" {
  description = "Prefix of bucket, service-account and job names (bucket names are <project_id>-<name_prefix>-<purpose>)."
  type        = string
  default     = "vitals"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.name_prefix))
    error_message = "name_prefix must be 2-12 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "bigquery_dataset" {
  description = "BigQuery dataset id; null means the code's default (vitals_warehouse, from generated/names.json)."
  type        = string
  default     = null

  validation {
    condition     = var.bigquery_dataset == null || can(regex("^[A-Za-z0-9_]{1,1024}$", var.bigquery_dataset))
    error_message = "bigquery_dataset must be letters, digits and underscores."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))
    ])
    error_message = "Label keys and values must be lowercase letters, digits, underscores or hyphens (keys start with a letter)."
  }
}

# --- Protection and encryption -----------------------------------------------------------------------
variable "kms_key_name" {
  description = "Optional Cloud KMS key (CMEK) for buckets, Pub/Sub topics, BigQuery, secrets and the Dataflow job; null means Google-managed keys. It must be in a location compatible with every resource (the region)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be projects/P/locations/L/keyRings/R/cryptoKeys/K."
  }
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete non-empty buckets, the BigQuery tables and the Firestore database. Keep false for real patient data."
  type        = bool
  default     = false
}

variable "enable_data_access_audit_logs" {
  description = "Record Data Access audit logs (reads and writes) for Cloud Storage, BigQuery and Secret Manager: who touched patient data."
  type        = bool
  default     = true
}

# --- Storage lifecycle -------------------------------------------------------------------------------
variable "lake_prefix" {
  description = "The lake's folder in the lake bucket (gs://<bucket>/<prefix>/<table>/); null: the contract's (generated/names.json, \"lake\"). Every job and each table's managed folder follow it: change it only to move the lake (migrate-lake, a rebuild from Bronze), with lake_previous_prefix naming the old one meanwhile (docs/deploy.md)."
  type        = string
  default     = null

  validation {
    condition     = var.lake_prefix == null || can(regex("^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$", var.lake_prefix))
    error_message = "lake_prefix must be a relative path of lowercase letters, digits, '.', '_', '-', without leading or trailing '/'."
  }
}

variable "lake_noncurrent_version_days" {
  description = "Days a replaced or deleted lake object (Delta data files removed by vacuum, rewritten checkpoints) is kept as a noncurrent version before deletion."
  type        = number
  default     = 30

  validation {
    condition     = var.lake_noncurrent_version_days >= 1 && var.lake_noncurrent_version_days <= 3650
    error_message = "lake_noncurrent_version_days must be 1..3650."
  }
}

variable "lake_previous_prefix" {
  description = "While a lake moves to a new prefix (migrate-lake, a rebuild from Bronze, a re-keying): the old prefix, whose tables keep their managed folders and grants so the copy can read them. Unset (null) once the old prefix is checked and deleted."
  type        = string
  default     = null

  validation {
    condition     = var.lake_previous_prefix == null || can(regex("^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$", var.lake_previous_prefix))
    error_message = "lake_previous_prefix must be a relative path of lowercase letters, digits, '.', '_', '-', without leading or trailing '/'."
  }
}

variable "staging_retention_days" {
  description = "Days Dataflow staging and temp files are kept."
  type        = number
  default     = 14

  validation {
    condition     = var.staging_retention_days >= 1 && var.staging_retention_days <= 365
    error_message = "staging_retention_days must be 1..365."
  }
}

variable "landing_retention_days" {
  description = "Days an admission file stays in the landing bucket (it is in bronze_admissions once loaded)."
  type        = number
  default     = 90

  validation {
    condition     = var.landing_retention_days >= 7 && var.landing_retention_days <= 3650
    error_message = "landing_retention_days must be 7..3650."
  }
}

# --- Pub/Sub -----------------------------------------------------------------------------------------
variable "message_retention_duration" {
  description = "How long topics and subscriptions keep messages (acknowledged ones too on the pipeline's subscription, so it can be seeked back to replay)."
  type        = string
  default     = "604800s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.message_retention_duration)) && tonumber(trimsuffix(var.message_retention_duration, "s")) >= 600 && tonumber(trimsuffix(var.message_retention_duration, "s")) <= 604800
    error_message = "message_retention_duration must be \"<seconds>s\" between 600s and 604800s (7 days)."
  }
}

variable "ack_deadline_seconds" {
  description = "Ack deadline of the pipeline's subscription (Dataflow extends it while it works)."
  type        = number
  default     = 60

  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be 10..600."
  }
}

variable "pipeline_max_delivery_attempts" {
  description = "Delivery attempts before a reading goes to the patient-vitals dead-letter topic (Pub/Sub allows 5..100). High: Dataflow redelivers what a restarted or updated worker had pulled."
  type        = number
  default     = 100

  validation {
    condition     = var.pipeline_max_delivery_attempts >= 5 && var.pipeline_max_delivery_attempts <= 100
    error_message = "pipeline_max_delivery_attempts must be 5..100."
  }
}

variable "max_delivery_attempts" {
  description = "Delivery attempts before an alert goes to the vitals-alerts dead-letter topic (Pub/Sub allows 5..100; with the 10-600 s backoff, 20 attempts span hours)."
  type        = number
  default     = 20

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be 5..100."
  }
}

variable "warehouse_retention_days" {
  description = "Days a BigQuery table keeps a partition, by table name, overriding the contract's retention (gold_patient_summary and alerts 730, dq_metrics 400, dead_letter 90); 0 keeps partitions forever. Keep it equal to the lake's (the maintenance job's --retention-days)."
  type        = map(number)
  default     = {}

  validation {
    condition     = alltrue([for days in values(var.warehouse_retention_days) : days >= 0 && floor(days) == days])
    error_message = "warehouse_retention_days values must be whole days, 0 for no expiry."
  }
}

variable "model_publisher_members" {
  description = "IAM members besides the training service account who may sign and publish anomaly-model versions (write the models bucket, read the model signing key), e.g. [\"group:ml-team@example.org\"]."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.model_publisher_members : can(regex("^(user|group|serviceAccount|domain):[^ ]+$", m))])
    error_message = "model_publisher_members must be user:, group:, serviceAccount: or domain: members (never allUsers or allAuthenticatedUsers)."
  }
}

variable "publisher_members" {
  description = "IAM members allowed to publish readings to the patient-vitals topic directly (the simulator, a device gateway), e.g. [\"user:alice@example.org\"]."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.publisher_members : can(regex("^(user|group|serviceAccount|domain):[^ ]+$", m))])
    error_message = "publisher_members must be user:, group:, serviceAccount: or domain: members (never allUsers or allAuthenticatedUsers)."
  }
}

variable "landing_writer_members" {
  description = "IAM members allowed to upload admission files into the landing bucket (the hospital's export job)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.landing_writer_members : can(regex("^(user|group|serviceAccount|domain):[^ ]+$", m))])
    error_message = "landing_writer_members must be user:, group:, serviceAccount: or domain: members."
  }
}

variable "lake_operators" {
  description = "IAM members who run the lake's operator commands (forget-patient, recovery, quarantine replays, inspect, migrate-lake): Storage Object User on every table's managed folder, identity tables included. Usually a small on-call group; empty by default."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.lake_operators : can(regex("^(user|group|serviceAccount|domain):[^ ]+$", m))])
    error_message = "lake_operators must be user:, group:, serviceAccount: or domain: members."
  }
}

variable "analyst_members" {
  description = "IAM members who read the reporting views (BigQuery Data Viewer on the reporting dataset, Job User on the project): Looker Studio data source owners and analysts. They see patients by pseudonymous key only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.analyst_members : can(regex("^(user|group|serviceAccount|domain):[^ ]+$", m))])
    error_message = "analyst_members must be user:, group:, serviceAccount: or domain: members."
  }
}

variable "identity_readers" {
  description = "IAM members who may re-identify a patient: BigQuery Data Viewer on the identity dataset (patient_key to patient_id), Job User on the project. Clinicians' tools; Looker Studio's patient-identity data source with viewer's credentials."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.identity_readers : can(regex("^(user|group|serviceAccount|domain):[^ ]+$", m))])
    error_message = "identity_readers must be user:, group:, serviceAccount: or domain: members."
  }
}

# --- Network -----------------------------------------------------------------------------------------
variable "subnet_cidr" {
  description = "CIDR of the subnet Dataflow workers and the Kafka cluster use (private IPs, Private Google Access)."
  type        = string
  default     = "10.20.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be an IPv4 CIDR block such as 10.20.0.0/20."
  }
}

# --- The pipeline (Dataflow Flex Template) ------------------------------------------------------------
variable "image_tag" {
  description = "Tag of the vitals-lake image and template built by `make flex-build` (the script prints it). null: nothing that runs the image exists yet (the Dataflow job, the maintenance and admissions jobs); apply again with the tag after the first build."
  type        = string
  default     = null

  validation {
    condition     = var.image_tag == null || can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a Docker tag: letters, digits, underscores, periods and hyphens (at most 128)."
  }
}

variable "launch_pipeline" {
  description = "Let Terraform run the streaming Dataflow job (once image_tag is set). Set false to launch, update and drain it with the infra/dataflow/flex.py scripts instead: never both."
  type        = bool
  default     = true
}

variable "pipeline_job_name" {
  description = "Name of the streaming Dataflow job."
  type        = string
  default     = "vitals-lake-stream"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,62}[a-z0-9])?$", var.pipeline_job_name))
    error_message = "pipeline_job_name must be lowercase letters, digits and hyphens (at most 64)."
  }
}

variable "dataflow_machine_type" {
  description = "Worker machine type."
  type        = string
  default     = "n2-standard-2"

  validation {
    condition     = can(regex("^[a-z0-9]+-[a-z0-9-]+$", var.dataflow_machine_type))
    error_message = "dataflow_machine_type must be a Compute Engine machine type such as n2-standard-2."
  }
}

variable "dataflow_num_workers" {
  description = "Initial number of workers."
  type        = number
  default     = 1

  validation {
    condition     = var.dataflow_num_workers >= 1 && var.dataflow_num_workers <= 100
    error_message = "dataflow_num_workers must be 1..100."
  }
}

variable "dataflow_max_workers" {
  description = "Autoscaling ceiling (the Delta writers commit from one shard per table, so more workers mostly help validation and scoring)."
  type        = number
  default     = 3

  validation {
    condition     = var.dataflow_max_workers >= 1 && var.dataflow_max_workers <= 100
    error_message = "dataflow_max_workers must be 1..100."
  }
}

variable "pipeline_shards" {
  description = "Patient shards of the streaming job (its --shards): the unit of parallelism and of the pipeline's keyed state. Keep it the same across job restarts and in-place updates: a changed count rebuilds the state from the lake."
  type        = number
  default     = 64

  validation {
    condition     = var.pipeline_shards >= 1 && var.pipeline_shards <= 4096 && floor(var.pipeline_shards) == var.pipeline_shards
    error_message = "pipeline_shards must be a whole number 1..4096."
  }
}

variable "pipeline_parameters" {
  description = "Extra template parameters (names from infra/dataflow/metadata.json), e.g. { alert_persistence_seconds = \"90\" }."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.pipeline_parameters : can(regex("^[a-z][a-z0-9_]*$", k))])
    error_message = "pipeline_parameters keys must be template parameter names (lowercase, underscores)."
  }

  validation {
    condition     = !contains(keys(var.pipeline_parameters), "lake")
    error_message = "The pipeline's lake follows lake_prefix (with the jobs and the tables' grants): set lake_prefix, not pipeline_parameters.lake."
  }
}

# --- Scheduled jobs (Cloud Run jobs + Cloud Scheduler, same image) -------------------------------------
variable "maintenance_schedule" {
  description = "Cron schedule of Delta maintenance (compaction, z-order, checkpoint, vacuum) of finished partitions. After Gold's allowed lateness has passed."
  type        = string
  default     = "0 1 * * *"

  validation {
    condition     = length(split(" ", var.maintenance_schedule)) == 5
    error_message = "maintenance_schedule must be a 5-field cron expression."
  }
}

variable "lake_retention_days" {
  description = "Days a lake table keeps a date partition, by table (layer) name, overriding the contract's retention (bronze 30, quarantine 90, bronze_admissions 30, dq_metrics 400, silver, gold, alerts and trends 730); 0 keeps them forever. The maintenance job deletes older partitions and vacuums their files."
  type        = map(number)
  default     = {}

  validation {
    condition     = alltrue([for days in values(var.lake_retention_days) : days >= 0 && floor(days) == days])
    error_message = "lake_retention_days values must be whole days, 0 for no expiry."
  }
}

variable "maintenance_vacuum_delete" {
  description = "Let maintenance delete files vacuum finds (older than the 168 h retention); false only lists them."
  type        = bool
  default     = true
}

variable "admissions_schedule" {
  description = "Cron schedule of the admission-file loader (each new patients_daily_file_*.csv is loaded once)."
  type        = string
  default     = "*/15 * * * *"

  validation {
    condition     = length(split(" ", var.admissions_schedule)) == 5
    error_message = "admissions_schedule must be a 5-field cron expression."
  }
}

variable "schedule_time_zone" {
  description = "Time zone of the schedules (tz database name)."
  type        = string
  default     = "Etc/UTC"
}

# --- Alerts (Cloud Function 2nd gen) ------------------------------------------------------------------
variable "deploy_alert_function" {
  description = "Deploy the alert notifier. Add the secret versions first (docs/deploy.md): the function reads them at start."
  type        = bool
  default     = false
}

variable "alert_routing" {
  description = "The notifier's routing config (who is told about which alerts, and how), as an object in the form of functions/alert_notifier/routing.example.yaml. Secrets are named, never written: password_secret, url_secret and signing_secret must be one of SMTP_PASSWORD, WEBHOOK_SIGNING_KEY, SLACK_WEBHOOK_URL (resolved from Secret Manager). Required with deploy_alert_function. Notifications carry the pseudonymous key only: include_patient_id = true is refused."
  type        = any
  default     = null

  validation {
    condition = var.alert_routing == null ? true : (
      !try(tobool(var.alert_routing.include_patient_id), false) &&
      alltrue([for route in try(var.alert_routing.routes, []) : !try(tobool(route.include_patient_id), false)])
    )
    error_message = "alert_routing: include_patient_id = true is no longer possible: the alert events carry the pseudonymous patient key, not the hospital's id (re-identify on the dashboard's patient page). Remove the setting."
  }
}

variable "alert_function_max_instances" {
  description = "Ceiling on concurrent function instances."
  type        = number
  default     = 5

  validation {
    condition     = var.alert_function_max_instances >= 1 && var.alert_function_max_instances <= 100
    error_message = "alert_function_max_instances must be 1..100."
  }
}

variable "alert_trigger_dead_letter" {
  description = "After deploying the function, give the subscription Eventarc creates for its trigger a dead-letter topic and retry backoff (runs gcloud through infra/terraform/scripts/trigger_dead_letter.sh: Terraform cannot manage that subscription)."
  type        = bool
  default     = true
}

variable "firestore_database" {
  description = "Firestore (Native mode) database that holds the function's idempotency records."
  type        = string
  default     = "(default)"

  validation {
    condition     = var.firestore_database == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database))
    error_message = "firestore_database must be (default) or 4-63 lowercase letters, digits and hyphens."
  }
}

variable "create_firestore_database" {
  description = "Create the Firestore database (false when the project already has it)."
  type        = bool
  default     = true
}

variable "firestore_location" {
  description = "Firestore location; null means var.region."
  type        = string
  default     = null
}

# --- Kafka ------------------------------------------------------------------------------------------
variable "kafka_mode" {
  description = "managed: a Managed Service for Apache Kafka cluster, its patient-vitals topic and a Connect cluster running the Pub/Sub sink connector (the production bridge). external: you bring your own Kafka and run the connector (or pipelines/kafka_bridge.py) yourself; the connector's configuration is an output."
  type        = string
  default     = "managed"

  validation {
    condition     = contains(["managed", "external"], var.kafka_mode)
    error_message = "kafka_mode must be managed or external."
  }
}

variable "kafka_partitions" {
  description = "Partitions of the patient-vitals Kafka topic (readings are keyed by patient)."
  type        = number
  default     = 4

  validation {
    condition     = var.kafka_partitions >= 1 && var.kafka_partitions <= 1000
    error_message = "kafka_partitions must be 1..1000."
  }
}

variable "kafka_vcpu_count" {
  description = "vCPUs of the Kafka cluster (at least 3)."
  type        = number
  default     = 3

  validation {
    condition     = var.kafka_vcpu_count >= 3
    error_message = "kafka_vcpu_count must be at least 3."
  }
}

variable "kafka_memory_gib" {
  description = "Memory of the Kafka cluster in GiB (1 to 8 GiB per vCPU)."
  type        = number
  default     = 3

  validation {
    condition     = var.kafka_memory_gib >= 3
    error_message = "kafka_memory_gib must be at least 3."
  }
}

variable "connect_vcpu_count" {
  description = "vCPUs of the Kafka Connect cluster (at least 3)."
  type        = number
  default     = 3

  validation {
    condition     = var.connect_vcpu_count >= 3
    error_message = "connect_vcpu_count must be at least 3."
  }
}

variable "connect_memory_gib" {
  description = "Memory of the Kafka Connect cluster in GiB."
  type        = number
  default     = 3

  validation {
    condition     = var.connect_memory_gib >= 3
    error_message = "connect_memory_gib must be at least 3."
  }
}

variable "connector_tasks" {
  description = "Tasks of the Pub/Sub sink connector (at most one per partition is useful)."
  type        = number
  default     = 2

  validation {
    condition     = var.connector_tasks >= 1 && var.connector_tasks <= 100
    error_message = "connector_tasks must be 1..100."
  }
}

# --- Monitoring (alert policies, dashboard, SLO: monitoring.tf; what each alert means: docs/runbook.md) --
variable "monitoring_email_addresses" {
  description = "Who Cloud Monitoring e-mails when an alert policy of the platform fires (the on-call data team, not clinicians)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.monitoring_email_addresses : can(regex("^[^@\\s]+@[^@\\s]+$", a))])
    error_message = "monitoring_email_addresses must be e-mail addresses."
  }
}

variable "monitoring_webhook_url" {
  description = "An https webhook (the hospital's incident tool) that Cloud Monitoring posts incidents to; null for none. Kept in Terraform state: use a URL whose token can be rotated."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.monitoring_webhook_url == null || startswith(coalesce(var.monitoring_webhook_url, "x"), "https://")
    error_message = "monitoring_webhook_url must be an https URL."
  }
}

variable "monitoring_thresholds" {
  description = "When the platform's alert policies fire. Seconds unless named otherwise; quarantine_ratio is a share of the gate's records over 15 minutes."
  type = object({
    dataflow_system_lag_s      = optional(number, 300)
    dataflow_data_freshness_s  = optional(number, 600)
    readings_backlog_age_s     = optional(number, 600)
    alert_trigger_backlog_s    = optional(number, 300)
    quarantine_ratio           = optional(number, 0.05)
    maintenance_max_silence_h  = optional(number, 26)
    admissions_max_silence_min = optional(number, 60)
  })
  default = {}

  validation {
    condition     = var.monitoring_thresholds.quarantine_ratio > 0 && var.monitoring_thresholds.quarantine_ratio < 1
    error_message = "monitoring_thresholds.quarantine_ratio must be between 0 and 1."
  }
}

variable "alert_latency_slo" {
  description = "The reading-to-alert SLO: the share (goal) of alert notifications sent within threshold_s seconds of the reading that raised them, over a rolling window of days."
  type = object({
    threshold_s = optional(number, 15)
    goal        = optional(number, 0.95)
    days        = optional(number, 28)
  })
  default = {}

  validation {
    condition     = var.alert_latency_slo.goal > 0 && var.alert_latency_slo.goal < 1 && var.alert_latency_slo.days >= 1 && var.alert_latency_slo.days <= 30
    error_message = "alert_latency_slo.goal must be between 0 and 1, days 1..30."
  }
}
