"""images topic -> something derived from each image's bytes (its local features, its
thumbnails): made once per image and stored, removed when the image is deleted.

Such a stage runs in a consumer group of its own: a backlog here never holds back the embed and
index stages' offsets, so an image is searchable as soon as it is indexed. Its output is
derived and recomputable: nothing is dead-lettered here (the embed stage dead-letters what is
malformed on the images topic), and an image whose output cannot be made is logged and left
without it.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cbir.domain.log import LogMessage, Outcome
from cbir.domain.retry import RetryPolicy
from cbir.ports import MetadataStore, ObjectStore
from processors.stages.base import Stage, fetch
from schemas.codec import MalformedEvent
from schemas.events import ImageDeleted, ImageMetadata, ImageUploaded, now

log = logging.getLogger("cbir.processors")


@dataclass
class YieldToIndexing:
    """Derived work that waits while the indexing group is behind: before each batch, while
    `behind()` (images the indexing group has yet to take) is over `backlog`, it sleeps, at
    most `max_s` a batch, so that a burst of uploads is made searchable first and its
    derived work follows (each batch still goes on after `max_s`: never starved). A lag that
    cannot be read counts as none."""

    behind: Callable[[], int]
    backlog: int
    max_s: float
    poll_s: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    waited_s: float = field(default=0.0, init=False)  # in all, for the logs and the tests

    def _behind(self) -> int:
        try:
            return self.behind()
        except Exception as exc:  # Kafka away or slow: the derived work goes on
            log.warning("indexing lag unknown", extra={"error": str(exc)})
            return 0

    def wait(self) -> float:
        """Sleep while indexing is behind (bounded); the seconds slept."""
        started = self.clock()
        while self.clock() - started < self.max_s and self._behind() > self.backlog:
            self.sleep(min(self.poll_s, self.max_s - (self.clock() - started)))
        slept = self.clock() - started
        self.waited_s += slept
        return slept


class DerivedStage(Stage):
    """The images topic's latest event per image, in log order: uploads made, deletes
    removed. Subclasses say what is made (`_has`, `_make`, `_remove`)."""

    marks_failed = False
    output = "derived output"  # what is made, for the log

    def __init__(
        self,
        bucket: str,
        objects: ObjectStore,
        metadata: MetadataStore,
        policy: RetryPolicy,
        parallel: int = 2,
        yielding: YieldToIndexing | None = None,
    ) -> None:
        super().__init__(metadata, policy)
        self.bucket = bucket
        self.objects = objects
        self.yielding = yielding
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix=self.name)
        # an upload made after this moment can have no output yet: it is made without first
        # asking the store (a request less to MinIO per image while images stream in). A
        # clock out of step costs a look more or an output made again, the same: no harm.
        self._started = now()

    @abstractmethod
    def _has(self, image_id: str) -> bool: ...

    @abstractmethod
    def _make(self, image_id: str, data: bytes) -> object: ...

    @abstractmethod
    def _remove(self, image_id: str) -> None: ...

    def _process(self, messages: list[LogMessage]) -> list[Outcome]:
        uploads: dict[str, ImageMetadata] = {}
        deleted: set[str] = set()
        for message in messages:  # in log order: the last event of an image decides
            if message.value is None:
                uploads.pop(message.key_text, None)
                deleted.add(message.key_text)
                continue
            try:
                event = self.serializer.loads(message.value)
            except MalformedEvent:
                continue  # the embed stage dead-letters it
            if isinstance(event, ImageUploaded) and message.key_text == event.image.image_id:
                uploads[event.image.image_id] = event.image
                deleted.discard(event.image.image_id)
            elif isinstance(event, ImageDeleted) and message.key_text == event.image_id:
                uploads.pop(event.image_id, None)
                deleted.add(event.image_id)
        for image_id in sorted(deleted):
            self.policy.run(
                lambda image_id=image_id: self._remove(image_id),  # type: ignore[misc]
                f"remove {image_id}'s {self.output}",
            )
        if uploads and self.yielding is not None:
            slept = self.yielding.wait()
            if slept >= 1.0:
                log.info(f"{self.output} yielded to indexing", extra={"seconds": round(slept, 1)})
        list(self._pool.map(self._make_one, uploads.values()))
        return []

    def _make_one(self, image: ImageMetadata) -> None:
        """The image's output, unless it is stored already (a batch delivered again, a
        replay, or another stage came first): made once per image."""
        fresh = image.uploaded_at >= self._started
        if not fresh and self.policy.run(
            lambda: self._has(image.image_id), f"look for {self.output}"
        ):
            return
        data = fetch(self.policy, self.objects, self.bucket, image.object_key)
        if isinstance(data, str):  # gone: a later delete removed it (and its output)
            log.info("no bytes", extra={"image_id": image.image_id, "reason": data})
            return
        try:
            self.policy.run(
                lambda: self._make(image.image_id, data),
                f"store {image.image_id}'s {self.output}",
            )
        except Exception as exc:  # Permanent or GaveUp: the image itself is unaffected
            log.warning(
                f"{self.output} not stored",
                extra={"image_id": image.image_id, "error": str(exc)},
            )

    def close(self) -> None:
        self._pool.shutdown(wait=False)
