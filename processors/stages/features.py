"""images topic -> the features bucket: each uploaded image's SIFT local features, extracted
once and stored beside its bytes; a delete removes them (`DerivedStage`).

Extraction costs several times the model; in its own consumer group (`APP_ID.features`) its
backlog never delays indexing. Until an image's features are stored, spatial re-ranking leaves
it in its global order (and says so), and the duplicates stage extracts them itself when it
judges the image first; an image whose features cannot be made is searched by its global
descriptor.
"""

from __future__ import annotations

from cbir.domain.retry import RetryPolicy
from cbir.local_features.store import FeatureStore
from cbir.ports import MetadataStore, ObjectStore
from processors.stages.derived import DerivedStage

# images fetched and extracted side by side (OpenCV's SIFT releases the GIL)
PARALLEL_EXTRACTIONS = 2


class FeaturesStage(DerivedStage):
    name = "features"
    output = "local features"

    def __init__(
        self,
        bucket: str,
        objects: ObjectStore,
        metadata: MetadataStore,
        store: FeatureStore,
        policy: RetryPolicy,
    ) -> None:
        super().__init__(bucket, objects, metadata, policy, PARALLEL_EXTRACTIONS)
        self.store = store

    def _has(self, image_id: str) -> bool:
        return self.store.has(image_id)

    def _make(self, image_id: str, data: bytes) -> object:
        return self.store.extract_and_put(image_id, data)

    def _remove(self, image_id: str) -> None:
        self.store.remove(image_id)
