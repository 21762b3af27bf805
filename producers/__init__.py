"""Producers: image bytes to MinIO and an Avro event to Kafka."""
