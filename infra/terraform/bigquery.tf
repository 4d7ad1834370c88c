# The warehouse: Gold, alerts, data-quality and reference tables (schemas generated from the contract)
# and every view in sql/views/, created level by level so a view exists before the views reading it.
resource "google_bigquery_dataset" "warehouse" {
  dataset_id                 = local.dataset_id
  location                   = var.bigquery_location
  description                = "Vitals Lake warehouse: Gold summaries, alerts and data quality streamed by the pipeline (raw patient ids: writers only)."
  delete_contents_on_destroy = var.force_destroy

  # The access list, authoritative: exactly these. BigQuery's defaults would also let the project's
  # viewers and editors (projectReaders, projectWriters) read the raw patient ids in these tables.
  # The provider's dataset IAM resources would fight this list, so there are none on this dataset.
  access {
    role          = "OWNER"
    special_group = "projectOwners"
  }

  # The pipeline streams rows (streaming inserts) and reads table metadata.
  access {
    role          = "WRITER"
    user_by_email = google_service_account.dataflow.email
  }

  # The admissions loader appends the diagnosis reference (ref_diagnosis_mapping) and Gold back-fills,
  # and asks for the newest load it holds (one query job a pass).
  access {
    role          = "WRITER"
    user_by_email = google_service_account.admissions.email
  }

  # Every view of the reporting and identity datasets may read these tables (authorised datasets).
  dynamic "access" {
    for_each = [for d in google_bigquery_dataset.views : d.dataset_id]
    content {
      dataset {
        dataset {
          project_id = var.project_id
          dataset_id = access.value
        }
        target_types = ["VIEWS"]
      }
    }
  }

  dynamic "default_encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

# Minimum necessary: analysts and Looker Studio read the reporting dataset, whose views name patients
# by the pseudonymous patient_key only; the one view that maps a key back to the raw patient id is in
# the identity dataset (readers: var.identity_readers). Both are authorised datasets of the warehouse
# (below), so their views read its tables while their readers cannot.
resource "google_bigquery_dataset" "views" {
  for_each = {
    reporting = "Vitals Lake reporting views (patients by pseudonymous key only): what analysts and Looker Studio read."
    identity  = "Vitals Lake re-identification: patient_key to patient_id, for the roles that may see identities."
  }

  dataset_id                 = "${local.dataset_id}${local.names.bigquery.dataset_suffixes[each.key]}"
  location                   = var.bigquery_location
  description                = each.value
  delete_contents_on_destroy = var.force_destroy

  dynamic "default_encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }

  depends_on = [google_project_service.enabled, google_kms_crypto_key_iam_member.service_agents]
}

resource "google_bigquery_table" "tables" {
  for_each = local.names.bigquery.tables

  dataset_id          = google_bigquery_dataset.warehouse.dataset_id
  table_id            = each.key
  description         = each.value.description
  schema              = file("${path.module}/generated/${each.value.schema_file}")
  clustering          = length(each.value.clustering) > 0 ? each.value.clustering : null
  deletion_protection = var.force_destroy ? false : true

  # Partitions expire after the table's retention (the contract's, generated into names.json, or
  # var.warehouse_retention_days); the lake's maintenance job applies the same days to its tables.
  dynamic "time_partitioning" {
    for_each = each.value.partition == null ? [] : [each.value.partition]
    content {
      type          = "DAY"
      field         = time_partitioning.value
      expiration_ms = local.warehouse_retention_days[each.key] == null ? null : local.warehouse_retention_days[each.key] * 86400000
    }
  }

  dynamic "encryption_configuration" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = encryption_configuration.value
    }
  }
}

# Level 0: views that read only tables (the de-duplicating base views).
resource "google_bigquery_table" "views_level_0" {
  #checkov:skip=CKV_GCP_121:A view holds no data (its query is in sql/views/); it must stay replaceable when it moves between levels
  #checkov:skip=CKV_GCP_80:A view stores no data to encrypt, the tables it reads are encrypted with CMEK when var.kms_key_name is set
  for_each = toset(try(local.view_levels[0], []))

  dataset_id          = local.view_dataset[each.key]
  table_id            = each.key
  description         = local.names.bigquery.view_descriptions[each.key]
  deletion_protection = false

  view {
    query          = local.view_sql[each.key]
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.tables]
}

# Level 1: views that read level-0 views.
resource "google_bigquery_table" "views_level_1" {
  #checkov:skip=CKV_GCP_121:A view holds no data (its query is in sql/views/); it must stay replaceable when it moves between levels
  #checkov:skip=CKV_GCP_80:A view stores no data to encrypt, the tables it reads are encrypted with CMEK when var.kms_key_name is set
  for_each = toset(try(local.view_levels[1], []))

  dataset_id          = local.view_dataset[each.key]
  table_id            = each.key
  description         = local.names.bigquery.view_descriptions[each.key]
  deletion_protection = false

  view {
    query          = local.view_sql[each.key]
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.views_level_0]
}

# Level 2: views that read level-1 views (none today; tests/infra fails if a deeper level appears).
resource "google_bigquery_table" "views_level_2" {
  #checkov:skip=CKV_GCP_121:A view holds no data (its query is in sql/views/); it must stay replaceable when it moves between levels
  #checkov:skip=CKV_GCP_80:A view stores no data to encrypt, the tables it reads are encrypted with CMEK when var.kms_key_name is set
  for_each = toset(try(local.view_levels[2], []))

  dataset_id          = local.view_dataset[each.key]
  table_id            = each.key
  description         = local.names.bigquery.view_descriptions[each.key]
  deletion_protection = false

  view {
    query          = local.view_sql[each.key]
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.views_level_1]
}

resource "google_project_iam_member" "admissions_job_user" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.admissions.member
}

# Analysts read the reporting views only: not the tables, not the identity view.
resource "google_bigquery_dataset_iam_member" "analysts" {
  for_each = toset(var.analyst_members)

  dataset_id = google_bigquery_dataset.views["reporting"].dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = each.value
}

# Those who may re-identify a patient (clinicians' tools, the patient-detail data source) read the
# identity view.
resource "google_bigquery_dataset_iam_member" "identity_readers" {
  for_each = toset(var.identity_readers)

  dataset_id = google_bigquery_dataset.views["identity"].dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = each.value
}

# Running a query is a project-level permission (jobs), reading the data is the dataset-level one above.
resource "google_project_iam_member" "analyst_job_users" {
  for_each = toset(concat(var.analyst_members, var.identity_readers))

  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = each.value
}
