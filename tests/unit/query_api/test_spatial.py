"""Spatial re-ranking against a fake object store and real SIFT: a candidate whose features
are not stored yet keeps its global order, is counted, and is not extracted on the query
path (the features consumer group does that)."""

from __future__ import annotations

import io
import time
from pathlib import Path

from PIL import Image

from cbir.domain.spatial import SpatialPolicy
from cbir.local_features.features import Extractor
from cbir.local_features.store import FeatureStore
from query_api.models import SearchResult
from query_api.spatial import SpatialRequest, SpatialReranker
from tests.fakes import FakeObjectStore

BUCKET = "features"


def crop(photo: Path) -> bytes:
    with Image.open(photo) as opened:
        image = opened.convert("RGB")
    w, h = image.size
    out = io.BytesIO()
    image.crop((w // 8, h // 8, w - w // 8, h - h // 8)).save(out, format="JPEG", quality=85)
    return out.getvalue()


def result(image_id: str, rank: int, score: float) -> SearchResult:
    return SearchResult(
        rank=rank,
        score=score,
        image_id=image_id,
        file_name=f"{image_id}.jpg",
        source="test",
        tags=[],
        content_type="image/jpeg",
        size_bytes=1,
        width=1,
        height=1,
        uploaded_at=None,
        status="indexed",
        error=None,
        model_id=None,
        url="",
        thumbnail_url="",
        preview_url="",
        similar_url="",
    )


def test_a_candidate_without_stored_features_keeps_its_order_and_is_counted(
    flower_photos: list[Path],
) -> None:
    objects = FakeObjectStore()
    extractor = Extractor(500, 512)
    store = FeatureStore(objects, None, BUCKET, extractor, images_bucket="images")
    query_photo, other_photo = flower_photos[0], flower_photos[4]
    store.put("other", extractor.extract(other_photo.read_bytes()))
    store.put("copy", extractor.extract(crop(query_photo)))
    # the pending copy's bytes are there: a repair would find them, re-ranking must not
    objects.objects[("images", "pending")] = crop(query_photo)
    results = [result("other", 1, 0.9), result("pending", 2, 0.8), result("copy", 3, 0.7)]
    reranker = SpatialReranker(store, SpatialPolicy(min_inliers=15))
    try:
        features = reranker.candidates(results, depth=3)
        assert features["pending"] is None
        query = extractor.extract(query_photo.read_bytes())
        request = SpatialRequest(depth=3, budget_ms=10_000)
        ranked, info = reranker.rerank(query, results, features, request, time.perf_counter())
    finally:
        reranker.close()
    assert [r.image_id for r in ranked] == ["copy", "other", "pending"]
    assert [r.rank for r in ranked] == [1, 2, 3]
    assert ranked[0].inliers is not None and ranked[0].inliers >= 15
    assert ranked[2].inliers is None
    assert info.features_missing == 1 and info.verified == 2
    assert (BUCKET, "pending") not in objects.objects
