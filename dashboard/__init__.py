"""Dashboards: the local web dashboard over the DuckDB warehouse views (``python -m dashboard``)
and the Looker Studio report over the BigQuery views (``looker/report.yaml``, ``looker_link``)."""
