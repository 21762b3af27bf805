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
from functools import partial
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
from service_adapters import generations, metadata_store, object_store
from service_adapters.embedder import TritonEmbedder
from service_adapters.generations import Generation
from service_adapters.vector_index import VectorIndex, default_index_params

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
    """A message to produce: to the dead-letter topic, to the named topic, or (topic None) to
    the agent's next topic."""

    dead: bool
    key: bytes | None
    value: bytes | None
    topic: str | None = None


@dataclass(frozen=True)
class Route:
    """Where the embed stage sends one model's embeddings."""

    model: str  # the Triton model
    topic: str  # the embeddings topic
    model_id: str | None  # what the generation expects; None: whatever the model is
    live: bool = True  # its failures mark the image's row failed (a build's do not)


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

    def active_generations(self) -> list[Generation]:
        """The building and live generations, read afresh for every batch: a reindex that
        registers one is written to from the next batch on."""
        return retry_until_done(
            lambda: generations.active(self._mysql()), "read the generation registry"
        )

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
        mark_failed: bool = True,
    ) -> Output:
        reason = error if isinstance(error, str) else str(error)
        error_type = "Rejected" if isinstance(error, str) else type(error).__name__
        log.info("dead letter", extra={"stage": stage, "image_id": image_id, "reason": reason})
        if image_id is not None and mark_failed:
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


class EmbedStage(Stage):
    """images topic -> embeddings topics: fetch the bytes, embed them through Triton with the
    model of every building and live generation, one embeddings topic per model.

    `replay` is the generation a replay fills: it alone is embedded for, and an upload whose
    object is gone is skipped (a later delete in the log removed it), not dead-lettered.
    """

    def __init__(self, settings: Settings, replay: Generation | None = None) -> None:
        super().__init__(settings)
        config = settings.processors
        self.replay = replay
        self.embedders: dict[str, TritonEmbedder] = {}
        self.pool = ThreadPoolExecutor(max(config.embed_in_flight, 8))

    def routes(self) -> list[Route]:
        """One route per embeddings topic of the generations to embed for; before any
        generation exists, the configured model and topic."""
        if self.replay is not None:
            chosen = [self.replay]
        else:
            chosen = list({g.embeddings_topic: g for g in self.active_generations()}.values())
        if not chosen:
            return [
                Route(self.settings.processors.model, self.settings.kafka.embeddings_topic, None)
            ]
        return [Route(g.model, g.embeddings_topic, g.model_id, g.state == "live") for g in chosen]

    def embedder(self, model: str) -> TritonEmbedder:
        if model not in self.embedders:
            self.embedders[model] = TritonEmbedder(self.settings.triton, model, protocol="grpc")
        return self.embedders[model]

    def process(self, messages: list[SourceMessage]) -> list[Output]:
        routes = self.routes()
        outputs: list[list[Output] | None] = [None] * len(messages)
        uploads: list[tuple[int, ImageMetadata]] = []
        deleted_later: set[str] = set()
        for index in reversed(range(len(messages))):
            message = messages[index]
            if message.value is None:  # a tombstone: pass it on, compaction needs it downstream
                deleted_later.add((message.key or b"").decode(errors="replace"))
                outputs[index] = [Output(False, message.key, None, r.topic) for r in routes]
                continue
            try:
                event = self.serializer.loads(message.value)
            except MalformedEvent as exc:
                outputs[index] = [self.dead_letter(message, "decode", exc)]
                continue
            if isinstance(event, ImageDeleted):
                deleted_later.add(event.image_id)
                outputs[index] = [
                    Output(False, message.key, message.value, r.topic) for r in routes
                ]
            elif isinstance(event, ImageUploaded):
                if event.image.image_id in deleted_later:
                    outputs[index] = []  # superseded: nothing to send
                else:
                    uploads.append((index, event.image))
            else:
                outputs[index] = [
                    self.dead_letter(
                        message,
                        "decode",
                        f"{type(event).__name__} does not belong on the images topic",
                    )
                ]
        uploads.reverse()
        if uploads:
            self._embed_uploads(messages, uploads, routes, outputs)
            self.record_failures()
        return [o for group in outputs if group for o in group]

    def _embed_uploads(
        self,
        messages: list[SourceMessage],
        uploads: list[tuple[int, ImageMetadata]],
        routes: list[Route],
        outputs: list[list[Output] | None],
    ) -> None:
        fetched = list(self.pool.map(self.fetch, [image for _, image in uploads]))
        ready = []
        for (index, image), data in zip(uploads, fetched, strict=True):
            if not isinstance(data, str):
                ready.append((index, image, data))
                outputs[index] = []
            elif self.replay is not None:  # gone: a later delete in the log removed it
                outputs[index] = []
            else:
                outputs[index] = [self.dead_letter(messages[index], "fetch", data, image.image_id)]
        if not ready:
            return
        for route in routes:
            model_id = retry_until_done(partial(self._identity, route), f"ask {route.model}")
            vectors, errors = self._embed(route.model, [data for _, _, data in ready])
            for (index, image, _), vector, error in zip(ready, vectors, errors, strict=True):
                group = outputs[index]
                assert group is not None
                if error:
                    group.append(
                        self.dead_letter(
                            messages[index],
                            "embed",
                            f"{route.model}: {error}",
                            image.image_id,
                            mark_failed=route.live,
                        )
                    )
                else:
                    event = EmbeddingComputed.of(image, model_id, vector)
                    group.append(
                        Output(
                            False, messages[index].key, self.serializer.dumps(event), route.topic
                        )
                    )

    def _identity(self, route: Route) -> str:
        """The model id of the route's embeddings (retried while Triton serves another
        version than the generation holds: models never mix)."""
        embedder = self.embedder(route.model)
        if route.model_id is None:
            return embedder.identity().model_id
        return embedder.expect(route.model_id).model_id

    def _embed(self, model: str, images: list[bytes]) -> tuple[np.ndarray, list[str]]:
        """Several Triton requests in flight at once, so that every instance stays busy."""
        size = self.settings.processors.embed_chunk
        chunks = [images[i : i + size] for i in range(0, len(images), size)]
        embedder = self.embedder(model)
        results = retry_until_done(
            lambda: list(self.pool.map(embedder.embed, chunks)),
            f"embed with Triton model {model}",
        )
        vectors = np.concatenate([vectors for vectors, _ in results])
        errors = [error for _, chunk_errors in results for error in chunk_errors]
        return vectors, errors


