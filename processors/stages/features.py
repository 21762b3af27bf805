"""images topic -> the features bucket: each uploaded image's SIFT local features, extracted
once and stored beside its bytes; a delete removes them.

The stage runs in a consumer group of its own (`APP_ID.features`): extraction costs several
times the model, and a backlog here never holds back the embed and index stages' offsets, so
an image is searchable as soon as it is indexed. Until its features are stored, spatial
re-ranking leaves it in its global order (and says so), and the duplicates stage extracts
them itself when it judges the image first. Its output is derived and recomputable: nothing
is dead-lettered here (the embed stage dead-letters what is malformed on the images topic),
and an image whose features cannot be made is logged and searched by its global descriptor.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from cbir.domain.log import LogMessage, Outcome
from cbir.domain.retry import RetryPolicy
from cbir.local_features.store import FeatureStore
from cbir.ports import MetadataStore, ObjectStore
from processors.stages.base import Stage, fetch
from schemas.codec import MalformedEvent
from schemas.events import ImageDeleted, ImageMetadata, ImageUploaded

log = logging.getLogger("cbir.processors")

# images fetched and extracted side by side (OpenCV's SIFT releases the GIL)
PARALLEL_EXTRACTIONS = 2


class FeaturesStage(Stage):
    name = "features"
    marks_failed = False

    def __init__(
        self,
        bucket: str,
        objects: ObjectStore,
        metadata: MetadataStore,
        store: FeatureStore,
        policy: RetryPolicy,
    ) -> None:
        super().__init__(metadata, policy)
        self.bucket = bucket
        self.objects = objects
        self.store = store
        self._pool = ThreadPoolExecutor(PARALLEL_EXTRACTIONS, thread_name_prefix="sift")

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
                lambda image_id=image_id: self.store.remove(image_id),  # type: ignore[misc]
                f"remove {image_id}'s local features",
            )
        list(self._pool.map(self._extract, uploads.values()))
        return []

    def _extract(self, image: ImageMetadata) -> None:
        """The image's features, unless they are stored already (a batch delivered again, or
        the duplicates stage came first): SIFT runs once per image."""
        if self.policy.run(lambda: self.store.has(image.image_id), "look for local features"):
            return
        data = fetch(self.policy, self.objects, self.bucket, image.object_key)
        if isinstance(data, str):  # gone: a later delete removed it (and its features)
            log.info("no bytes to extract", extra={"image_id": image.image_id, "reason": data})
            return
        try:
            self.policy.run(
                lambda: self.store.extract_and_put(image.image_id, data),
                f"store {image.image_id}'s local features",
            )
        except Exception as exc:  # Permanent or GaveUp: the image itself is unaffected
            log.warning(
                "local features not stored", extra={"image_id": image.image_id, "error": str(exc)}
            )

    def close(self) -> None:
        self._pool.shutdown(wait=False)
