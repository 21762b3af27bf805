"""The pipeline's Kafka topics and their configuration.

Images and embeddings are keyed by image id and compacted, with deletes as tombstones, so the
log keeps the latest event of every image for ever and replaying it rebuilds the stores. The
dead-letter topic is an ordinary time-retained log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from cbir.settings import KafkaSettings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def pipeline_topics(kafka: KafkaSettings) -> list[TopicSpec]:
    """The topics the pipeline needs, with the settings that make them replayable."""
    compacted = {
        "cleanup.policy": "compact",
        # how long a delete's tombstone survives compaction: a consumer that is further behind
        # than this could miss a delete, so it is generous
        "delete.retention.ms": str(7 * 24 * 3600 * 1000),
        "min.cleanable.dirty.ratio": "0.5",
        "segment.ms": str(24 * 3600 * 1000),
    }
    return [
        TopicSpec(kafka.images_topic, kafka.partitions, compacted),
        TopicSpec(kafka.embeddings_topic, kafka.partitions, compacted),
        TopicSpec(
            kafka.object_events_topic,
            kafka.partitions,
            {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000)},
        ),
        TopicSpec(
            kafka.dead_letter_topic,
            kafka.partitions,
            {"cleanup.policy": "delete", "retention.ms": str(kafka.dead_letter_retention_ms)},
        ),
    ]


def _admin(kafka: KafkaSettings) -> AdminClient:
    # librdkafka's own connection errors go to Python logging, where they can be filtered
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "logger": logging.getLogger("cbir.kafka.admin"),
    }
    return AdminClient(config)


def broker_count(kafka: KafkaSettings, timeout_s: float = 5.0) -> int:
    """How many brokers answer a metadata request."""
    return len(_admin(kafka).list_topics(timeout=timeout_s).brokers)


def topic_partitions(kafka: KafkaSettings, timeout_s: float = 5.0) -> dict[str, int]:
    """Every topic the broker knows, with its partition count."""
    metadata = _admin(kafka).list_topics(timeout=timeout_s)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def ensure_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> list[str]:
    """Create the missing pipeline topics; returns the names it created."""
    admin = _admin(kafka)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [spec for spec in pipeline_topics(kafka) if spec.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=s.config)
            for s in wanted
        ],
        operation_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created
