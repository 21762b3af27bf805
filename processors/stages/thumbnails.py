"""images topic -> the thumbnails bucket: each uploaded image's thumbnail and preview (small
WebP renditions), made once; a delete removes them (`DerivedStage`).

In its own consumer group (`APP_ID.thumbnails`): a backlog never delays indexing, and the API
makes a missing rendition itself on its first request. While the indexing group is more than
`THUMBNAILS_YIELD_BACKLOG` images behind, a batch waits (at most `THUMBNAILS_YIELD_MAX_S`):
a burst of uploads is made searchable first.
"""

from __future__ import annotations

from cbir.domain.retry import RetryPolicy
from cbir.ports import MetadataStore, ObjectStore
from cbir.thumbnails import ThumbnailStore
from processors.stages.derived import DerivedStage, YieldToIndexing

# images decoded and encoded side by side (Pillow releases the GIL in both)
PARALLEL_RENDITIONS = 2


class ThumbnailsStage(DerivedStage):
    name = "thumbnails"
    output = "thumbnails"

    def __init__(
        self,
        bucket: str,
        objects: ObjectStore,
        metadata: MetadataStore,
        store: ThumbnailStore,
        policy: RetryPolicy,
        yielding: YieldToIndexing | None = None,
    ) -> None:
        super().__init__(bucket, objects, metadata, policy, PARALLEL_RENDITIONS, yielding)
        self.store = store

    def _has(self, image_id: str) -> bool:
        return self.store.has(image_id)

    def _make(self, image_id: str, data: bytes) -> object:
        return self.store.make_and_put(image_id, data)

    def _remove(self, image_id: str) -> None:
        self.store.remove(image_id)
