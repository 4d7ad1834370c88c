terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    # Pinned to one major version. 7.x has the Managed Kafka Connect resources in GA;
    # google_dataflow_flex_template_job is only in google-beta.
    google = {
      source  = "hashicorp/google"
      version = "~> 7.10"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 7.10"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.7"
    }
  }
}

provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = local.labels
}

provider "google-beta" {
  project        = var.project_id
  region         = var.region
  default_labels = local.labels
}
