"""Reading the pipeline's topics from the start, as a fresh consumer group (test helper)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer

from cbir.settings import Settings
from schemas.codec import MalformedEvent
from schemas.events import Event, EventSerializer


def read_events(
    settings: Settings,
    topic: str,
    enough: Callable[[list[tuple[bytes, Event]]], bool],
    timeout_s: float = 30,
) -> list[tuple[bytes, Event]]:
    """(key, event) pairs from the beginning of a topic until `enough` says so, or until the
    timeout. Tombstones are skipped, and so are messages that are no event: the log may hold
    malformed messages (the hostile-input test sends some), which the processors
    dead-letter."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    events: list[tuple[bytes, Event]] = []
    serializer = EventSerializer()
    deadline = time.monotonic() + timeout_s
    try:
        while not enough(events) and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None or message.value() is None:
                continue
            try:
                event = serializer.loads(message.value())
            except MalformedEvent:
                continue
            events.append((message.key() or b"", event))
    finally:
        consumer.close()
    return events
