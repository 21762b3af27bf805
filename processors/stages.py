"""The work of the two agents on one batch, synchronous (the agents run it in a thread).

Guarantee: a batch handler returns only when every event of the batch has its outcome written
(an embedding or a forwarded delete produced, a dead letter produced, the stores updated).
A failure of one item is that item's dead letter; a failure of a service (Triton, MinIO,
Milvus, MySQL down) is retried with back-off until it succeeds, so nothing is acknowledged,
and so nothing is lost, while a service is away. Reprocessing after a crash writes the same
rows and vectors again (content ids, upserts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from minio.error import S3Error

from cbir.settings import Settings
from processors.object_events import ObjectEvent, parse_object_events
from processors.plan import plan_index
from producers.ingest import image_id_of, object_key_of, sniff
from schemas.codec import MalformedEvent
from schemas.events import (
    DeadLetter,
    EmbeddingComputed,
    EventSerializer,
    ImageDeleted,
    ImageMetadata,
    ImageUploaded,
)
from service_adapters import metadata_store, object_store
from service_adapters.embedder import TritonEmbedder
from service_adapters.vector_index import VectorIndex, collection_name

log = logging.getLogger("cbir.processors")
T = TypeVar("T")


@dataclass(frozen=True)
class SourceMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Output:
    """A message to produce, to the next topic or the dead-letter topic."""

    dead: bool
    key: bytes | None
    value: bytes | None


def retry_until_done(action: Callable[[], T], what: str, max_wait_s: float = 30.0) -> T:
    """Run `action` until it succeeds, waiting longer after each failure (a service is down)."""
    wait = 0.5
    while True:
        try:
            return action()
        except Exception as exc:
            log.warning(
                "retrying",
                extra={"action": what, "error": f"{type(exc).__name__}: {exc}", "wait_s": wait},
            )
            time.sleep(wait)
            wait = min(max_wait_s, wait * 2)


class Stage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.serializer = EventSerializer()
        self.failures: dict[str, str] = {}  # image id -> reason, of the batch in hand
        self.minio = object_store.client(settings.minio)

    def record_failures(self) -> None:
        """Mark the batch's dead-lettered images `failed`, with the reason, for status queries."""
        if not self.failures:
            return

        def write() -> None:
            with metadata_store.connect(self.settings.mysql) as conn:
                for image_id, reason in self.failures.items():
                    metadata_store.mark_failed(conn, image_id, reason)

        retry_until_done(write, f"mark {len(self.failures)} images failed")
        self.failures = {}

    def fetch(self, image: ImageMetadata) -> bytes | str:
        """The image's bytes, or why they are gone for good."""

        def get() -> bytes | str:
            try:
                response = self.minio.get_object(image.bucket, image.object_key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
                    return f"the object {image.bucket}/{image.object_key} is gone (deleted?)"
                raise
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return retry_until_done(get, f"fetch {image.object_key} from MinIO")

    def process(self, messages: list[SourceMessage]) -> list[Output]:
        """What to produce for this batch, in order; returns only when it is all decided."""
        raise NotImplementedError

    def dead_letter(
        self,
        message: SourceMessage,
        stage: str,
        error: BaseException | str,
        image_id: str | None = None,
    ) -> Output:
        reason = error if isinstance(error, str) else str(error)
        error_type = "Rejected" if isinstance(error, str) else type(error).__name__
        log.info("dead letter", extra={"stage": stage, "image_id": image_id, "reason": reason})
        if image_id is not None:
            self.failures[image_id] = f"{stage}: {reason}"
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
        return Output(True, message.key, self.serializer.dumps(letter))


def _sendable(outputs: list[Output | None]) -> list[Output]:
    """The decided outputs, less the superseded ones (no key and no value)."""
    return [o for o in outputs if o is not None and (o.key is not None or o.value is not None)]


class EmbedStage(Stage):
    """images topic -> embeddings topic: fetch the bytes, embed them through Triton."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        config = settings.processors
        self.embedder = TritonEmbedder(settings.triton, config.model, protocol="grpc")
        self.pool = ThreadPoolExecutor(max(config.embed_in_flight, 8))

    def process(self, messages: list[SourceMessage]) -> list[Output]:
        outputs: list[Output | None] = [None] * len(messages)
        uploads: list[tuple[int, ImageMetadata]] = []
        deleted_later: set[str] = set()
        for index in reversed(range(len(messages))):
            message = messages[index]
            if message.value is None:  # a tombstone: pass it on, compaction needs it downstream
                deleted_later.add((message.key or b"").decode(errors="replace"))
                outputs[index] = Output(False, message.key, None)
                continue
            try:
                event = self.serializer.loads(message.value)
            except MalformedEvent as exc:
                outputs[index] = self.dead_letter(message, "decode", exc)
                continue
            if isinstance(event, ImageDeleted):
                deleted_later.add(event.image_id)
                outputs[index] = Output(False, message.key, message.value)
            elif isinstance(event, ImageUploaded):
                if event.image.image_id in deleted_later:
                    outputs[index] = Output(False, None, None)  # superseded: nothing to send
                else:
                    uploads.append((index, event.image))
            else:
                outputs[index] = self.dead_letter(
                    message, "decode", f"{type(event).__name__} does not belong on the images topic"
                )
        uploads.reverse()
        if not uploads:  # deletes only: no need to wait for Triton
            return _sendable(outputs)
        identity = retry_until_done(self.embedder.identity, f"ask Triton for {self.embedder.model}")
        fetched = list(self.pool.map(self.fetch, [image for _, image in uploads]))
        ready = [
            (i, image, data)
            for (i, image), data in zip(uploads, fetched, strict=True)
            if not isinstance(data, str)
        ]
        for (index, image), data in zip(uploads, fetched, strict=True):
            if isinstance(data, str):
                outputs[index] = self.dead_letter(messages[index], "fetch", data, image.image_id)
        vectors, errors = self._embed([data for _, _, data in ready])
        for (index, image, _), vector, error in zip(ready, vectors, errors, strict=True):
            if error:
                outputs[index] = self.dead_letter(messages[index], "embed", error, image.image_id)
            else:
                event = EmbeddingComputed.of(image, identity.model_id, vector)
                outputs[index] = Output(False, messages[index].key, self.serializer.dumps(event))
        self.record_failures()
        return _sendable(outputs)

    def _embed(self, images: list[bytes]) -> tuple[np.ndarray, list[str]]:
        """Several Triton requests in flight at once, so that every instance stays busy."""
        if not images:
            return np.zeros((0, 0), np.float32), []
        size = self.settings.processors.embed_chunk
        chunks = [images[i : i + size] for i in range(0, len(images), size)]
        results = retry_until_done(
            lambda: list(self.pool.map(self.embedder.embed, chunks)),
            f"embed with Triton model {self.embedder.model}",
        )
        vectors = np.concatenate([vectors for vectors, _ in results])
        errors = [error for _, chunk_errors in results for error in chunk_errors]
        return vectors, errors


class IndexStage(Stage):
    """embeddings topic -> Milvus and MySQL (and deletes from MinIO)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.index = retry_until_done(
            lambda: VectorIndex(settings.milvus, settings.processors), "connect to Milvus"
        )
        self._connection: Any = None

    def _mysql(self) -> Any:
        """One connection for the stage's life, opened again after it breaks."""
        if self._connection is not None:
            try:
                self._connection.ping(reconnect=True)
            except Exception:
                self._connection = None
        if self._connection is None:
            self._connection = metadata_store.open_connection(self.settings.mysql)
        return self._connection

    def process(self, messages: list[SourceMessage]) -> list[Output]:
        outputs: list[Output] = []
        events: list[tuple[str, Any]] = []
        for message in messages:
            key = (message.key or b"").decode(errors="replace")
            if message.value is None:
                events.append((key, None))
                continue
            try:
                event = self.serializer.loads(message.value)
            except MalformedEvent as exc:
                outputs.append(self.dead_letter(message, "decode", exc))
                continue
            if not isinstance(event, EmbeddingComputed | ImageDeleted):
                outputs.append(
                    self.dead_letter(
                        message,
                        "decode",
                        f"{type(event).__name__} does not belong on the embeddings topic",
                    )
                )
                continue
            events.append((key, event))
        plan = plan_index(events)
        by_model: dict[str, list[EmbeddingComputed]] = {}
        for event in plan.upserts.values():
            by_model.setdefault(event.model_id, []).append(event)
        for model_id, embeddings in by_model.items():
            retry_until_done(
                lambda m=model_id, e=embeddings: self._upsert(m, e),  # type: ignore[misc]
                f"index {len(embeddings)} embeddings of {model_id}",
            )
        if plan.deletes:
            retry_until_done(
                lambda: self._delete(list(plan.deletes)), f"delete {len(plan.deletes)} images"
            )
        return outputs

    def _upsert(self, model_id: str, embeddings: list[EmbeddingComputed]) -> None:
        images = [e.image for e in embeddings]
        written = self.index.upsert(model_id, images, np.stack([e.vector for e in embeddings]))
        generation = collection_name(self.settings.milvus.collection, model_id)
        conn = self._mysql()
        metadata_store.upsert_indexed(conn, images, model_id, generation)
        metadata_store.bump_generation(conn, written)

    def _delete(self, image_ids: list[str]) -> None:
        rows = metadata_store.lookup(self._mysql(), image_ids)
        written = self.index.delete_everywhere(image_ids)
        metadata_store.delete_images(self._mysql(), image_ids)
        metadata_store.bump_generation(self._mysql(), written)
        for image_id in image_ids:
            key = rows[image_id]["object_key"] if image_id in rows else object_key_of(image_id)
            self.minio.remove_object(self.settings.minio.bucket, key)


class ObjectEventsStage(Stage):
    """object-events topic (MinIO bucket notifications) -> images topic.

    An object created by any S3 client becomes an ImageUploaded event (its id is the sha256
    of its bytes, its key stays the client's); one removed becomes ImageDeleted plus a
    tombstone for every image stored under that key. Objects of our own producer are skipped.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)

    def process(self, messages: list[SourceMessage]) -> list[Output]:
        outputs: list[Output] = []
        for message in messages:
            try:
                events = parse_object_events(message.value or b"")
            except (ValueError, KeyError, TypeError) as exc:
                outputs.append(
                    self.dead_letter(message, "decode", f"not a bucket notification: {exc}")
                )
                continue
            for event in events:
                if event.ours or event.bucket != self.settings.minio.bucket:
                    continue
                outputs.extend(self._created(event) if event.created else self._removed(event))
        return outputs

    def _created(self, event: ObjectEvent) -> list[Output]:
        image = ImageMetadata(
            image_id="",
            bucket=event.bucket,
            object_key=event.key,
            file_name=event.key.rsplit("/", 1)[-1],
            source="s3",
            content_type="",
            size_bytes=event.size,
            width=0,
            height=0,
            uploaded_at=event.time,
        )
        data = self.fetch(image)
        if isinstance(data, str):
            return []  # removed again already; its removal event follows
        content_type, width, height = sniff(data)
        image = replace(
            image,
            image_id=image_id_of(data),
            content_type=content_type,
            size_bytes=len(data),
            width=width,
            height=height,
        )
        retry_until_done(lambda: self._pending(image), "record the image as pending")
        key = image.image_id.encode()
        return [Output(False, key, self.serializer.dumps(ImageUploaded(image)))]

    def _pending(self, image: ImageMetadata) -> None:
        with metadata_store.connect(self.settings.mysql) as conn:
            metadata_store.insert_pending(conn, [image])

    def _removed(self, event: ObjectEvent) -> list[Output]:
        def find() -> list[str]:
            with metadata_store.connect(self.settings.mysql) as conn:
                return metadata_store.image_ids_for_object(conn, event.key)

        outputs = []
        for image_id in retry_until_done(find, f"look up the images of {event.key}"):
            deleted = ImageDeleted(image_id=image_id, source="s3", reason="object removed")
            outputs.append(Output(False, image_id.encode(), self.serializer.dumps(deleted)))
            outputs.append(Output(False, image_id.encode(), None))
        return outputs
