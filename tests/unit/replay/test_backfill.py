"""The backfill's loop: batches written in the log's order, one at a time, each committed only
once written, the next one read and prepared while the last is written (fakes of the reader
and the stage: the real ones are covered by tests/integration/test_replay.py)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from cbir.settings import Settings
from domain.log import Forward, LogMessage, Outcome
from domain.retry import RetryPolicy
from processors.stages import Stage
from replay.backfill import Backfill
from tests.fakes import FakeMetadataStore, FakeWriter

TOPIC = "cbir.embeddings"


class FakeReader:
    """A topic of `count` messages over two partitions, handed out as `read` asks; every call
    and commit recorded with what the stage had written by then."""

    def __init__(self, count: int, log: list[str]) -> None:
        self.topic = TOPIC
        self.positions: dict[int, int] = {0: 0, 1: 0}
        self.left = [
            LogMessage(TOPIC, i % 2, i // 2, str(i).encode(), str(i).encode()) for i in range(count)
        ]
        self.log = log
        self.caller = threading.get_ident()

    def read(self, max_messages: int, wait_s: float) -> list[LogMessage]:
        assert threading.get_ident() == self.caller  # Kafka only from the caller's thread
        batch, self.left = self.left[:max_messages], self.left[max_messages:]
        self.log.append(f"read {len(batch)}")
        return batch

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        assert threading.get_ident() == self.caller
        self.log.append(f"commit {dict(sorted(next_offsets.items()))}")
        self.positions.update(next_offsets)

    def end_offsets(self, fresh: bool) -> dict[int, int]:
        return {0: 0, 1: 0}

    def close(self) -> None:
        pass


class RecordingStage(Stage):
    """Forwards every message; records what it prepared and wrote, and on which thread."""

    name = "recording"

    def __init__(self, log: list[str]) -> None:
        super().__init__(FakeMetadataStore(), RetryPolicy())
        self.log = log
        self.threads: set[int] = set()

    def prepare(self, messages: Sequence[LogMessage]) -> object | None:
        self.log.append(f"prepare {messages[0].key_text}..{messages[-1].key_text}")
        return [m.key_text for m in messages]

    def _process(self, messages: list[LogMessage]) -> list[Outcome]:
        raise AssertionError("a backfill hands over what it prepared")

    def _process_prepared(self, messages: list[LogMessage], prepared: object) -> list[Outcome]:
        assert prepared == [m.key_text for m in messages]
        self.threads.add(threading.get_ident())
        self.log.append(f"write {messages[0].key_text}..{messages[-1].key_text}")
        return [Forward(m.key, m.value, "cbir.out") for m in messages]


def run(
    count: int, batch: int, read_ahead: bool = True
) -> tuple[list[str], FakeWriter, RecordingStage, Backfill]:
    log: list[str] = []
    reader, writer, stage = FakeReader(count, log), FakeWriter(), RecordingStage(log)
    backfill = Backfill(Settings(), reader, writer, stage, batch, read_ahead=read_ahead)
    while backfill.step(wait_s=0.0):
        pass
    backfill.close()
    return log, writer, stage, backfill


def test_every_batch_is_written_in_order_and_committed_after_it_is_written() -> None:
    log, writer, stage, backfill = run(count=10, batch=4)
    assert [key for _, key, _ in writer.sent] == [str(i).encode() for i in range(10)]
    assert backfill.throughput.total == 10
    writes = [entry for entry in log if entry.startswith("write")]
    commits = [entry for entry in log if entry.startswith("commit")]
    assert writes == ["write 0..3", "write 4..7", "write 8..9"]
    assert commits == ["commit {0: 2, 1: 2}", "commit {0: 4, 1: 4}", "commit {0: 5, 1: 5}"]
    for write, commit in zip(writes, commits, strict=True):
        assert log.index(write) < log.index(commit)  # never committed before it is written
    assert threading.get_ident() not in stage.threads  # the writes ran on the writer thread


def test_the_next_batch_is_read_and_prepared_before_the_last_is_committed() -> None:
    log, *_ = run(count=8, batch=4)
    assert log.index("prepare 4..7") < log.index("commit {0: 2, 1: 2}")
    assert log.index("write 0..3") < log.index("write 4..7")


def test_an_empty_topic_writes_nothing() -> None:
    log, writer, _, backfill = run(count=0, batch=4)
    assert writer.sent == [] and backfill.throughput.total == 0
    assert log == ["read 0"]


def test_without_the_read_ahead_each_batch_is_read_after_the_last_is_committed() -> None:
    log, writer, *_ = run(count=8, batch=4, read_ahead=False)
    assert log.index("commit {0: 2, 1: 2}") < log.index("prepare 4..7")
    assert [key for _, key, _ in writer.sent] == [str(i).encode() for i in range(8)]
