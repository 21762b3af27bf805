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
from dataclasses import dataclass

from cbir.domain.errors import ServiceUnavailable
from cbir.domain.log import DeadLettered, Outcome
from cbir.ports import EventWriter, TopicReader
from cbir.replay.progress import Throughput, lag, pause_for_rate
from processors.stages import Stage

log = logging.getLogger("cbir.replay")


@dataclass(frozen=True)
class Destinations:
    """Where a replay's failures go, and the Kafka named when it does not acknowledge."""

    dead_letter_topic: str
    kafka_address: str


class Backfill:
    def __init__(
        self,
        destinations: Destinations,
        reader: TopicReader,
        writer: EventWriter,
        stage: Stage,
        batch_size: int,
        max_rate: float = 0.0,
    ) -> None:
        self.destinations = destinations
        self.reader = reader
        self.writer = writer
        self.stage = stage
        self.batch_size = batch_size
        self.max_rate = max_rate
        self.throughput = Throughput()

    def lag(self, fresh: bool = False) -> int:
        """Events left to replay; `fresh` asks the broker, for the final word."""
        return lag(self.reader.end_offsets(fresh), self.reader.positions)

    def step(self, wait_s: float = 0.5) -> int:
        """Read one batch, write it through the stage, commit it; the events read."""
        started = time.monotonic()
        messages = self.reader.read(self.batch_size, wait_s)
        if not messages:
            return 0
        self._produce(self.stage.process(messages))
        last: dict[int, int] = {}
        for message in messages:
            last[message.partition] = max(last.get(message.partition, -1), message.offset)
        self.reader.commit({p: o + 1 for p, o in last.items()})
        self.throughput.add(len(messages))
        time.sleep(pause_for_rate(len(messages), time.monotonic() - started, self.max_rate))
        return len(messages)

    def _produce(self, outcomes: list[Outcome]) -> None:
        messages: list[tuple[str, bytes | None, bytes | None]] = []
        for outcome in outcomes:
            if isinstance(outcome, DeadLettered):
                topic = self.destinations.dead_letter_topic
            elif outcome.topic is None:
                raise ValueError("a replay stage produced an outcome without a topic")
            else:
                topic = outcome.topic
            messages.append((topic, outcome.key, outcome.value))
        failures = [error for error in self.writer.send(messages) if error is not None]
        if failures:
            raise ServiceUnavailable(
                "Kafka",
                self.destinations.kafka_address,
                "CBIR_KAFKA__BOOTSTRAP_SERVERS",
                f"{len(failures)} replayed events not taken ({failures[0]}): nothing was "
                "committed, run the command again",
            )

    def close(self) -> None:
        self.writer.close()
        self.reader.close()
