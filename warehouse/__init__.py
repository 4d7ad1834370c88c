"""The warehouse: Gold, alerts and data quality as analysts query them (BigQuery in the cloud, a DuckDB
file locally), written through one sink interface and read through the views in ``sql/views/``."""
