"""embeddings topics -> the vector index and the metadata store (and deletes from the object
store).

Each event goes into every building and live generation filled from its topic. The metadata
rows belong to the live generation's topic (or to whoever writes while nothing is live, as
during a rebuild from nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from cbir.domain.errors import Permanent
from cbir.domain.generations import Generation, GenerationState
from cbir.domain.images import object_key_of
from cbir.domain.log import LogMessage, Outcome
from cbir.domain.models import ModelId
from cbir.domain.plan import plan_index
from cbir.domain.retry import RetryPolicy
from cbir.local_features.store import FeatureStore
from cbir.ports import GenerationRegistry, MetadataStore, ObjectStore, VectorIndex
from cbir.thumbnails import ThumbnailStore
from processors.stages.base import Stage
from schemas.codec import MalformedEvent
from schemas.events import EmbeddingComputed, ImageDeleted

log = logging.getLogger("cbir.processors")
Event = EmbeddingComputed | ImageDeleted | None  # None: a tombstone


@dataclass(frozen=True)
class IndexConfig:
    """What the index stage needs of the settings (made by the wiring)."""

    bucket: str  # where the images' bytes are (a delete removes them)
    alias: str  # the Milvus alias the API searches
    index_type: str  # of the first generation's collection


class IndexStage(Stage):
    """`replay` is the generation a replay fills: it alone is written, its deletes touch it
    alone, and rows are written only while no generation is live (the live pipeline keeps
    them otherwise)."""

    name = "index"

    def __init__(
        self,
        config: IndexConfig,
        index: VectorIndex,
        metadata: MetadataStore,
        registry: GenerationRegistry,
        objects: ObjectStore,
        policy: RetryPolicy,
        replay: Generation | None = None,
        features: FeatureStore | None = None,
        thumbnails: ThumbnailStore | None = None,
    ) -> None:
        super().__init__(metadata, policy)
        self.config = config
        self.features = features
        self.thumbnails = thumbnails
        self.index = index
        self.registry = registry
        self.objects = objects
        self.replay = replay
        self.created: set[str] = set()

    def _process(self, messages: list[LogMessage]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        by_topic: dict[str, list[tuple[LogMessage, Event]]] = {}
        for message in messages:
            events = by_topic.setdefault(message.topic, [])
            if message.value is None:
                events.append((message, None))
                continue
            try:
                event = self.serializer.loads(message.value)
            except MalformedEvent as exc:
                outcomes.append(self.dead_letter(message, "decode", exc))
                continue
            if not isinstance(event, EmbeddingComputed | ImageDeleted):
                reason = f"{type(event).__name__} does not belong on an embeddings topic"
                outcomes.append(self.dead_letter(message, "decode", reason))
                continue
            image_id = event.image_id if isinstance(event, ImageDeleted) else event.image.image_id
            wrong = self.miskeyed(message, image_id)
            if wrong is not None:
                outcomes.append(wrong)
                continue
            events.append((message, event))
        for topic, events in by_topic.items():
            outcomes.extend(self._apply(topic, events))
        return outcomes

    # -- where the events go --

    def _targets(self, topic: str, model_id: str | None, dim: int) -> tuple[list[Generation], bool]:
        """The generations filled from `topic`, and whether this writer keeps the rows."""
        if self.replay is not None:
            serving = self.policy.run(self.registry.live, "read the generation registry")
            return [self.replay], serving is None
        active = self.policy.run(self.registry.active, "read the generation registry")
        if not active and model_id is not None:
            active = self.policy.run(
                lambda: self._first_generation(topic, model_id, dim),
                "register the first generation",
            )
        live = [g for g in active if g.live]
        owns_rows = not live or live[0].embeddings_topic == topic
        return [g for g in active if g.embeddings_topic == topic], owns_rows

    def _first_generation(self, topic: str, model_id: str, dim: int) -> list[Generation]:
        """Before any generation exists, the first embedding registers one, live at once."""
        with self.registry.locked():
            active = self.registry.active()
            live = [g for g in active if g.live]
            if live and self.index.aliased() is None:  # registered, then failed: finish it
                self._create(live[0])
                self.index.switch_alias(live[0].name)
            if active:
                return active
            index_type = self.config.index_type
            first = self.registry.register(
                alias=self.config.alias,
                model=ModelId.parse(model_id).triton_model,
                model_id=model_id,
                dim=dim,
                embeddings_topic=topic,
                index_type=index_type,
                index_params=self.index.default_params(index_type),
                state=GenerationState.LIVE,
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

    # -- writing --

    def _apply(self, topic: str, events: list[tuple[LogMessage, Event]]) -> list[Outcome]:
        plan = plan_index([(m.key_text, e) for m, e in events])
        sample = next(iter(plan.upserts.values()), None)
        targets, owns_rows = self._targets(
            topic, sample.model_id if sample else None, sample.dim if sample else 0
        )
        if not targets and not owns_rows:
            # a retired generation's topic, read until the processors resubscribe: the embed
            # stage sends the same images to the live topic now
            log.info("retired topic", extra={"topic": topic, "events": len(events)})
            return []
        outcomes: list[Outcome] = []
        last_message = {m.key_text: m for m, _ in events}
        by_model: dict[str, list[EmbeddingComputed]] = {}
        for event in plan.upserts.values():
            by_model.setdefault(event.model_id, []).append(event)
        for model_id, embeddings in by_model.items():
            matching = [g for g in targets if g.model_id == model_id]
            if not matching:
                held = ", ".join(f"{g.name} ({g.model_id})" for g in targets) or "none"
                reason = (
                    f"{model_id} is not the model of the generations filled from {topic} "
                    f"({held}): re-embed with `cbir re-embed` to index another model"
                )
                outcomes.extend(
                    self.dead_letter(
                        last_message[e.image.image_id],
                        "index",
                        reason,
                        e.image.image_id,
                        mark_failed=owns_rows,
                    )
                    for e in embeddings
                )
                continue
            refused = self._upsert_isolating(matching, embeddings, owns_rows)
            outcomes.extend(
                self.dead_letter(last_message[image_id], "index", reason, image_id, owns_rows)
                for image_id, reason in refused.items()
            )
        if plan.deletes:
            try:
                self._delete(plan.deletes, targets, owns_rows)
            except Permanent as exc:
                outcomes.extend(
                    self.dead_letter(last_message[i], "delete", exc, i, mark_failed=False)
                    for i in plan.deletes
                )
        return outcomes

    def _upsert_isolating(
        self, targets: list[Generation], embeddings: list[EmbeddingComputed], owns_rows: bool
    ) -> dict[str, str]:
        """Write the batch; if a store refuses it for good, write the images one by one, so
        that only those refused are dead-lettered. Returns image id -> reason."""
        what = f"index {len(embeddings)} embeddings of {embeddings[0].model_id}"
        try:
            self.policy.run(lambda: self._upsert(targets, embeddings, owns_rows), what)
            return {}
        except Permanent as exc:
            if len(embeddings) == 1:
                return {embeddings[0].image.image_id: str(exc)}
            log.warning("batch refused, writing one by one", extra={"error": str(exc)})
        refused: dict[str, str] = {}
        for embedding in embeddings:
            refused.update(self._upsert_isolating(targets, [embedding], owns_rows))
        return refused

    def _upsert(
        self, targets: list[Generation], embeddings: list[EmbeddingComputed], owns_rows: bool
    ) -> None:
        images = [e.image for e in embeddings]
        vectors = np.stack([e.vector for e in embeddings])
        live_written = 0
        for generation in targets:
            self._create(generation)
            written = self.index.upsert(generation.name, images, vectors)
            if generation.live:
                live_written = written
        if owns_rows:
            holder = next((g for g in targets if g.live), targets[0])
            self.metadata.upsert_indexed(images, holder.model_id, holder.name)
        if live_written:
            self.metadata.bump_generation(live_written)

    def _delete(self, image_ids: Sequence[str], targets: list[Generation], owns_rows: bool) -> None:
        """The keeper of the rows (the live topic's writer) removes the images everywhere:
        the bytes first (their keys are in the rows, which a retry must still find), then
        every collection, retired ones too, and the rows; the index generation is bumped once.
        Any other writer (a replay, a building generation's topic) removes them from its own
        generations, and from the rows only while nothing is live (a rebuild from nothing)."""
        if self.replay is not None or not owns_rows:
            for generation in targets:
                self._create(generation)
                self.policy.run(
                    partial(self.index.delete, generation.name, image_ids),
                    f"delete {len(image_ids)} images from {generation.name}",
                )
            if owns_rows:
                self.policy.run(
                    lambda: self.metadata.delete_images(image_ids), "delete the images' rows"
                )
            return
        rows = self.policy.run(lambda: self.metadata.lookup(image_ids), "look up the images")
        bucket = self.config.bucket
        for image_id in image_ids:
            key = rows[image_id].object_key if image_id in rows else object_key_of(image_id)
            self.policy.run(partial(self.objects.remove, bucket, key), f"remove {key}")
            if self.features is not None:
                self.policy.run(
                    partial(self.features.remove, image_id), f"remove {image_id}'s features"
                )
            # after the bytes: a rendition the API makes on request needs them, so none is
            # made again once they are gone (the thumbnails group removes them too)
            if self.thumbnails is not None:
                self.policy.run(
                    partial(self.thumbnails.remove, image_id), f"remove {image_id}'s thumbnails"
                )

        def unindex() -> None:
            written = self.index.delete_everywhere(image_ids)
            self.metadata.delete_images(image_ids)
            self.metadata.bump_generation(written)

        self.policy.run(unindex, f"delete {len(image_ids)} images")
