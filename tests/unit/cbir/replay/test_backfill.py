"""The backfill's loop: batches written in the log's order, one at a time, each committed only
once written (fakes of the reader and the stage: the real ones are covered by
tests/integration/test_replay.py)."""

from __future__ import annotations

from collections.abc import Mapping

from cbir.domain.log import Forward, LogMessage, Outcome
from cbir.domain.retry import RetryPolicy
from cbir.replay.backfill import Backfill
from cbir.settings import Settings
from cbir.wiring import destinations
from processors.stages import Stage
from tests.fakes import FakeMetadataStore, FakeWriter

TOPIC = "cbir.embeddings"


class FakeReader:
    """A topic of `count` messages over two partitions, handed out as `read` asks; every read
    and commit recorded in `log`, beside the stage's writes."""

    def __init__(self, count: int, log: list[str]) -> None:
        self.topic = TOPIC
        self.positions: dict[int, int] = {0: 0, 1: 0}
        self.left = [
            LogMessage(TOPIC, i % 2, i // 2, str(i).encode(), str(i).encode()) for i in range(count)
        ]
        self.log = log

    def read(self, max_messages: int, wait_s: float) -> list[LogMessage]:
        batch, self.left = self.left[:max_messages], self.left[max_messages:]
        self.log.append(f"read {len(batch)}")
        return batch

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        self.log.append(f"commit {dict(sorted(next_offsets.items()))}")
        self.positions.update(next_offsets)

    def end_offsets(self, fresh: bool) -> dict[int, int]:
        return {0: 0, 1: 0}

    def close(self) -> None:
        pass


class RecordingStage(Stage):
    """Forwards every message; records what it wrote."""

    name = "recording"

    def __init__(self, log: list[str]) -> None:
        super().__init__(FakeMetadataStore(), RetryPolicy())
        self.log = log

    def _process(self, messages: list[LogMessage]) -> list[Outcome]:
        self.log.append(f"write {messages[0].key_text}..{messages[-1].key_text}")
        return [Forward(m.key, m.value, "cbir.out") for m in messages]


def run(count: int, batch: int) -> tuple[list[str], FakeWriter, Backfill]:
    log: list[str] = []
    reader, writer, stage = FakeReader(count, log), FakeWriter(), RecordingStage(log)
    backfill = Backfill(destinations(Settings()), reader, writer, stage, batch)
    while backfill.step(wait_s=0.0):
        pass
    backfill.close()
    return log, writer, backfill


def test_every_batch_is_written_in_order_and_committed_after_it_is_written() -> None:
    log, writer, backfill = run(count=10, batch=4)
    assert [key for _, key, _ in writer.sent] == [str(i).encode() for i in range(10)]
    assert backfill.throughput.total == 10
    writes = [entry for entry in log if entry.startswith("write")]
    commits = [entry for entry in log if entry.startswith("commit")]
    assert writes == ["write 0..3", "write 4..7", "write 8..9"]
    assert commits == ["commit {0: 2, 1: 2}", "commit {0: 4, 1: 4}", "commit {0: 5, 1: 5}"]
    for write, commit in zip(writes, commits, strict=True):
        assert log.index(write) < log.index(commit)  # never committed before it is written


def test_an_empty_topic_writes_nothing() -> None:
    log, writer, backfill = run(count=0, batch=4)
    assert writer.sent == [] and backfill.throughput.total == 0
    assert log == ["read 0"]
