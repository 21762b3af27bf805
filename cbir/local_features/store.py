"""Where an image's local features live: one blob per image id in a bucket of their own (the
images bucket's notifications never see them), read through the Redis cache so that the
candidates of hot queries are not fetched from the object store again and again. The blobs
are derivable from the image bytes: a missing or unreadable one is extracted again when the
bytes are there."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from cbir.local_features.features import (
    Extractor,
    FeaturesUnreadable,
    ImageRejected,
    LocalFeatures,
)
from cbir.ports import Cache, ObjectStore

log = logging.getLogger("cbir.local_features")

CONTENT_TYPE = "application/x-cbir-local-features"
PARALLEL_READS = 8


def cache_key(bucket: str, image_id: str) -> str:
    """The features' key in the cache, named by their bucket too: two pipelines sharing one
    Redis (a test namespace, a second deployment) never read each other's."""
    return f"lf:v1:{bucket}:{image_id}"


class FeatureStore:
    def __init__(
        self,
        objects: ObjectStore,
        cache: Cache | None,
        bucket: str,
        extractor: Extractor,
        cache_ttl_s: int = 3600,
        images_bucket: str | None = None,
    ) -> None:
        self.objects = objects
        self.cache = cache
        self.bucket = bucket
        self.extractor = extractor
        self.cache_ttl_s = cache_ttl_s
        self.images_bucket = images_bucket
        self._reads = ThreadPoolExecutor(PARALLEL_READS, thread_name_prefix="features")

    def extract(self, data: bytes) -> LocalFeatures:
        """Raises ImageRejected for bytes that are no image."""
        return self.extractor.extract(data)

    def put(self, image_id: str, features: LocalFeatures) -> None:
        """Store (replace) an image's features; raises what the object store raises."""
        self.objects.put(
            self.bucket, image_id, features.to_bytes(), CONTENT_TYPE, {"image-id": image_id}
        )

    def extract_and_put(self, image_id: str, data: bytes) -> LocalFeatures | None:
        """Features of the bytes, stored; None (and nothing stored) for bytes SIFT cannot
        read: the image is then searched by its global descriptor alone."""
        try:
            features = self.extract(data)
        except ImageRejected as exc:
            log.info("no local features", extra={"image_id": image_id, "reason": str(exc)})
            return None
        self.put(image_id, features)
        return features

    def has(self, image_id: str) -> bool:
        """Whether readable features are stored for the image."""
        blob = self.objects.get(self.bucket, image_id)
        if blob is None:
            return False
        try:
            LocalFeatures.from_bytes(blob)
        except FeaturesUnreadable:
            return False
        return True

    def remove(self, image_id: str) -> None:
        self.objects.remove(self.bucket, image_id)

    def get(self, image_id: str, object_key: str | None = None) -> LocalFeatures | None:
        """The stored features (cache, then the object store). Missing or unreadable ones
        are extracted again from the image's bytes (under `object_key` in the images bucket)
        and stored; None when the bytes are gone too or are no image."""
        key = cache_key(self.bucket, image_id)
        blob = self.cache.get(key) if self.cache is not None else None
        cached = blob is not None
        if blob is None:
            blob = self.objects.get(self.bucket, image_id)
        features: LocalFeatures | None = None
        if blob is not None:
            try:
                features = LocalFeatures.from_bytes(blob)
            except FeaturesUnreadable as exc:
                log.warning("features unreadable", extra={"image_id": image_id, "error": str(exc)})
        if features is None:
            features = self._repair(image_id, object_key)
            if features is None:
                return None
            blob, cached = features.to_bytes(), False
        if not cached and self.cache is not None and blob is not None:
            self.cache.put(key, blob, self.cache_ttl_s)
        return features

    def _repair(self, image_id: str, object_key: str | None) -> LocalFeatures | None:
        if object_key is None or self.images_bucket is None:
            return None
        data = self.objects.get(self.images_bucket, object_key)
        if data is None:
            return None
        log.info("features extracted again", extra={"image_id": image_id})
        return self.extract_and_put(image_id, data)

    def get_many(
        self,
        images: Sequence[tuple[str, str | None]],
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> dict[str, LocalFeatures | None]:
        """Features of many (image id, object key) in parallel; an image whose read fails
        maps to None (reported to `on_error`): re-ranking goes on without it."""

        def one(image: tuple[str, str | None]) -> LocalFeatures | None:
            try:
                return self.get(*image)
            except Exception as exc:  # the store is away: that candidate keeps its order
                if on_error is not None:
                    on_error(image[0], exc)
                return None

        found = self._reads.map(one, images)
        return dict(zip((i for i, _ in images), found, strict=True))

    def close(self) -> None:
        self._reads.shutdown(wait=False)
