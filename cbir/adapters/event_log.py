"""Kafka clients with the project's settings, in one place: the `EventWriter` (producer) and
`TopicReader` (a replay's consumer) ports, consumer lag, dead-letter counts, and a peek at a
topic's first event. Topic administration is `kafka_topics.py`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as _TopicPartition

from cbir.adapters import kafka_topics
from cbir.domain.errors import ServiceUnavailable
from cbir.domain.log import LogMessage
from cbir.settings import KafkaSettings

log = logging.getLogger("cbir.kafka")
T = TypeVar("T")


def producer(kafka: KafkaSettings, **overrides: Any) -> Producer:
    """An idempotent producer that waits for every replica (no duplicates from its own
    retries, nothing acknowledged that a broker could lose)."""
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        # librdkafka's own lines go to Python logging, where they are formatted and filtered
        "logger": logging.getLogger("cbir.kafka.producer"),
        **overrides,
    }
    return Producer(config)


def consumer(kafka: KafkaSettings, group: str, **overrides: Any) -> Consumer:
    """A consumer that commits only when told to."""
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "logger": logging.getLogger("cbir.kafka.consumer"),
        **overrides,
    }
    return Consumer(config)


class KafkaWriter:
    """The `EventWriter` port."""

    def __init__(self, kafka: KafkaSettings, **overrides: Any) -> None:
        self.kafka = kafka
        self.producer = producer(kafka, **overrides)

    def send(
        self, messages: Sequence[tuple[str, bytes | None, bytes | None]], timeout_s: float = 60
    ) -> list[str | None]:
        outcome: list[str | None] = ["not acknowledged in time"] * len(messages)

        def delivered(index: int, error: KafkaError | None, _message: Any) -> None:
            outcome[index] = None if error is None else f"Kafka refused it: {error.str()}"

        for index, (topic, key, value) in enumerate(messages):
            while True:
                try:
                    self.producer.produce(
                        topic,
                        key=key,
                        value=value,
                        on_delivery=partial(delivered, index),
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self.producer.poll(0.1)
            self.producer.poll(0)
        if self.producer.flush(timeout_s) and all(o is not None for o in outcome):
            raise ServiceUnavailable(
                "Kafka",
                self.kafka.bootstrap_servers,
                "CBIR_KAFKA__BOOTSTRAP_SERVERS",
                f"no event acknowledged within {timeout_s:.0f} s",
            )
        return outcome

    def close(self) -> None:
        self.producer.flush(30)


def _partitions(client: Consumer, topic: str, timeout_s: float = 10) -> list[int]:
    metadata = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise KafkaException(metadata.error if metadata is not None else f"no topic {topic}")
    return sorted(metadata.partitions)


class KafkaTopicReader:
    """The `TopicReader` port: a topic read from its committed offsets (or its start) by a
    consumer group that is its only member, so partitions are assigned, not subscribed, and
    there is no rebalance to wait for."""

    def __init__(self, kafka: KafkaSettings, topic: str, group: str) -> None:
        self.topic = topic
        self.consumer = consumer(kafka, group)
        self.partitions = _partitions(self.consumer, topic)
        committed = self.consumer.committed(
            [_TopicPartition(topic, p) for p in self.partitions], timeout=10
        )
        self.positions: dict[int, int] = {}
        assignment = []
        for tp in committed:
            start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            assignment.append(_TopicPartition(topic, tp.partition, start))
            low, _ = self.consumer.get_watermark_offsets(
                _TopicPartition(topic, tp.partition), timeout=10
            )
            self.positions[tp.partition] = tp.offset if tp.offset >= 0 else low
        self.resumed = any(tp.offset >= 0 for tp in committed)
        self.consumer.assign(assignment)

    def read(self, max_messages: int, wait_s: float) -> list[LogMessage]:
        return [
            LogMessage(self.topic, m.partition() or 0, m.offset() or 0, m.key(), m.value())
            for m in self.consumer.consume(max_messages, timeout=wait_s)
            if m.error() is None
        ]

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        self.consumer.commit(
            offsets=[_TopicPartition(self.topic, p, o) for p, o in next_offsets.items()],
            asynchronous=False,
        )
        self.positions.update(next_offsets)

    def end_offsets(self, fresh: bool) -> dict[int, int]:
        """Each partition's end: as the last fetch saw it (free), or asked of the broker
        (a request that can wait behind a fetch, up to half a second)."""
        ends = {}
        for partition in self.partitions:
            tp = _TopicPartition(self.topic, partition)
            end = -1
            if not fresh:
                end = self.consumer.get_watermark_offsets(tp, cached=True)[1]
            if end < 0:  # not fetched yet, or asked for afresh
                end = self.consumer.get_watermark_offsets(tp, timeout=10)[1]
            ends[partition] = end
        return ends

    def close(self) -> None:
        self.consumer.close()


@dataclass(frozen=True)
class TopicLag:
    topic: str
    end_offset: int
    committed: int

    @property
    def lag(self) -> int:
        return self.end_offset - self.committed


def consumer_lag(kafka: KafkaSettings, group: str, topics: Sequence[str]) -> list[TopicLag]:
    """How far a consumer group is behind the end of each topic."""
    client = consumer(kafka, group)
    try:
        result = []
        for topic in topics:
            tps = [_TopicPartition(topic, p) for p in _partitions(client, topic)]
            committed = client.committed(tps, timeout=10)
            end = sum(client.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
            done = sum(max(tp.offset, 0) for tp in committed)
            result.append(TopicLag(topic, end, done))
        return result
    finally:
        client.close()


def message_count(kafka: KafkaSettings, topic: str) -> int:
    """Messages a topic holds now (end minus start of each partition)."""
    client = consumer(kafka, "cbir-status")
    try:
        total = 0
        for p in _partitions(client, topic):
            low, high = client.get_watermark_offsets(_TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        client.close()


def first_match(
    kafka: KafkaSettings, topic: str, pick: Callable[[bytes], T | None], wait_s: float = 30
) -> T | None:
    """What `pick` makes of the first message of a topic it accepts (not None), read without
    committing, to learn what a topic holds; None when none is accepted within `wait_s`.
    Raises LookupError when there is no such topic."""
    client = consumer(kafka, "cbir-peek")
    try:
        try:
            partitions = _partitions(client, topic)
        except KafkaException as exc:
            raise LookupError(topic) from exc
        client.assign([_TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            message = client.poll(1.0)
            if message is None or message.error() is not None or message.value() is None:
                continue
            found = pick(message.value() or b"")
            if found is not None:
                return found
        return None
    finally:
        client.close()


class KafkaEventLog:
    """The `EventLog` port: what the replay asks of Kafka."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka

    def writer(self) -> KafkaWriter:
        return KafkaWriter(self.kafka, **{"linger.ms": 5})

    def reader(self, topic: str, group: str) -> KafkaTopicReader:
        return KafkaTopicReader(self.kafka, topic, group)

    def topics(self) -> dict[str, int]:
        return kafka_topics.topic_partitions(self.kafka, timeout_s=10)

    def ensure_embeddings_topic(self, name: str) -> None:
        kafka_topics.ensure_topics(
            self.kafka, specs=[kafka_topics.embeddings_topic_spec(self.kafka, name)]
        )

    def delete_topic(self, name: str) -> None:
        kafka_topics.delete_topic(self.kafka, name)

    def delete_consumer_group(self, group: str) -> bool:
        return kafka_topics.delete_consumer_group(self.kafka, group)

    def lag(self, group: str, topics: Sequence[str]) -> int:
        return sum(t.lag for t in consumer_lag(self.kafka, group, topics))

    def first_match(
        self, topic: str, pick: Callable[[bytes], T | None], wait_s: float = 30
    ) -> T | None:
        return first_match(self.kafka, topic, pick, wait_s)
