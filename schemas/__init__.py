"""Avro schemas of every event and their codec."""
