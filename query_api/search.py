"""Search by image and more like a stored image: the query's vector (an upload's through the
embedding cache, a stored image's from Milvus), the search, the metadata join, optionally
the top R re-ranked by spatial verification, all through the result cache."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from cbir.domain.categories import Prediction, predict_labels
from cbir.domain.deadline import Deadline
from cbir.domain.rows import Served
from cbir.domain.spatial import expanded_query
from cbir.domain.vectors import Vectors
from cbir.local_features.features import ImageRejected, LocalFeatures
from cbir.ports import Embedder
from query_api.cache_keys import content_hash, embedding_key, result_key
from query_api.context import IndexView, QueryContext, unknown_image
from query_api.errors import ApiError
from query_api.filters import SearchFilters
from query_api.models import CacheOutcome, ImageSummary, SearchResult, SpatialInfo
from query_api.spatial import SpatialRequest


@dataclass(frozen=True)
class SearchRequest:
    """What is asked of a search, whatever the query is."""

    k: int
    filters: SearchFilters = field(default_factory=SearchFilters.parse)
    effort: int | None = None  # search_list / ef / nprobe; None: the index's default
    use_result_cache: bool = True
    spatial: SpatialRequest | None = None
    # only results at least this similar (cosine), inside the index (Milvus range search)
    min_score: float | None = None


@dataclass
class SearchOutcome:
    results: list[SearchResult]
    collection: str
    model_id: str
    generation: int
    result_cache: CacheOutcome = "miss"
    embedding_cache: CacheOutcome = "none"
    query_id: str | None = None  # more-like-this: the stored image searched with
    spatial: SpatialInfo | None = None  # what spatial re-ranking did, when asked

    def predicted(self) -> list[Prediction]:
        """The query's likely labels, voted by the results (the query image left out)."""
        return predict_labels(
            [(r.tags, r.score) for r in self.results if r.image_id != self.query_id]
        )


@dataclass(frozen=True)
class Query:
    """One search's query: its cache name, how its vector is had, how its features are."""

    name: str
    vector: Callable[[], tuple[Vectors, CacheOutcome]]
    features: Callable[[], LocalFeatures | None]
    image_id: str | None = None


@dataclass(frozen=True)
class Opened:
    """A search's start: its bound and the index it reads (`served` None: nothing indexed)."""

    deadline: Deadline
    view: IndexView

    @property
    def served(self) -> Served:
        assert self.view.served is not None
        return self.view.served


