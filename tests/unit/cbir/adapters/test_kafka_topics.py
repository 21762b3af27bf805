from __future__ import annotations

from cbir.adapters.kafka_topics import pipeline_topics
from cbir.settings import KafkaSettings


def test_images_embeddings_and_duplicates_are_compacted_and_dead_letters_expire() -> None:
    kafka = KafkaSettings(partitions=6, dead_letter_retention_ms=1234)
    topics = {t.name: t for t in pipeline_topics(kafka)}
    assert set(topics) == {
        kafka.images_topic,
        kafka.embeddings_topic,
        kafka.dead_letter_topic,
        kafka.object_events_topic,
        kafka.duplicates_topic,
    }
    for name in (kafka.images_topic, kafka.embeddings_topic, kafka.duplicates_topic):
        assert topics[name].config["cleanup.policy"] == "compact"
        assert int(topics[name].config["delete.retention.ms"]) >= 24 * 3600 * 1000
    dead = topics[kafka.dead_letter_topic]
    assert dead.config == {"cleanup.policy": "delete", "retention.ms": "1234"}
    assert topics[kafka.object_events_topic].config["cleanup.policy"] == "delete"
    assert {t.partitions for t in topics.values()} == {6}
