# Monitoring as code: who is told (notification channels), when (alert policies), the pipeline's
# dashboard and the reading-to-alert SLO. Each policy's documentation names its section of
# docs/runbook.md: what it means, how to confirm it, what to do.
#
# Where the signals come from:
# - Dataflow's own job metrics (system lag, data freshness, failure) and Pub/Sub's subscription metrics;
# - the pipeline's Beam counters, which Dataflow exports as dataflow.googleapis.com/job/user_counter
#   with the counter's name in metric_name (names from pipelines/counters.py, via names.json);
# - the notifier's JSON log lines (messages and fields from its source, via names.json) as log-based
#   metrics; Cloud Run's job execution counts for the maintenance and admissions jobs.
# Ratios, increases and absences over a window are PromQL conditions: Dataflow's user counters are
# cumulative gauges, which the filter-based conditions cannot difference.

locals {
  monitoring   = local.names.monitoring
  counters     = local.monitoring.pipeline_counters
  notifier_log = local.monitoring.notifier_logs
  thresholds   = var.monitoring_thresholds
  runbook      = "docs/runbook.md in the Vitals Lake repository"

  notification_channels = concat(
    [for channel in google_monitoring_notification_channel.email : channel.id],
    google_monitoring_notification_channel.webhook[*].id,
  )

  dataflow_job    = "resource.type = \"dataflow_job\" AND resource.labels.job_name = \"${var.pipeline_job_name}\""
  user_counter    = "dataflow_googleapis_com:job_user_counter{monitored_resource=\"dataflow_job\",job_name=\"${var.pipeline_job_name}\""
  function_name   = "${var.name_prefix}-alert-notifier"
  function_logs   = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${local.function_name}\""
  job_executions  = "run_googleapis_com:job_completed_execution_count{monitored_resource=\"cloud_run_job\""
  quarantined_15m = "sum(increase(${local.user_counter},metric_name=\"${local.counters.quarantined_rows}\"}[15m]))"
  valid_15m       = "sum(increase(${local.user_counter},metric_name=\"${local.counters.valid_rows}\"}[15m]))"

  subscription_filter = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id"

  # One metric, one threshold, one condition each.
  threshold_policies = merge(
    {
      dataflow_system_lag = {
        name     = "Dataflow system lag"
        filter   = "${local.dataflow_job} AND metric.type = \"dataflow.googleapis.com/job/system_lag\""
        above    = local.thresholds.dataflow_system_lag_s
        duration = "300s"
        aligner  = "ALIGN_MAX"
        severity = "ERROR"
        section  = "dataflow-lag"
      }
      dataflow_data_freshness = {
        name     = "Dataflow data freshness"
        filter   = "${local.dataflow_job} AND metric.type = \"dataflow.googleapis.com/job/data_watermark_age\""
        above    = local.thresholds.dataflow_data_freshness_s
        duration = "300s"
        aligner  = "ALIGN_MAX"
        severity = "ERROR"
        section  = "dataflow-lag"
      }
      dataflow_failed = {
        name     = "Dataflow job failed"
        filter   = "${local.dataflow_job} AND metric.type = \"dataflow.googleapis.com/job/is_failed\""
        above    = 0
        duration = "0s"
        aligner  = "ALIGN_MAX"
        severity = "CRITICAL"
        section  = "dataflow-failed"
      }
      readings_backlog = {
        name     = "Readings waiting in Pub/Sub"
        filter   = "${local.subscription_filter} = \"${local.names.pubsub.vitals_subscription}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
        above    = local.thresholds.readings_backlog_age_s
        duration = "300s"
        aligner  = "ALIGN_MAX"
        severity = "ERROR"
        section  = "readings-backlog"
      }
      readings_dead_letters = {
        name     = "Readings dead-lettered by Pub/Sub"
        filter   = "${local.subscription_filter} = \"${local.names.pubsub.vitals_dead_letter_subscription}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
        above    = 0
        duration = "60s"
        aligner  = "ALIGN_MAX"
        severity = "WARNING"
        section  = "dead-letter-subscriptions"
      }
      alert_dead_letters = {
        name     = "Alert events dead-lettered by Pub/Sub"
        filter   = "${local.subscription_filter} = \"${local.names.pubsub.alerts_dead_letter_subscription}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
        above    = 0
        duration = "60s"
        aligner  = "ALIGN_MAX"
        severity = "ERROR"
        section  = "dead-letter-subscriptions"
      }
      scheduled_job_failed = {
        name     = "Maintenance or admissions job failed"
        filter   = "resource.type = \"cloud_run_job\" AND resource.labels.job_name = one_of(\"${module.maintenance_job.job_name}\", \"${module.admissions_job.job_name}\") AND metric.type = \"run.googleapis.com/job/completed_execution_count\" AND metric.labels.result = \"failed\""
        above    = 0
        duration = "0s"
        aligner  = "ALIGN_SUM"
        severity = "ERROR"
        section  = "scheduled-jobs"
      }
    },
    var.deploy_alert_function ? {
      alert_trigger_backlog = {
        name     = "Alert events waiting for the notifier"
        filter   = "${local.subscription_filter} = starts_with(\"eventarc-${var.region}-${local.function_name}\") AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
        above    = local.thresholds.alert_trigger_backlog_s
        duration = "120s"
        aligner  = "ALIGN_MAX"
        severity = "CRITICAL"
        section  = "notifier"
      }
      notifier_gave_up = {
        name     = "Alert deliveries given up"
        filter   = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.notifier_gave_up[0].name}\""
        above    = 0
        duration = "0s"
        aligner  = "ALIGN_SUM"
        severity = "CRITICAL"
        section  = "notifier"
      }
    } : {},
  )

  # Increases, ratios and absences over a window.
  promql_policies = {
    quarantine_ratio = {
      name     = "Quarantined share of readings"
      query    = "${local.quarantined_15m} / (${local.quarantined_15m} + ${local.valid_15m}) > ${local.thresholds.quarantine_ratio}"
      severity = "WARNING"
      section  = "quarantine"
    }
    quality_fail_rule = {
      name     = "Data-quality rule with action fail broken"
      query    = "sum(increase(${local.user_counter},metric_name=\"${local.counters.failed_quality_batches}\"}[10m])) > 0"
      severity = "ERROR"
      section  = "quarantine"
    }
    warehouse_dead_letters = {
      name     = "Rows refused by BigQuery (dead_letter table)"
      query    = "sum(increase(${local.user_counter},metric_name=~\".*${local.counters.warehouse_rejected_suffix}\"}[10m])) > 0"
      severity = "ERROR"
      section  = "warehouse-dead-letters"
    }
    maintenance_not_running = {
      name     = "Lake maintenance has not succeeded"
      query    = "absent_over_time(${local.job_executions},job_name=\"${module.maintenance_job.job_name}\",result=\"succeeded\"}[${local.thresholds.maintenance_max_silence_h}h])"
      severity = "WARNING"
      section  = "scheduled-jobs"
    }
    admissions_not_running = {
      name     = "Admissions loader has not succeeded"
      query    = "absent_over_time(${local.job_executions},job_name=\"${module.admissions_job.job_name}\",result=\"succeeded\"}[${local.thresholds.admissions_max_silence_min}m])"
      severity = "ERROR"
      section  = "scheduled-jobs"
    }
  }
}

