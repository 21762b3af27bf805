"""Reading one topic from its beginning through a stage, as a consumer group of its own.

The group is named after the generation being filled, and its offsets are committed only
after the stage has written a batch (and Kafka has acknowledged what it produced), so a
replay that is killed continues from its last committed batch when run again: at-least-once,
made harmless by the idempotent sinks, exactly like the processors.

Partitions are assigned, not subscribed: the replay is the group's only member, so there is
no rebalance to wait for.

While a batch is written (the stage's sinks, on a thread of its own), the next one is read
and decoded (`Stage.prepare`); batches are still written one after the other, in the log's
order, and each is committed only once written. Kafka is only touched from the caller's
thread.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from cbir.settings import Settings
from domain.errors import ServiceUnavailable
from domain.log import DeadLettered, LogMessage, Outcome
from ports import EventWriter, TopicReader
from processors.stages import Stage
from replay.progress import Throughput, lag, pause_for_rate

log = logging.getLogger("cbir.replay")


class Backfill:
    def __init__(
        self,
        settings: Settings,
        reader: TopicReader,
        writer: EventWriter,
        stage: Stage,
        batch_size: int,
        max_rate: float = 0.0,
        read_ahead: bool = True,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.writer = writer
        self.stage = stage
        self.batch_size = batch_size
        self.max_rate = max_rate
        self.read_ahead = read_ahead
        self.throughput = Throughput()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="backfill-write")
        self._ahead: tuple[list[LogMessage], object | None] | None = None

    def lag(self, fresh: bool = False) -> int:
        """Events left to replay; `fresh` asks the broker, for the final word."""
        return lag(self.reader.end_offsets(fresh), self.reader.positions)

    def step(self, wait_s: float = 0.5) -> int:
        """Write one batch through the stage (reading and decoding the next one meanwhile),
        produce what it made, commit it; the events written."""
        started = time.monotonic()
        if self._ahead is not None:
            (messages, prepared), self._ahead = self._ahead, None
        else:
            messages = self.reader.read(self.batch_size, wait_s)
            if not messages:
                return 0
            prepared = self.stage.prepare(messages)
        written = self._writer.submit(self.stage.process, messages, prepared)
        # what has been fetched already
        following = self.reader.read(self.batch_size, 0.0) if self.read_ahead else []
        if following:
            self._ahead = (following, self.stage.prepare(following))
        self._produce(written.result())
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
                topic = self.settings.kafka.dead_letter_topic
            elif outcome.topic is None:
                raise ValueError("a replay stage produced an outcome without a topic")
            else:
                topic = outcome.topic
            messages.append((topic, outcome.key, outcome.value))
        failures = [error for error in self.writer.send(messages) if error is not None]
        if failures:
            raise ServiceUnavailable(
                "Kafka",
                self.settings.kafka.bootstrap_servers,
                "CBIR_KAFKA__BOOTSTRAP_SERVERS",
                f"{len(failures)} replayed events not taken ({failures[0]}): nothing was "
                "committed, run the command again",
            )

    def close(self) -> None:
        self._writer.shutdown()
        self.writer.close()
        self.reader.close()
