"""Spatial re-ranking of a search's top R candidates: the query's local features matched to
each candidate's, a transform estimated with RANSAC, verified candidates moved up by their
inliers (`domain.spatial.SpatialPolicy`). A time budget bounds it: candidates not verified
in time keep their global order, so a slow object store or a large R never fails a search.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cbir.domain.spatial import MIRROR_MIN_COSINE, SpatialPolicy
from cbir.local_features.features import LocalFeatures
from cbir.local_features.geometry import Verifier
from cbir.local_features.store import FeatureStore
from query_api.models import SearchResult, SpatialInfo

# verifications side by side (numpy's products release the GIL), a chunk of candidates at a
# time: one descriptor product each, and the time budget looked at between chunks
VERIFY_THREADS = 2
VERIFY_CHUNK = 10


@dataclass(frozen=True)
class SpatialRequest:
    depth: int  # R: the candidates to verify
    budget_ms: int
    # search again with the query expanded by its verified results (query expansion)
    expand: bool = False

    def cache_tag(self) -> str:
        return f"spatial:{self.depth}:{self.budget_ms}" + (":expand" if self.expand else "")


class SpatialReranker:
    def __init__(
        self, store: FeatureStore, policy: SpatialPolicy, verifier: Verifier | None = None
    ) -> None:
        self.store = store
        self.policy = policy
        self.verifier = verifier or Verifier()
        self._pool = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="verify")

    def candidates(
        self, results: list[SearchResult], depth: int
    ) -> dict[str, LocalFeatures | None]:
        """The stored features of the top `depth` results (read in parallel). Features not
        stored yet (the features consumer group is behind) are not extracted here: that
        candidate keeps its global order, and `SpatialInfo.features_missing` counts it."""
        top = results[:depth]
        return self.store.get_many([(r.image_id, None) for r in top])

    def rerank(
        self,
        query: LocalFeatures,
        results: list[SearchResult],
        features: dict[str, LocalFeatures | None],
        request: SpatialRequest,
        started: float,
    ) -> tuple[list[SearchResult], SpatialInfo]:
        """`results` in global order, `features` those of the top R (`candidates`); returns
        them re-ranked (ranks renumbered from 1) with their inliers. `started`
        (perf_counter) is when the budget began to run."""
        deadline = started + request.budget_ms / 1000
        top = results[: request.depth]
        present = [i for i, r in enumerate(top) if features.get(r.image_id) is not None]
        chunks = [present[at : at + VERIFY_CHUNK] for at in range(0, len(present), VERIFY_CHUNK)]

        def verify(chunk: list[int]) -> list[int | None]:
            """A chunk's candidates compared with the query in one product; RANSAC only
            where the matches can reach inliers that count (the others report 0)."""
            if time.perf_counter() > deadline:
                return [None] * len(chunk)
            candidates = [features[top[i].image_id] for i in chunk]
            found = self.verifier.verify_many(
                query,
                [c for c in candidates if c is not None],
                # a mirrored copy keeps a high global similarity: only then is it tried
                [self.verifier.mirror and top[i].score >= MIRROR_MIN_COSINE for i in chunk],
                self.policy.fewest_that_count(),
            )
            return [v.inliers for v in found]

        inliers: list[int | None] = [None] * len(top)
        for chunk, counts in zip(chunks, self._pool.map(verify, chunks), strict=True):
            for i, count in zip(chunk, counts, strict=True):
                inliers[i] = count
        order = self.policy.order([r.score for r in top], inliers)
        reranked = [top[i].model_copy(update={"inliers": inliers[i]}) for i in order]
        merged = reranked + results[request.depth :]
        for rank, result in enumerate(merged, start=1):
            result.rank = rank
        info = SpatialInfo(
            depth=request.depth,
            verified=sum(count is not None for count in inliers),
            features_missing=sum(features.get(r.image_id) is None for r in top),
            query_keypoints=len(query),
            ms=round(1000 * (time.perf_counter() - started), 1),
        )
        return merged, info

    def close(self) -> None:
        self._pool.shutdown(wait=False)
