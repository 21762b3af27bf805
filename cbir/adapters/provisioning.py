"""What the pipeline needs to exist before it runs: topics, the bucket, the tables.

`cbir stack up` does this service by service; `cbir provision` does it against any deployment
(docker-compose's init container, a managed Kafka, an existing MySQL). Idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

import pymysql

from cbir.adapters import kafka_topics, metadata_store, object_store
from cbir.domain.errors import ServiceUnavailable
from cbir.settings import Settings


@dataclass(frozen=True)
class Provisioned:
    topics_created: list[str]
    bucket_created: bool
    migrations_applied: list[int]


def provision(settings: Settings) -> Provisioned:
    """Create what is missing; raises ServiceUnavailable naming the service that did not answer."""
    try:
        topics = kafka_topics.ensure_topics(settings.kafka, timeout_s=15)
    except Exception as exc:
        raise ServiceUnavailable(
            "Kafka", settings.kafka.bootstrap_servers, "CBIR_KAFKA__BOOTSTRAP_SERVERS", exc
        ) from exc
    try:
        bucket = object_store.ensure_bucket(settings.minio)
        object_store.ensure_bucket(settings.minio, settings.local_features.bucket)
        object_store.ensure_bucket(settings.minio, settings.thumbnails.bucket)
        object_store.ensure_notifications(settings.minio)
    except Exception as exc:
        raise ServiceUnavailable(
            "MinIO", settings.minio.endpoint, "CBIR_MINIO__ENDPOINT", exc
        ) from exc
    try:
        with metadata_store.connect(settings.mysql) as conn:
            migrations = metadata_store.migrate(conn)
    except pymysql.MySQLError as exc:
        raise ServiceUnavailable(
            "MySQL",
            f"{settings.mysql.host}:{settings.mysql.port}",
            "CBIR_MYSQL__HOST/PORT/USER/PASSWORD",
            exc,
        ) from exc
    return Provisioned(topics, bucket, migrations)
