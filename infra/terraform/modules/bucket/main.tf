# A Cloud Storage bucket hardened the same way every time: uniform bucket-level access, public access
# prevention enforced, versioning, soft delete, lifecycle rules and an optional CMEK.
terraform {
  required_providers {
    google = {
      source = "hashicorp/google"
    }
  }
}

resource "google_storage_bucket" "this" {
  name          = var.name
  location      = var.location
  storage_class = "STANDARD"
  force_destroy = var.force_destroy
  labels        = merge(var.labels, { purpose = var.purpose })

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = var.versioning
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_seconds
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.lifecycle_rules
    content {
      action {
        type          = lifecycle_rule.value.action
        storage_class = lifecycle_rule.value.storage_class
      }
      condition {
        age                        = lifecycle_rule.value.age
        num_newer_versions         = lifecycle_rule.value.num_newer_versions
        with_state                 = lifecycle_rule.value.with_state
        days_since_noncurrent_time = lifecycle_rule.value.days_since_noncurrent_time
        matches_prefix             = lifecycle_rule.value.matches_prefix
      }
    }
  }
}
