"""live embeddings topic -> duplicates topic: each newly indexed image's near-duplicates among
the images indexed before it, as a `DuplicatesFound` record keyed by its id (the topic is
compacted: the latest record per image stays); a delete becomes a tombstone.

Embeddings of a model the live generation does not hold (a building generation's) are left
alone: duplicates are judged with the served model, as the API judges them. `cbir duplicates
--recompute` runs this stage over the whole live topic when a threshold or the model changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from cbir.domain.errors import Transient
from cbir.domain.generations import Generation
from cbir.domain.log import Forward, LogMessage, Outcome
from cbir.domain.retry import RetryPolicy
from cbir.local_features.duplicates import DuplicateFinder, Neighbour
from cbir.local_features.features import LocalFeatures
from cbir.ports import GenerationRegistry, MetadataStore, VectorIndex
from processors.stages.base import Stage
from schemas.codec import MalformedEvent
from schemas.events import DuplicateLink, DuplicatesFound, EmbeddingComputed, ImageDeleted

log = logging.getLogger("cbir.processors")


class DuplicatesStage(Stage):
    """Its records are derived: an image whose features cannot be read gets no record (and
    a log line; `cbir duplicates --recompute` fills the gap), and a batch it cannot judge at
    all is dead-lettered without marking any image failed.

    The features are the features group's work (`features.py`): an image whose features are
    not stored yet while that group still has images to extract (`features_pending`) makes
    the batch wait and come again, so that SIFT runs once per image; once the group has
    caught up, features still missing (a lost blob) are extracted here from the bytes."""

    name = "duplicates"
    marks_failed = False

    def __init__(
        self,
        topic: str,
        candidates: int,
        index: VectorIndex,
        metadata: MetadataStore,
        registry: GenerationRegistry,
        finder: DuplicateFinder,
        policy: RetryPolicy,
        features_pending: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(metadata, policy)
        self.topic = topic
        self.candidates = candidates
        self.index = index
        self.registry = registry
        self.finder = finder
        self.features_pending = features_pending

    def _process(self, messages: list[LogMessage]) -> list[Outcome]:
        live = self.policy.run(self.registry.live, "read the live generation")
        outcomes: list[Outcome | None] = [None] * len(messages)
        found: list[tuple[int, EmbeddingComputed]] = []
        found_any = False
        for position, message in enumerate(messages):
            if message.value is None:
                outcomes[position] = Forward(message.key, None, self.topic)
                continue
            try:
                event = self.serializer.loads(message.value)
            except MalformedEvent:
                continue  # the index stage dead-letters it: one dead letter is enough
            if isinstance(event, ImageDeleted):
                outcomes[position] = Forward(message.key, None, self.topic)
                continue
            found_any = found_any or isinstance(event, EmbeddingComputed)
            if (
                isinstance(event, EmbeddingComputed)
                and live is not None
                and event.model_id == live.model_id
                and message.key_text == event.image.image_id  # else the index stage refuses it
            ):
                found.append((position, event))
        if found_any and live is None and not self.registry.all():
            # a fresh deployment: the index stage registers the first generation with the
            # first embedding, maybe in this very moment; wait for it (retried with back-off)
            raise Transient("no live generation yet: waiting for the index stage to register it")
        if found and live is not None:
            judged = self._judge(live, [e for _, e in found])
            for (position, event), links in zip(found, judged, strict=True):
                if links is None:  # its features could not be read: no record (logged)
                    continue
                record = DuplicatesFound(event.image.image_id, event.model_id, tuple(links))
                outcomes[position] = Forward(
                    messages[position].key, self.serializer.dumps(record), self.topic
                )
        return [o for o in outcomes if o is not None]

    def _judge(
        self, live: Generation, events: Sequence[EmbeddingComputed]
    ) -> list[list[DuplicateLink] | None]:
        queries = self._query_features(events)
        vectors = np.stack([e.vector for e in events])
        # every write the index stage has recorded is seen (as the API's searches see them)
        _, written_ts = self.policy.run(self.metadata.index_generation, "read the index generation")
        hits = self.policy.run(
            lambda: self.index.search(
                vectors,
                self.candidates + 1,
                collection=live.name,
                guarantee_ts=written_ts,
                index_type=live.index_type,
            ),
            "search the live generation for near-duplicates",
        )
        others = {h.image_id for row in hits for h in row}
        rows = self.policy.run(
            lambda: self.metadata.lookup(sorted(others)), "look up the neighbours"
        )
        judged: list[tuple[LocalFeatures | None, list[Neighbour]] | None] = []
        for event, row, query in zip(events, hits, queries, strict=True):
            if isinstance(query, Exception):
                judged.append(None)
                continue
            # a neighbour's features are read, never extracted here: one without them yet was
            # uploaded after this image (the features group works in upload order), and the
            # pair is judged when that image's turn comes, with this one as its neighbour
            neighbours = [
                Neighbour(h.image_id, None, h.score)
                for h in row
                if h.image_id != event.image.image_id and h.image_id in rows
            ][: self.candidates]
            judged.append((query, neighbours))
        # the batch's distinct neighbours are read once
        found = iter(self.finder.judge_batch([j for j in judged if j is not None]))
        return [
            None
            if j is None
            else [
                DuplicateLink(f.image_id, f.tier, f.cosine, f.hamming, f.inliers)
                for f in next(found)
            ]
            for j in judged
        ]

    def _query_features(
        self, events: Sequence[EmbeddingComputed]
    ) -> list[LocalFeatures | Exception | None]:
        """Each image's stored features (None: it has none), or the error that kept them from
        being read (the image gets no record). Raises Transient while the features group
        has yet to extract some of them."""
        found: list[LocalFeatures | Exception | None] = []
        for event in events:
            image = event.image
            try:
                found.append(
                    self.policy.run(
                        lambda image=image: self.finder.features_of(image.image_id, None),  # type: ignore[misc]
                        f"read {image.image_id}'s local features",
                    )
                )
            except Exception as exc:  # Permanent, or unexpected past the bound
                log.warning(
                    "duplicates not judged", extra={"image_id": image.image_id, "error": str(exc)}
                )
                found.append(exc)
        missing = [i for i, features in enumerate(found) if features is None]
        if not missing:
            return found
        pending = self.features_pending
        if pending is not None and self.policy.run(pending, "ask the features group's lag"):
            raise Transient(
                f"the local features of {len(missing)} image(s) are not extracted yet: "
                "waiting for the features consumer group"
            )
        for i in missing:  # the group has caught up: lost, or never made; from the bytes
            image = events[i].image
            try:
                found[i] = self.policy.run(
                    lambda image=image: self.finder.features_of(image.image_id, image.object_key),  # type: ignore[misc]
                    f"extract {image.image_id}'s local features",
                )
            except Exception as exc:
                log.warning(
                    "duplicates not judged", extra={"image_id": image.image_id, "error": str(exc)}
                )
                found[i] = exc
        return found
