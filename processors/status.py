"""How far the processors are: consumer lag per topic, dead letters, what the stores hold."""

from __future__ import annotations

from dataclasses import dataclass

import pymysql
from confluent_kafka import Consumer, TopicPartition

from cbir.settings import Settings
from service_adapters import generations, metadata_store
from service_adapters.vector_index import VectorIndex


def indexed_topics(settings: Settings) -> list[str] | None:
    """The embeddings topics of the building and live generations ([] before the first one),
    or None when the registry cannot be read (MySQL down or not provisioned yet)."""
    try:
        with metadata_store.connect(settings.mysql) as conn:
            return sorted({g.embeddings_topic for g in generations.active(conn)})
    except pymysql.MySQLError:
        return None


@dataclass(frozen=True)
class TopicLag:
    topic: str
    end_offset: int
    committed: int

    @property
    def lag(self) -> int:
        return self.end_offset - self.committed


def consumer_lag(settings: Settings, topics: list[str]) -> list[TopicLag]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": settings.processors.app_id,
            "enable.auto.commit": False,
        }
    )
    try:
        result = []
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            tps = [TopicPartition(topic, p) for p in partitions]
            committed = consumer.committed(tps, timeout=10)
            end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
            done = sum(max(tp.offset, 0) for tp in committed)
            result.append(TopicLag(topic, end, done))
        return result
    finally:
        consumer.close()


def dead_letter_count(settings: Settings) -> int:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "cbir-status"}
    )
    try:
        topic = settings.kafka.dead_letter_topic
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def indexed_vectors(settings: Settings) -> int:
    index = VectorIndex(settings.milvus, settings.processors)
    try:
        return index.count()
    except Exception:
        return 0  # no collection behind the alias yet
    finally:
        index.close()


def image_statuses(settings: Settings) -> dict[str, int]:
    with metadata_store.connect(settings.mysql) as conn:
        return metadata_store.status_counts(conn)
