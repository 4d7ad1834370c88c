variable "name" {
  description = "Name of the Cloud Run job (the schedule is <name>-schedule)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$", var.name))
    error_message = "name must be lowercase letters, digits and hyphens (at most 49)."
  }
}

variable "description" {
  description = "What the job does."
  type        = string
}

variable "project_id" {
  description = "Project of the job."
  type        = string
}

variable "region" {
  description = "Region of the job and its schedule."
  type        = string
}

variable "image" {
  description = "Container image (the vitals-lake image)."
  type        = string
}

variable "command" {
  description = "Entrypoint override, e.g. [\"python\", \"-m\", \"vitals_lake.maintenance\"]."
  type        = list(string)
}

variable "args" {
  description = "Arguments of the command."
  type        = list(string)
  default     = []
}

variable "env" {
  description = "Plain environment variables."
  type        = map(string)
  default     = {}
}

variable "secret_env" {
  description = "Environment variables read from Secret Manager: variable name -> secret id (latest version)."
  type        = map(string)
  default     = {}
}

variable "service_account_email" {
  description = "Identity the job runs as."
  type        = string
}

variable "invoker_service_account_email" {
  description = "Identity Cloud Scheduler starts the job as."
  type        = string
}

variable "schedule" {
  description = "Cron schedule."
  type        = string
}

variable "time_zone" {
  description = "Time zone of the schedule."
  type        = string
  default     = "Etc/UTC"
}

variable "timeout" {
  description = "Maximum run time of one execution."
  type        = string
  default     = "3600s"
}

variable "max_retries" {
  description = "Retries of a failed execution."
  type        = number
  default     = 1
}

variable "cpu" {
  description = "CPU limit."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory limit."
  type        = string
  default     = "2Gi"
}

variable "kms_key_name" {
  description = "Optional CMEK for the job."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels of the job."
  type        = map(string)
  default     = {}
}

variable "deletion_protection" {
  description = "Refuse terraform destroy of the job."
  type        = bool
  default     = false
}
