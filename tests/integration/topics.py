"""Reading the pipeline's topics from the start, as a fresh consumer group (test helper)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer

from cbir.settings import Settings
from schemas.events import Event, EventSerializer


def read_events(
    settings: Settings,
    topic: str,
    enough: Callable[[list[tuple[bytes, Event]]], bool],
    timeout_s: float = 30,
) -> list[tuple[bytes, Event]]:
    """(key, event) pairs from the beginning of a topic until `enough` says so (tombstones
    skipped), or until the timeout."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    events: list[tuple[bytes, Event]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not enough(events) and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None or message.value() is None:
                continue
            events.append((message.key() or b"", EventSerializer().loads(message.value())))
    finally:
        consumer.close()
    return events
