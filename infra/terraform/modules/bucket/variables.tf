variable "name" {
  description = "Globally unique bucket name."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.name))
    error_message = "name must be a valid bucket name (3-63 lowercase letters, digits, dots, underscores, hyphens)."
  }
}

variable "location" {
  description = "Bucket location (a region or multi-region)."
  type        = string
}

variable "purpose" {
  description = "What the bucket holds (the purpose label)."
  type        = string
}

variable "labels" {
  description = "Labels of the bucket."
  type        = map(string)
  default     = {}
}

variable "kms_key_name" {
  description = "Optional default CMEK of the bucket."
  type        = string
  default     = null
}

variable "versioning" {
  description = "Keep noncurrent versions of replaced and deleted objects."
  type        = bool
  default     = true
}

variable "soft_delete_seconds" {
  description = "How long deleted objects stay restorable (0 disables soft delete; 7 to 90 days otherwise)."
  type        = number
  default     = 604800
}

variable "force_destroy" {
  description = "Let terraform destroy delete a non-empty bucket."
  type        = bool
  default     = false
}

variable "lifecycle_rules" {
  description = "Lifecycle rules: action Delete, SetStorageClass or AbortIncompleteMultipartUpload, and the condition."
  type = list(object({
    action                     = string
    storage_class              = optional(string)
    age                        = optional(number)
    num_newer_versions         = optional(number)
    with_state                 = optional(string)
    days_since_noncurrent_time = optional(number)
    matches_prefix             = optional(list(string))
  }))
  default = []

  validation {
    condition     = alltrue([for r in var.lifecycle_rules : contains(["Delete", "SetStorageClass", "AbortIncompleteMultipartUpload"], r.action)])
    error_message = "lifecycle_rules[*].action must be Delete, SetStorageClass or AbortIncompleteMultipartUpload."
  }
}
