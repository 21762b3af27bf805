"""Messages of the event log as the stages see them, and what a stage decides for each: pure
types, so that a stage runs the same under Faust, under a replay, and in a unit test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LogMessage:
    """One message read from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone

    @property
    def key_text(self) -> str:
        return (self.key or b"").decode(errors="replace")


@dataclass(frozen=True)
class Forward:
    """Produce this message to `topic`, or (topic None) to the stage's next topic."""

    key: bytes | None
    value: bytes | None
    topic: str | None = None


@dataclass(frozen=True)
class DeadLettered:
    """Produce this dead letter (an encoded `DeadLetter` event) to the dead-letter topic."""

    key: bytes | None
    value: bytes
    reason: str
    image_id: str | None = None


Outcome = Forward | DeadLettered
