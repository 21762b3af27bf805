"""images topic -> embeddings topics: fetch the bytes, embed them through Triton with the
model of every building and live generation, one embeddings topic per model. (Local features
are another consumer group's work: `features.py`.)"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from cbir.domain.errors import Permanent
from cbir.domain.generations import Generation
from cbir.domain.log import Forward, LogMessage, Outcome
from cbir.domain.retry import RetryPolicy
from cbir.domain.vectors import Vectors
from cbir.ports import Embedders, GenerationRegistry, MetadataStore, ObjectStore
from processors.stages.base import Stage, fetch
from schemas.codec import MalformedEvent
from schemas.events import EmbeddingComputed, ImageDeleted, ImageMetadata, ImageUploaded

log = logging.getLogger("cbir.processors")

# object reads in flight at once (network round trips, not CPU)
PARALLEL_FETCHES = 8


@dataclass(frozen=True)
class Route:
    """Where the embed stage sends one model's embeddings."""

    model: str  # the Triton model
    topic: str  # the embeddings topic
    model_id: str | None  # what the generation expects; None: whatever the model is
    live: bool = True  # its failures mark the image's row failed (a build's do not)


@dataclass(frozen=True)
class EmbedConfig:
    """What the embed stage needs of the settings (made by the wiring)."""

    model: str  # the Triton model embedded with before any generation exists
    embeddings_topic: str  # where that model's embeddings go
    in_flight: int  # Triton requests in flight at once
    chunk: int  # images per Triton request


class EmbedStage(Stage):
    """`replay` is the generation a replay fills: it alone is embedded for, and an upload
    whose object is gone is skipped (a later delete in the log removed it), not
    dead-lettered."""

    name = "embed"

    def __init__(
        self,
        config: EmbedConfig,
        objects: ObjectStore,
        metadata: MetadataStore,
        registry: GenerationRegistry,
        embedders: Embedders,
        policy: RetryPolicy,
        replay: Generation | None = None,
    ) -> None:
        super().__init__(metadata, policy)
        self.config = config
        self.objects = objects
        self.registry = registry
        self.embedders = embedders
        self.replay = replay
        self.fetches = ThreadPoolExecutor(PARALLEL_FETCHES)
        self.requests = ThreadPoolExecutor(config.in_flight)

    def routes(self) -> list[Route]:
        """One route per embeddings topic of the generations to embed for; before any
        generation exists, the configured model and topic. The registry is read for every
        batch: a generation a reindex registers is embedded for from the next batch on."""
        if self.replay is not None:
            chosen = [self.replay]
        else:
            active = self.policy.run(self.registry.active, "read the generation registry")
            chosen = list({g.embeddings_topic: g for g in active}.values())
        if not chosen:
            return [Route(self.config.model, self.config.embeddings_topic, None)]
        return [Route(g.model, g.embeddings_topic, g.model_id, g.live) for g in chosen]

    def _process(self, messages: list[LogMessage]) -> list[Outcome]:
        routes = self.routes()
        outcomes: list[list[Outcome] | None] = [None] * len(messages)
        uploads: list[tuple[int, ImageMetadata]] = []
        deleted_later: set[str] = set()
        for index in reversed(range(len(messages))):
            message = messages[index]
            if message.value is None:  # a tombstone: pass it on, compaction needs it downstream
                deleted_later.add(message.key_text)
                outcomes[index] = [Forward(message.key, None, r.topic) for r in routes]
                continue
            try:
                event = self.serializer.loads(message.value)
            except MalformedEvent as exc:
                outcomes[index] = [self.dead_letter(message, "decode", exc)]
                continue
            if isinstance(event, ImageDeleted | ImageUploaded):
                image_id = (
                    event.image_id if isinstance(event, ImageDeleted) else event.image.image_id
                )
                wrong = self.miskeyed(message, image_id)
                if wrong is not None:
                    outcomes[index] = [wrong]
                    continue
            if isinstance(event, ImageDeleted):
                deleted_later.add(event.image_id)
                outcomes[index] = [Forward(message.key, message.value, r.topic) for r in routes]
            elif isinstance(event, ImageUploaded):
                if event.image.image_id in deleted_later:
                    outcomes[index] = []  # superseded: nothing to send
                else:
                    uploads.append((index, event.image))
            else:
                reason = f"{type(event).__name__} does not belong on the images topic"
                outcomes[index] = [self.dead_letter(message, "decode", reason)]
        uploads.reverse()
        if uploads:
            self._embed_uploads(messages, uploads, routes, outcomes)
        return [o for group in outcomes if group for o in group]

    def _fetch(self, image: ImageMetadata) -> bytes | str:
        return fetch(self.policy, self.objects, image.bucket, image.object_key)

    def _embed_uploads(
        self,
        messages: list[LogMessage],
        uploads: list[tuple[int, ImageMetadata]],
        routes: list[Route],
        outcomes: list[list[Outcome] | None],
    ) -> None:
        fetched = list(self.fetches.map(self._fetch, [image for _, image in uploads]))
        ready: list[tuple[int, ImageMetadata, bytes]] = []
        for (index, image), data in zip(uploads, fetched, strict=True):
            if not isinstance(data, str):
                ready.append((index, image, data))
                outcomes[index] = []
            elif self.replay is not None:  # gone: a later delete in the log removed it
                outcomes[index] = []
            else:
                outcomes[index] = [self.dead_letter(messages[index], "fetch", data, image.image_id)]
        if not ready:
            return
        for route in routes:
            try:
                model_id = self.policy.run(partial(self._identity, route), f"ask {route.model}")
                vectors, errors = self._embed(route.model, [data for _, _, data in ready])
            except Permanent as exc:  # the whole request failed for good: every item says so
                vectors, errors = None, [str(exc)] * len(ready)
            for position, (index, image, _) in enumerate(ready):
                group = outcomes[index]
                assert group is not None
                if vectors is None or errors[position]:
                    group.append(
                        self.dead_letter(
                            messages[index],
                            "embed",
                            f"{route.model}: {errors[position]}",
                            image.image_id,
                            mark_failed=route.live,
                        )
                    )
                else:
                    event = EmbeddingComputed.of(image, model_id, vectors[position])
                    value = self.serializer.dumps(event)
                    group.append(Forward(messages[index].key, value, route.topic))

    def _identity(self, route: Route) -> str:
        """The model id of the route's embeddings (waited for while Triton serves another
        version than the generation holds: models never mix)."""
        embedder = self.embedders(route.model)
        if route.model_id is None:
            return embedder.identity().model_id
        return embedder.expect(route.model_id).model_id

    def _embed(self, model: str, images: list[bytes]) -> tuple[Vectors, list[str]]:
        """Several Triton requests in flight at once, so that every instance stays busy."""
        size = self.config.chunk
        chunks = [images[i : i + size] for i in range(0, len(images), size)]
        embedder = self.embedders(model)
        results = self.policy.run(
            lambda: list(self.requests.map(embedder.embed, chunks)),
            f"embed with Triton model {model}",
        )
        vectors = np.concatenate([vectors for vectors, _ in results])
        errors = [error for _, chunk_errors in results for error in chunk_errors]
        return vectors, errors
