"""Reading one topic from its beginning through a stage, as a consumer group of its own.

The group is named after the generation being filled, and its offsets are committed only
after the stage has written a batch (and Kafka has acknowledged what it produced), so a
replay that is killed continues from its last committed batch when run again: at-least-once,
made harmless by the idempotent sinks, exactly like the processors.

Partitions are assigned, not subscribed: the replay is the group's only member, so there is
no rebalance to wait for.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from cbir.settings import Settings
from processors.stages import Output, SourceMessage, Stage
from replay.progress import Throughput, lag, pause_for_rate

log = logging.getLogger("cbir.replay")


class Backfill:
    def __init__(
        self,
        settings: Settings,
        topic: str,
        group: str,
        stage: Stage,
        batch_size: int,
        max_rate: float = 0.0,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group = group
        self.stage = stage
        self.batch_size = batch_size
        self.max_rate = max_rate
        self.throughput = Throughput()
        bootstrap = settings.kafka.bootstrap_servers
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "logger": logging.getLogger("cbir.kafka.replay"),
            }
        )
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "logger": logging.getLogger("cbir.kafka.replay"),
            }
        )
        metadata = self.consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        self.partitions = sorted(metadata.partitions)
        committed = self.consumer.committed(
            [TopicPartition(topic, p) for p in self.partitions], timeout=10
        )
        self.positions: dict[int, int] = {}
        assignment = []
        for tp in committed:
            start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            assignment.append(TopicPartition(topic, tp.partition, start))
            low, _ = self.consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10
            )
            self.positions[tp.partition] = tp.offset if tp.offset >= 0 else low
        self.resumed = any(tp.offset >= 0 for tp in committed)
        self.consumer.assign(assignment)

    def end_offsets(self, fresh: bool) -> dict[int, int]:
        """Each partition's end: as the last fetch saw it (free), or asked of the broker
        (a request that can wait behind a fetch, up to half a second)."""
        ends = {}
        for partition in self.partitions:
            tp = TopicPartition(self.topic, partition)
            end = -1
            if not fresh:
                end = self.consumer.get_watermark_offsets(tp, cached=True)[1]
            if end < 0:  # not fetched yet, or asked for afresh
                end = self.consumer.get_watermark_offsets(tp, timeout=10)[1]
            ends[partition] = end
        return ends

    def lag(self, fresh: bool = False) -> int:
        """Events left to replay; `fresh` asks the broker, for the final word."""
        return lag(self.end_offsets(fresh), self.positions)

    def step(self, wait_s: float = 0.5) -> int:
        """Read one batch, write it through the stage, commit it; the events read."""
        started = time.monotonic()
        messages = [
            m for m in self.consumer.consume(self.batch_size, timeout=wait_s) if m.error() is None
        ]
        if not messages:
            return 0
        sources = [
            SourceMessage(self.topic, m.partition() or 0, m.offset() or 0, m.key(), m.value())
            for m in messages
        ]
        self._produce(self.stage.process(sources))
        last: dict[int, int] = {}
        for source in sources:
            last[source.partition] = max(last.get(source.partition, -1), source.offset)
        self.consumer.commit(
            offsets=[TopicPartition(self.topic, p, o + 1) for p, o in last.items()],
            asynchronous=False,
        )
        for partition, offset in last.items():
            self.positions[partition] = offset + 1
        self.throughput.add(len(messages))
        time.sleep(pause_for_rate(len(messages), time.monotonic() - started, self.max_rate))
        return len(messages)

    def _produce(self, outputs: list[Output]) -> None:
        failures: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(str(error))

        for output in outputs:
            topic = self.settings.kafka.dead_letter_topic if output.dead else output.topic
            if topic is None:
                raise ValueError("a replay stage produced an output without a topic")
            self.producer.produce(topic, key=output.key, value=output.value, on_delivery=delivered)
            self.producer.poll(0)
        remaining = self.producer.flush(60)
        if failures or remaining:
            raise KafkaException(
                f"Kafka did not take {len(failures) + remaining} replayed events "
                f"({failures[:1]}): nothing was committed, run the command again"
            )

    def close(self) -> None:
        self.producer.flush(30)
        self.consumer.close()