# --- Who is told ----------------------------------------------------------------------------------------
resource "google_monitoring_notification_channel" "email" {
  for_each = toset(var.monitoring_email_addresses)

  display_name = "Vitals Lake on-call: ${each.value}"
  type         = "email"
  labels       = { email_address = each.value }
  user_labels  = local.labels
}

resource "google_monitoring_notification_channel" "webhook" {
  count = nonsensitive(var.monitoring_webhook_url != null) ? 1 : 0

  display_name = "Vitals Lake incidents webhook"
  type         = "webhook_tokenauth"
  labels       = { url = var.monitoring_webhook_url }
  user_labels  = local.labels
}

# --- The notifier's log lines as metrics -----------------------------------------------------------------
resource "google_logging_metric" "notifier_gave_up" {
  count = var.deploy_alert_function ? 1 : 0

  name        = "vitals_notifier_deliveries_given_up"
  description = "Alert deliveries the notifier gave up on (a destination refused it, or it failed after every retry)."
  filter      = "${local.function_logs} AND jsonPayload.message = \"${local.notifier_log.delivery_gave_up}\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
}

resource "google_logging_metric" "alert_latency" {
  count = var.deploy_alert_function ? 1 : 0

  name            = "vitals_reading_to_alert_sent_seconds"
  description     = "Seconds from the reading that changed an alert's state to the notifier's first successful delivery of it."
  filter          = "${local.function_logs} AND jsonPayload.message = \"${local.notifier_log.alert_handled}\" AND jsonPayload.${local.notifier_log.latency_field} >= 0"
  value_extractor = "EXTRACT(jsonPayload.${local.notifier_log.latency_field})"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "s"
  }

  bucket_options {
    explicit_buckets {
      bounds = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 900]
    }
  }
}

# --- When ------------------------------------------------------------------------------------------------
resource "google_monitoring_alert_policy" "threshold" {
  for_each = local.threshold_policies

  display_name          = "Vitals Lake: ${each.value.name}"
  combiner              = "OR"
  severity              = each.value.severity
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = each.value.name

    condition_threshold {
      filter          = each.value.filter
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.above
      duration        = each.value.duration

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = each.value.aligner
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    subject   = "Vitals Lake: ${each.value.name}"
    mime_type = "text/markdown"
    content   = "See the section \"${each.value.section}\" of ${local.runbook}: what this means, how to confirm it, what to do."
  }

  alert_strategy {
    auto_close = "86400s"
  }
}

resource "google_monitoring_alert_policy" "promql" {
  for_each = local.promql_policies

  display_name          = "Vitals Lake: ${each.value.name}"
  combiner              = "OR"
  severity              = each.value.severity
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = each.value.name

    condition_prometheus_query_language {
      query               = each.value.query
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }

  documentation {
    subject   = "Vitals Lake: ${each.value.name}"
    mime_type = "text/markdown"
    content   = "See the section \"${each.value.section}\" of ${local.runbook}: what this means, how to confirm it, what to do."
  }

  alert_strategy {
    auto_close = "86400s"
  }
}

