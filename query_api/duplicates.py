"""An image's near-duplicates among its nearest neighbours, judged as the processors judge
them for the duplicates topic (cbir.local_features.duplicates)."""

from __future__ import annotations

from cbir.local_features.duplicates import Neighbour
from query_api.context import QueryContext
from query_api.models import Duplicate, DuplicatesResponse, ImageSummary
from query_api.search import Search, SearchRequest


class Duplicates:
    def __init__(self, context: QueryContext, search: Search) -> None:
        self.context = context
        self.search = search

    def of(self, image_id: str) -> DuplicatesResponse:
        local = self.context.local_features()
        config = self.context.config
        k = min(config.duplicate_candidates + 1, config.max_k)
        outcome = self.search.similar(image_id, SearchRequest(k))
        candidates = [r for r in outcome.results if r.image_id != image_id]
        rows = self.context.rows([image_id, *(c.image_id for c in candidates)])
        own = rows.get(image_id)
        query = self.context.call(
            "MinIO",
            "get_features",
            lambda: local.finder.features_of(image_id, own.object_key if own is not None else None),
        )
        neighbours = [
            Neighbour(
                c.image_id, rows[c.image_id].object_key if c.image_id in rows else None, c.score
            )
            for c in candidates
        ]
        found = {f.image_id: f for f in local.finder.judge(query, neighbours)}
        duplicates = []
        for candidate in candidates:
            link = found.get(candidate.image_id)
            if link is None:
                continue
            summary = {
                k: v for k, v in candidate.model_dump().items() if k in ImageSummary.model_fields
            }
            duplicates.append(
                Duplicate(
                    **summary,
                    tier=link.tier,
                    cosine=link.cosine,
                    hamming=link.hamming,
                    inliers=link.inliers,
                )
            )
        policy = local.finder.policy
        return DuplicatesResponse(
            image_id=image_id,
            duplicates=duplicates,
            checked=len(candidates),
            thresholds={
                "max_hamming": policy.max_hamming,
                "min_cosine": policy.min_cosine,
                "min_inliers": policy.min_inliers,
                "geometry_floor": policy.geometry_floor,
                "min_coverage": policy.min_coverage,
            },
        )
