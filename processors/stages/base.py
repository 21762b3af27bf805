"""What every stage shares: the retry policy, dead letters, and the failures of a batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

from cbir.domain.errors import Permanent
from cbir.domain.images import is_image_id
from cbir.domain.log import DeadLettered, LogMessage, Outcome
from cbir.domain.retry import RetryPolicy
from cbir.ports import MetadataStore, ObjectStore
from schemas.events import DeadLetter, EventSerializer

log = logging.getLogger("cbir.processors")
T = TypeVar("T")


class Stage:
    """A stage: `process` a batch into outcomes. Subclasses write `_process`; the failures
    they record are written to the metadata store once per batch."""

    name = "stage"
    # a batch dead-lettered whole marks its images' rows failed (not for a stage whose
    # output is derived and recomputable: its failure says nothing about the image)
    marks_failed = True

    def __init__(self, metadata: MetadataStore, policy: RetryPolicy) -> None:
        self.metadata = metadata
        self.policy = policy
        self.serializer = EventSerializer()
        self._failures: dict[str, str] = {}  # image id -> reason, of the batch in hand

    def process(self, messages: Sequence[LogMessage]) -> list[Outcome]:
        """What to produce for this batch, in order; returns only when it is all decided, and
        never raises (a runner acknowledges a batch whose handler raised: it would be lost).
        A failure that escapes the stage's own handling is the batch's: transient, the batch
        is processed again (the sinks are idempotent); permanent or unexpected past the
        policy's bound, every message of the batch is dead-lettered with the reason."""
        batch = list(messages)

        def attempt() -> list[Outcome]:
            self._failures = {}
            return self._process(batch)

        try:
            outcomes = self.policy.run(attempt, f"{self.name}: a batch of {len(batch)}")
        except Permanent as exc:
            log.error("batch dead-lettered", extra={"stage": self.name, "error": str(exc)})
            self._failures = {}
            outcomes = [
                self.dead_letter(
                    m,
                    self.name,
                    exc,
                    m.key_text if is_image_id(m.key_text) else None,
                    mark_failed=self.marks_failed,
                )
                for m in batch
            ]
        if self._failures:
            failures, self._failures = self._failures, {}
            try:
                self.policy.run(
                    lambda: self.metadata.mark_failed(failures),
                    f"mark {len(failures)} images failed",
                )
            except Permanent as exc:  # the dead letters say it all the same
                log.error("failures not recorded", extra={"error": str(exc)})
        return outcomes

    def _process(self, messages: list[LogMessage]) -> list[Outcome]:
        raise NotImplementedError

    def miskeyed(self, message: LogMessage, image_id: str) -> DeadLettered | None:
        """The dead letter of an event whose key is not its image's id (its events would not
        share a partition, so their order would not hold), or None when the key is right."""
        if message.key_text == image_id:
            return None
        reason = (
            f"the key {message.key_text[:80]!r} is not the image id {image_id}: a producer "
            "must key every event by its image id (per-image ordering depends on it)"
        )
        return self.dead_letter(message, "decode", reason)

    def dead_letter(
        self,
        message: LogMessage,
        stage: str,
        error: BaseException | str,
        image_id: str | None = None,
        mark_failed: bool = True,
    ) -> DeadLettered:
        """The dead letter of a message, with the reason; the image's row is marked failed
        at the end of the batch unless `mark_failed` is off (a building generation's)."""
        reason = error if isinstance(error, str) else str(error)
        error_type = "Rejected" if isinstance(error, str) else type(error).__name__
        log.info("dead letter", extra={"stage": stage, "image_id": image_id, "reason": reason})
        if image_id is not None and mark_failed:
            self._failures[image_id] = f"{stage}: {reason}"
        letter = DeadLetter(
            stage=stage,
            reason=reason,
            error_type=error_type,
            original_topic=message.topic,
            original_partition=message.partition,
            original_offset=message.offset,
            image_id=image_id,
            original_key=message.key,
            original_value=message.value,
        )
        return DeadLettered(message.key, self.serializer.dumps(letter), reason, image_id)


def fetch(policy: RetryPolicy, objects: ObjectStore, bucket: str, key: str) -> bytes | str:
    """An object's bytes (waiting while the store is away), or why they are gone for good."""
    try:
        data = policy.run(lambda: objects.get(bucket, key), f"fetch {key} from the object store")
    except Permanent as exc:
        return str(exc)
    return data if data is not None else f"the object {bucket}/{key} is gone (deleted?)"