class IndexStage(Stage):
    """embeddings topics -> Milvus and MySQL (and deletes from MinIO).

    Each event goes into every building and live generation filled from its topic. The
    metadata rows belong to the live generation's topic (or to whoever writes while nothing
    is live, as during a rebuild from nothing). `replay` is the generation a replay fills:
    it alone is written, its deletes touch it alone, and rows are written only while no
    generation is live (the live pipeline keeps them otherwise).
    """

    def __init__(self, settings: Settings, replay: Generation | None = None) -> None:
        super().__init__(settings)
        self.replay = replay
        self.index = retry_until_done(
            lambda: VectorIndex(settings.milvus, settings.processors), "connect to Milvus"
        )
        self.created: set[str] = set()

    def process(self, messages: list[SourceMessage]) -> list[Output]:
        outputs: list[Output] = []
        by_topic: dict[str, list[tuple[str, Any]]] = {}
        for message in messages:
            key = (message.key or b"").decode(errors="replace")
            events = by_topic.setdefault(message.topic, [])
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
                        f"{type(event).__name__} does not belong on an embeddings topic",
                    )
                )
                continue
            events.append((key, event))
        for topic, events in by_topic.items():
            outputs.extend(self._apply(topic, events, messages))
        return outputs

    def _targets(self, topic: str, model_id: str | None, dim: int) -> tuple[list[Generation], bool]:
        """The generations filled from `topic`, and whether this writer keeps the rows."""
        if self.replay is not None:
            serving = retry_until_done(
                lambda: generations.live(self._mysql()), "read the generation registry"
            )
            return [self.replay], serving is None
        active = self.active_generations()
        if not active and model_id is not None:
            active = retry_until_done(
                lambda: self._first_generation(topic, model_id, dim),
                "register the first generation",
            )
        live = [g for g in active if g.state == "live"]
        owns_rows = not live or live[0].embeddings_topic == topic
        return [g for g in active if g.embeddings_topic == topic], owns_rows

    def _first_generation(self, topic: str, model_id: str, dim: int) -> list[Generation]:
        """Before any generation exists, the first embedding registers one, live at once."""
        conn = self._mysql()
        with generations.locked(conn):
            active = generations.active(conn)
            live = [g for g in active if g.state == "live"]
            if live and self.index.aliased() is None:  # registered, then failed: finish it
                self._create(live[0])
                self.index.switch_alias(live[0].name)
            if active:
                return active
            index_type = self.settings.milvus.index_type
            first = generations.register(
                conn,
                alias=self.settings.milvus.collection,
                model=model_id.split(":")[0],  # the Triton model is named in its id
                model_id=model_id,
                dim=dim,
                embeddings_topic=topic,
                index_type=index_type,
                index_params=default_index_params(index_type, self.settings.processors),
                state="live",
                taken=self.index.exists,
            )
            self._create(first)
            self.index.switch_alias(first.name)
            log.info("first generation", extra={"generation": first.name, "model_id": model_id})
            return [first]

    def _create(self, generation: Generation) -> None:
        if generation.name not in self.created:
            self.index.create(
                generation.name,
                generation.model_id,
                generation.dim,
                generation.index_type,
                generation.index_params,
            )
            self.created.add(generation.name)

    def _apply(
        self, topic: str, events: list[tuple[str, Any]], messages: list[SourceMessage]
    ) -> list[Output]:
        plan = plan_index(events)
        sample = next(iter(plan.upserts.values()), None)
        targets, owns_rows = self._targets(
            topic, sample.model_id if sample else None, sample.dim if sample else 0
        )
        outputs: list[Output] = []
        if not targets and not owns_rows:
            # a retired generation's topic, read until the processors resubscribe: the embed
            # stage sends the same images to the live topic now
            log.info("retired topic", extra={"topic": topic, "events": len(events)})
            return outputs
        by_model: dict[str, list[EmbeddingComputed]] = {}
        for event in plan.upserts.values():
            by_model.setdefault(event.model_id, []).append(event)
        for model_id, embeddings in by_model.items():
            matching = [g for g in targets if g.model_id == model_id]
            if not matching:
                outputs.extend(self._unmatched(topic, model_id, embeddings, targets, messages))
                continue
            retry_until_done(
                lambda m=matching, e=embeddings: self._upsert(m, e, owns_rows),  # type: ignore[misc]
                f"index {len(embeddings)} embeddings of {model_id}",
            )
        if plan.deletes:
            retry_until_done(
                lambda: self._delete(list(plan.deletes), targets, owns_rows),
                f"delete {len(plan.deletes)} images",
            )
        return outputs

    def _unmatched(
        self,
        topic: str,
        model_id: str,
        embeddings: list[EmbeddingComputed],
        targets: list[Generation],
        messages: list[SourceMessage],
    ) -> list[Output]:
        """Embeddings of a model that no generation of their topic holds never go in: models
        never mix in one collection."""
        held = ", ".join(f"{g.name} ({g.model_id})" for g in targets) or "none"
        reason = (
            f"{model_id} is not the model of the generations filled from {topic} ({held}): "
            "re-embed with `cbir re-embed` to index another model"
        )
        wanted = {e.image.image_id for e in embeddings}
        return [
            self.dead_letter(m, "index", reason, (m.key or b"").decode(errors="replace"))
            for m in messages
            if m.topic == topic and (m.key or b"").decode(errors="replace") in wanted
        ]

    def _upsert(
        self, targets: list[Generation], embeddings: list[EmbeddingComputed], owns_rows: bool
    ) -> None:
        images = [e.image for e in embeddings]
        vectors = np.stack([e.vector for e in embeddings])
        live_written = 0
        for generation in targets:
            self._create(generation)
            written = self.index.upsert(generation.name, images, vectors)
            if generation.state == "live":
                live_written = written
        if owns_rows:
            conn = self._mysql()
            holder = next((g for g in targets if g.state == "live"), targets[0])
            metadata_store.upsert_indexed(conn, images, holder.model_id, holder.name)
        if live_written:
            metadata_store.bump_generation(self._mysql(), live_written)

    def _delete(self, image_ids: list[str], targets: list[Generation], owns_rows: bool) -> None:
        """The keeper of the rows (the live topic's writer) removes the images everywhere:
        every collection, retired ones too, the rows and the bytes. Any other writer (a
        replay, a building generation's topic) removes them from its own generations, and
        from the rows only while nothing is live (a rebuild from nothing)."""
        if self.replay is not None or not owns_rows:
            for generation in targets:
                self._create(generation)
                self.index.delete(generation.name, image_ids)
            if owns_rows:
                metadata_store.delete_images(self._mysql(), image_ids)
            return
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