# --- The reading-to-alert SLO -----------------------------------------------------------------------------
# Measured by the notifier: for each alert state change it delivered, the seconds from the reading's own
# timestamp to the end of the first successful delivery (log field reading_to_sent_s). It covers the
# device-to-Pub/Sub path, the pipeline, the alerts topic and the delivery; it does not see alerts the
# pipeline never raised (the readings-backlog and Dataflow-lag policies watch for those).
resource "google_monitoring_custom_service" "alerting" {
  count = var.deploy_alert_function ? 1 : 0

  service_id   = "${var.name_prefix}-alerting"
  display_name = "Vitals Lake: clinician alerting"
  user_labels  = local.labels
}

resource "google_monitoring_slo" "reading_to_alert" {
  count = var.deploy_alert_function ? 1 : 0

  service             = google_monitoring_custom_service.alerting[0].service_id
  slo_id              = "reading-to-alert-latency"
  display_name        = "${var.alert_latency_slo.goal * 100}% of alerts sent within ${var.alert_latency_slo.threshold_s} s of the reading"
  goal                = var.alert_latency_slo.goal
  rolling_period_days = var.alert_latency_slo.days
  user_labels         = local.labels

  request_based_sli {
    distribution_cut {
      distribution_filter = "metric.type = \"logging.googleapis.com/user/${google_logging_metric.alert_latency[0].name}\" AND resource.type = \"cloud_run_revision\""

      range {
        min = 0
        max = var.alert_latency_slo.threshold_s
      }
    }
  }
}

# Fast burn: at this rate the SLO's error budget for the whole window is gone in about two days.
resource "google_monitoring_alert_policy" "slo_burn" {
  count = var.deploy_alert_function ? 1 : 0

  display_name          = "Vitals Lake: reading-to-alert SLO burning fast"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Error budget burn rate over 1 h above 14"

    condition_threshold {
      filter          = "select_slo_burn_rate(\"${google_monitoring_slo.reading_to_alert[0].name}\", \"3600s\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 14
      duration        = "0s"
    }
  }

  documentation {
    subject   = "Vitals Lake: reading-to-alert SLO burning fast"
    mime_type = "text/markdown"
    content   = "See the section \"alert-latency-slo\" of ${local.runbook}."
  }
}

# --- The pipeline's dashboard -------------------------------------------------------------------------------
locals {
  dashboard_tiles = [
    { title = "System lag (s)", filter = "${local.dataflow_job} AND metric.type = \"dataflow.googleapis.com/job/system_lag\"" },
    { title = "Data freshness (s)", filter = "${local.dataflow_job} AND metric.type = \"dataflow.googleapis.com/job/data_watermark_age\"" },
    { title = "Oldest unacknowledged message (s), by subscription", filter = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\"" },
    { title = "Undelivered messages, by subscription", filter = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\"" },
    { title = "Workers' CPU utilisation", filter = "resource.type = \"gce_instance\" AND metric.type = \"compute.googleapis.com/instance/cpu/utilization\" AND metadata.user_labels.\"dataflow_job_name\" = \"${var.pipeline_job_name}\"" },
    { title = "Scheduled job executions, by result", filter = "resource.type = \"cloud_run_job\" AND metric.type = \"run.googleapis.com/job/completed_execution_count\"" },
  ]
  dashboard_promql = [
    { title = "Readings: valid and quarantined per minute", query = "sum by (metric_name) (rate(${local.user_counter},metric_name=~\"${local.counters.valid_rows}|${local.counters.quarantined_rows}\"}[5m])) * 60" },
    { title = "Rows refused by BigQuery per minute, by table", query = "sum by (metric_name) (rate(${local.user_counter},metric_name=~\".*${local.counters.warehouse_rejected_suffix}\"}[5m])) * 60" },
  ]
}

resource "google_monitoring_dashboard" "pipeline" {
  dashboard_json = jsonencode({
    displayName = "Vitals Lake: pipeline"
    mosaicLayout = {
      columns = 48
      tiles = concat(
        [for i, tile in local.dashboard_tiles : {
          xPos   = (i % 2) * 24
          yPos   = floor(i / 2) * 16
          width  = 24
          height = 16
          widget = {
            title = tile.title
            xyChart = {
              dataSets = [{
                plotType = "LINE"
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter      = tile.filter
                    aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MEAN" }
                  }
                }
              }]
            }
          }
        }],
        [for i, tile in local.dashboard_promql : {
          xPos   = (i % 2) * 24
          yPos   = (ceil(length(local.dashboard_tiles) / 2) + floor(i / 2)) * 16
          width  = 24
          height = 16
          widget = {
            title = tile.title
            xyChart = {
              dataSets = [{
                plotType        = "LINE"
                timeSeriesQuery = { prometheusQuery = tile.query }
              }]
            }
          }
        }],
      )
    }
  })
}
