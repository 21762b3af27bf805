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
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from cbir.settings import KafkaSettings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


# images and embeddings: the latest event of every image, for ever
COMPACTED = {
    "cleanup.policy": "compact",
    # how long a delete's tombstone survives compaction: a consumer that is further behind
    # than this could miss a delete, so it is generous
    "delete.retention.ms": str(7 * 24 * 3600 * 1000),
    "min.cleanable.dirty.ratio": "0.5",
    "segment.ms": str(24 * 3600 * 1000),
}


def embeddings_topic_spec(kafka: KafkaSettings, name: str) -> TopicSpec:
    """An embeddings topic: the configured one, or a re-embed's of another model."""
    return TopicSpec(name, kafka.partitions, COMPACTED)


def pipeline_topics(kafka: KafkaSettings) -> list[TopicSpec]:
    """The topics the pipeline needs, with the settings that make them replayable."""
    return [
        TopicSpec(kafka.images_topic, kafka.partitions, COMPACTED),
        embeddings_topic_spec(kafka, kafka.embeddings_topic),
        TopicSpec(kafka.duplicates_topic, kafka.partitions, COMPACTED),
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


def admin_client(kafka: KafkaSettings) -> AdminClient:
    # librdkafka's own connection errors go to Python logging, where they can be filtered
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "logger": logging.getLogger("cbir.kafka.admin"),
    }
    return AdminClient(config)


def broker_count(kafka: KafkaSettings, timeout_s: float = 5.0) -> int:
    """How many brokers answer a metadata request."""
    return len(admin_client(kafka).list_topics(timeout=timeout_s).brokers)


def topic_partitions(kafka: KafkaSettings, timeout_s: float = 5.0) -> dict[str, int]:
    """Every topic the broker knows, with its partition count."""
    metadata = admin_client(kafka).list_topics(timeout=timeout_s)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def ensure_topics(
    kafka: KafkaSettings, timeout_s: float = 30.0, specs: list[TopicSpec] | None = None
) -> list[str]:
    """Create the missing topics (the pipeline's by default), and set the configuration of
    those that exist (a topic auto-created by a client before provisioning has the broker's
    defaults, not compaction); returns the names it created."""
    specs = pipeline_topics(kafka) if specs is None else specs
    admin = admin_client(kafka)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    present = [spec for spec in specs if spec.name in existing]
    if present:
        _set_configs(admin, present, timeout_s)
    wanted = [spec for spec in specs if spec.name not in existing]
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


def _set_configs(admin: AdminClient, specs: list[TopicSpec], timeout_s: float) -> None:
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            spec.name,
            incremental_configs=[
                ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                for name, value in spec.config.items()
            ],
        )
        for spec in specs
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=timeout_s)


def delete_topic(kafka: KafkaSettings, name: str, timeout_s: float = 30.0) -> None:
    """Delete a topic and every message in it."""
    admin = admin_client(kafka)  # held until the answer: a collected client never completes it
    for future in admin.delete_topics([name], operation_timeout=timeout_s).values():
        future.result(timeout=timeout_s)


def delete_consumer_group(kafka: KafkaSettings, group: str, timeout_s: float = 10.0) -> bool:
    """Forget a consumer group's offsets; False when there was no such group."""
    admin = admin_client(kafka)  # held until the answer: a collected client never completes it
    futures = admin.delete_consumer_groups([group], request_timeout=timeout_s)
    try:
        for future in futures.values():
            future.result(timeout=timeout_s * 2)
    except KafkaException as exc:
        if "GROUP_ID_NOT_FOUND" not in str(exc):
            raise
        return False
    return True
