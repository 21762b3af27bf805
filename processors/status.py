"""How far the processors are: consumer lag per topic, dead letters, what the stores hold."""

from __future__ import annotations

from cbir.adapters import event_log
from cbir.adapters.event_log import TopicLag
from cbir.adapters.generations import MySQLGenerationRegistry
from cbir.adapters.metadata_store import MySQLMetadataStore
from cbir.adapters.vector_index import VectorIndex
from cbir.settings import Settings

__all__ = ["TopicLag", "consumer_lag", "dead_letter_count", "indexed_topics"]


def indexed_topics(settings: Settings) -> list[str] | None:
    """The embeddings topics of the building and live generations ([] before the first one),
    or None when the registry cannot be read (MySQL down or not provisioned yet)."""
    registry = MySQLGenerationRegistry(settings.mysql)
    try:
        return sorted({g.embeddings_topic for g in registry.active()})
    except Exception:  # down, or the tables not made yet: nothing to say
        return None
    finally:
        registry.close()


def consumer_lag(settings: Settings, topics: list[str]) -> list[TopicLag]:
    """How far the processors' consumer group is behind each topic."""
    return event_log.consumer_lag(settings.kafka, settings.processors.app_id, topics)


def dead_letter_count(settings: Settings) -> int:
    return event_log.message_count(settings.kafka, settings.kafka.dead_letter_topic)


def indexed_vectors(settings: Settings) -> int:
    index = VectorIndex(settings.milvus, settings.processors)
    try:
        return index.count()
    except Exception:
        return 0  # no collection behind the alias yet
    finally:
        index.close()


def image_statuses(settings: Settings) -> dict[str, int]:
    store = MySQLMetadataStore(settings.mysql, pool_size=1)
    try:
        return store.status_counts()
    finally:
        store.close()
