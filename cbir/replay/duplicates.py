"""The duplicates topic as a whole: read it (the latest record per image: the topic is
compacted) and recompute it from the live embeddings topic (a threshold or the model
changed), through the same stage the processors run."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from cbir.domain.log import DeadLettered, LogMessage
from cbir.ports import EventLog
from processors.stages import DuplicatesStage
from schemas.events import DuplicatesFound, EventSerializer

BATCH = 200


def _read_all(
    events: EventLog, topic: str, handle: Callable[[list[LogMessage]], None], purpose: str
) -> None:
    """Every message of `topic` up to its end as it is now, by a consumer group of its own
    (deleted afterwards)."""
    group = f"cbir-{purpose}-{uuid.uuid4().hex[:8]}"
    reader = events.reader(topic, group)
    try:
        ends = reader.end_offsets(fresh=True)
        positions = dict(reader.positions)
        while any(positions.get(p, 0) < end for p, end in ends.items()):
            batch = reader.read(BATCH, 1.0)
            for message in batch:
                positions[message.partition] = message.offset + 1
            if batch:
                handle(batch)
    finally:
        reader.close()
        events.delete_consumer_group(group)


def read_records(events: EventLog, topic: str) -> dict[str, DuplicatesFound]:
    """Each image's latest record (an image whose last message is a tombstone is left out)."""
    serializer = EventSerializer()
    latest: dict[str, DuplicatesFound | None] = {}

    def keep(batch: list[LogMessage]) -> None:
        for message in batch:
            event = serializer.loads(message.value) if message.value is not None else None
            latest[message.key_text] = event if isinstance(event, DuplicatesFound) else None

    _read_all(events, topic, keep, "duplicates-read")
    return {k: v for k, v in latest.items() if v is not None}


def recompute(
    events: EventLog,
    stage: DuplicatesStage,
    embeddings_topic: str,
    progress: Callable[[int], None] = lambda _n: None,
) -> int:
    """Every live embedding judged again, its record written to the duplicates topic; the
    number of records written."""
    writer = events.writer()
    written = 0

    def judge(batch: list[LogMessage]) -> None:
        nonlocal written
        outcomes = [o for o in stage.process(batch) if not isinstance(o, DeadLettered)]
        refused = writer.send([(o.topic or stage.topic, o.key, o.value) for o in outcomes])
        failed = [reason for reason in refused if reason is not None]
        if failed:
            raise RuntimeError(f"Kafka did not take {len(failed)} records: {failed[0]}")
        written += len(outcomes)
        progress(len(batch))

    try:
        _read_all(events, embeddings_topic, judge, "duplicates-recompute")
    finally:
        writer.close()
    return written
