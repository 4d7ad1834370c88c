# Data Access audit logs: every read and write of patient data is attributable.
resource "google_project_iam_audit_config" "data_access" {
  for_each = var.enable_data_access_audit_logs ? toset([
    "storage.googleapis.com",
    "bigquery.googleapis.com",
    "secretmanager.googleapis.com",
  ]) : toset([])

  project = var.project_id
  service = each.value

  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
