"""Avro schemas of every event and their codec (the ingestion issue)."""
