# A private network for the Dataflow workers and the Kafka cluster: no public IPs, Google APIs reached
# through Private Google Access, no route to the internet (nothing in the image downloads at run time).
resource "google_compute_network" "vitals" {
  name                    = "${var.name_prefix}-network"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.enabled]
}

resource "google_compute_subnetwork" "vitals" {
  name                     = "${var.name_prefix}-${var.region}"
  region                   = var.region
  network                  = google_compute_network.vitals.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Dataflow workers talk to each other on TCP 12345 (batch) and 12346 (streaming shuffle).
resource "google_compute_firewall" "dataflow_internal" {
  name        = "${var.name_prefix}-dataflow-internal"
  network     = google_compute_network.vitals.id
  description = "Dataflow worker to worker traffic"
  direction   = "INGRESS"
  priority    = 1000

  source_tags = ["dataflow"]
  target_tags = ["dataflow"]

  allow {
    protocol = "tcp"
    ports    = ["12345-12346"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