class Search:
    def __init__(self, context: QueryContext) -> None:
        self.context = context
        # the query's local features are extracted while it is embedded and searched
        self._background = ThreadPoolExecutor(4, thread_name_prefix="query-features")

    def by_image(self, data: bytes, request: SearchRequest) -> SearchOutcome:
        """The stored images most similar to an uploaded one; none before anything is
        indexed."""
        opened = self._open()
        if opened.view.served is None:
            return SearchOutcome([], "", "", opened.view.generation, "none", "none")
        image_hash = content_hash(data)
        model_id = opened.served.model_id

        def vector() -> tuple[Vectors, CacheOutcome]:
            return self._embedded(
                embedding_key(model_id, image_hash),
                lambda: self.context.embedder(model_id),
                lambda embedder: embedder.embed([data]),
                "unreadable_image",
                "the image cannot be read",
            )

        def features() -> LocalFeatures:
            try:
                return self.context.local_features().store.extract(data)
            except ImageRejected as exc:
                raise ApiError(422, "unreadable_image", f"the image cannot be read: {exc}") from exc

        return self._answer(Query(f"image:{image_hash}", vector, features), request, opened)

    def by_text(self, text: str, request: SearchRequest) -> SearchOutcome:
        """The stored images nearest to words, embedded by the text tower of the model that
        made the collection's vectors (409 when it has none); never re-ranked spatially."""
        text = " ".join(text.split())
        if not text:
            raise ApiError(422, "empty_text", "say what to look for: the text is empty")
        if request.spatial is not None:
            raise ApiError(422, "invalid_request", "rerank=spatial needs an image to compare with")
        opened = self._open()
        if opened.view.served is None:
            return SearchOutcome([], "", "", opened.view.generation, "none", "none")
        embedder = self.context.text_embedder(opened.served.model_id)
        text_hash = content_hash(text.encode("utf-8"))

        def vector() -> tuple[Vectors, CacheOutcome]:
            return self._embedded(
                embedding_key(embedder.identity().model_id, text_hash),
                lambda: embedder,
                lambda tower: tower.embed_texts([text]),
                "unreadable_text",
                "the text cannot be embedded",
            )

        return self._answer(Query(f"text:{text_hash}", vector, lambda: None), request, opened)

    def _embedded(
        self,
        key: str,
        embedder: Callable[[], Embedder],
        embed: Callable[[Embedder], tuple[Vectors, list[str]]],
        code: str,
        refusal: str,
    ) -> tuple[Vectors, CacheOutcome]:
        """A query's vector through the embedding cache (on a miss, `embed` with the model
        `embedder` gives); 422 `code` when the model refuses the query."""
        context = self.context
        with context.metrics.timed("redis", "get_embedding"):
            cached = context.cache.get_vector(key)
        context.metrics.cache_lookup("embedding", cached is not None)
        if cached is not None:
            return cached, "hit"
        model = embedder()
        vectors, errors = context.call("Triton", "embed", lambda: embed(model))
        if errors[0]:
            raise ApiError(422, code, f"{refusal}: {errors[0]}")
        context.cache.put_vector(key, vectors[0], context.config.embedding_cache_ttl_s)
        return vectors[0], "miss"

    def similar(self, image_id: str, request: SearchRequest) -> SearchOutcome:
        """More like this: the images nearest to a stored image's own vector."""
        opened = self._open()
        if opened.view.served is None:
            raise self._not_indexed(image_id)
        collection, milvus_ts = opened.served.collection, opened.view.milvus_ts

        def vector() -> tuple[Vectors, CacheOutcome]:
            context = self.context
            budget_s = context.left(opened.deadline, "Milvus")
            found = context.call(
                "Milvus",
                "get_vector",
                lambda: context.index.vectors_of([image_id], collection, milvus_ts, budget_s),
            )
            if image_id not in found:
                raise self._not_indexed(image_id)
            return found[image_id], "none"

        def features() -> LocalFeatures | None:
            row = self.context.row(image_id)
            key = row.object_key if row is not None else None
            store = self.context.local_features().store
            return self.context.call("MinIO", "get_features", lambda: store.get(image_id, key))

        return self._answer(Query(f"id:{image_id}", vector, features, image_id), request, opened)

    def _open(self) -> Opened:
        deadline = self.context.deadline()
        return Opened(deadline, self.context.view(deadline))

    def _answer(self, query: Query, request: SearchRequest, opened: Opened) -> SearchOutcome:
        """The cached result list, or: the query's vector, the search, the join, (with
        `spatial`, the top R re-ranked by spatial verification), cached. The Milvus calls
        share the request's one deadline: together they never wait past it."""
        served, generation, spatial = opened.served, opened.view.generation, request.spatial
        asked = query.name if spatial is None else f"{query.name}|{spatial.cache_tag()}"
        if request.min_score is not None:
            asked = f"{asked}|min_score={request.min_score}"
        key = result_key(
            asked,
            request.k,
            request.filters.canonical(),
            request.effort,
            served.collection,
            generation,
        )

        def outcome(
            results: list[SearchResult],
            result_cache: CacheOutcome,
            embedding_cache: CacheOutcome = "none",
            info: SpatialInfo | None = None,
        ) -> SearchOutcome:
            return SearchOutcome(
                results,
                served.collection,
                served.model_id,
                generation,
                result_cache,
                embedding_cache,
                query.image_id,
                info,
            )

        cached = self._cached_results(key) if request.use_result_cache else None
        if cached is not None:
            return outcome(*cached[:1], "hit", info=cached[1])
        local = self.context.local_features() if spatial is not None else None
        # the candidates' features are read while the query's extraction finishes
        pending = self._background.submit(query.features) if spatial is not None else None
        vector, embedding_outcome = query.vector()
        depth = max(request.k, spatial.depth) if spatial is not None else request.k
        budget_s = self.context.left(opened.deadline, "Milvus")
        results = self._search(vector, depth, request, opened.view, served, budget_s)
        info = None
        if spatial is not None and pending is not None and local is not None:
            started = time.perf_counter()  # the budget is verification's
            features = local.reranker.candidates(results, spatial.depth)
            query_side = pending.result()
            if query_side is not None:
                results, info = local.reranker.rerank(
                    query_side, results, features, spatial, started
                )
                if spatial.expand:
                    results, info = self._expand(vector, results, info, request, opened)
            results = results[: request.k]
        self._store_results(key, results, info)
        cache_outcome: CacheOutcome = "miss" if request.use_result_cache else "bypass"
        return outcome(results, cache_outcome, embedding_outcome, info)

    def _expand(
        self,
        vector: Vectors,
        results: list[SearchResult],
        info: SpatialInfo,
        request: SearchRequest,
        opened: Opened,
    ) -> tuple[list[SearchResult], SpatialInfo]:
        """Query expansion from the verified results: their stored vectors averaged with the
        query's and searched again; the verified results stay first, in their re-ranked
        order, and what the second search finds follows them (ordered by the policy, with
        the inliers the first pass found)."""
        assert request.spatial is not None
        policy = self.context.local_features().reranker.policy
        verified = [r for r in results if r.inliers is not None and r.inliers >= policy.min_inliers]
        if not verified:
            return results, info.model_copy(update={"expanded_with": 0})
        context, served, view = self.context, opened.served, opened.view
        ids = [r.image_id for r in verified]
        budget_s = context.left(opened.deadline, "Milvus")
        found = context.call(
            "Milvus",
            "get_vector",
            lambda: context.index.vectors_of(ids, served.collection, view.milvus_ts, budget_s),
        )
        stored = [found[i] for i in ids if i in found]
        if not stored:
            return results, info.model_copy(update={"expanded_with": 0})
        expanded = expanded_query(vector, np.stack(stored))
        depth = max(request.k, request.spatial.depth)
        budget_s = context.left(opened.deadline, "Milvus")
        again = self._search(expanded, depth, request, view, served, budget_s)
        # the first pass's inliers go with the results found again: verified ones stay
        # first, and a few inliers still tip the expanded search's close scores
        known = {r.image_id: r.inliers for r in results if r.inliers is not None}
        taken = set(ids)
        found_again = [
            r.model_copy(update={"inliers": known.get(r.image_id)})
            for r in again
            if r.image_id not in taken
        ]
        candidates = verified + found_again
        order = policy.order([r.score for r in candidates], [r.inliers for r in candidates])
        merged = [candidates[i] for i in order]
        for rank, result in enumerate(merged, start=1):
            result.rank = rank
        return merged, info.model_copy(update={"expanded_with": len(stored)})

    def _not_indexed(self, image_id: str) -> ApiError:
        row = self.context.row(image_id)
        if row is None:
            return unknown_image(image_id)
        detail = f": {row.error}" if row.status == "failed" and row.error else ""
        return ApiError(
            409,
            "not_indexed",
            f"image {image_id} is {row.status}{detail}; similar images can be searched once it "
            f"is indexed (poll GET /images/{image_id})",
        )

    def _cached_results(self, key: str) -> tuple[list[SearchResult], SpatialInfo | None] | None:
        metrics = self.context.metrics
        with metrics.timed("redis", "get_results"):
            raw = self.context.cache.get(key)
        metrics.cache_lookup("result", raw is not None)
        if raw is None:
            return None
        body = json.loads(raw)
        results = [SearchResult.model_validate(item) for item in body["results"]]
        spatial = body.get("spatial")
        return results, SpatialInfo.model_validate(spatial) if spatial is not None else None

    def _store_results(
        self, key: str, results: list[SearchResult], spatial: SpatialInfo | None
    ) -> None:
        body = json.dumps(
            {
                "results": [r.model_dump() for r in results],
                "spatial": spatial.model_dump() if spatial is not None else None,
            }
        ).encode()
        with self.context.metrics.timed("redis", "put_results"):
            self.context.cache.put(key, body, self.context.config.result_cache_ttl_s)

    def _search(
        self,
        vector: Vectors,
        k: int,
        request: SearchRequest,
        view: IndexView,
        served: Served,
        budget_s: float,
    ) -> list[SearchResult]:
        """The results, joined with their rows (one deleted meanwhile is left out)."""
        context = self.context
        hits = context.call(
            "Milvus",
            "search",
            lambda: context.index.search(
                vector[None, :],
                k,
                request.effort,
                request.filters.expression(),
                collection=served.collection,
                guarantee_ts=view.milvus_ts,
                timeout_s=budget_s,
                index_type=served.index_type,
                min_score=request.min_score,
            ),
        )[0]
        rows = context.rows([h.image_id for h in hits])
        results = []
        for rank, hit in enumerate(hits, start=1):
            row = rows.get(hit.image_id)
            if row is None:  # deleted between the search and the join
                continue
            summary = ImageSummary.of(row).model_dump()
            results.append(SearchResult(rank=rank, score=round(hit.score, 6), **summary))
        return results

    def close(self) -> None:
        self._background.shutdown(wait=False)
