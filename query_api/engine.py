"""What the API does, apart from HTTP: embed a query (through the embedding cache), search the
served collection (through the result cache), join the metadata, and read images.

Consistency: each search first reads the index generation and the Milvus timestamp of the
last write from MySQL (one primary-key read). The result cache is keyed by that generation,
and Milvus is asked to include writes up to that timestamp, so a search never answers from
an index older than what MySQL has recorded, and a cached list never outlives a change.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from cbir.domain.breaker import CircuitBreaker
from cbir.domain.categories import Prediction, predict_labels
from cbir.domain.deadline import Deadline
from cbir.domain.errors import CbirError, ModelMismatch
from cbir.domain.models import ModelId
from cbir.domain.rows import ImageRow, Served
from cbir.domain.spatial import SpatialPolicy
from cbir.domain.vectors import Vectors
from cbir.local_features.duplicates import DuplicateFinder, Neighbour, policy_of
from cbir.local_features.features import ImageRejected, LocalFeatures
from cbir.local_features.store import FeatureStore
from cbir.ports import Cache, Embedder, Embedders, MetadataStore, ObjectStore, VectorIndex
from cbir.settings import Settings
from query_api.cache_keys import content_hash, embedding_key, result_key
from query_api.errors import ApiError
from query_api.filters import SearchFilters
from query_api.metrics import ApiMetrics
from query_api.models import (
    CacheOutcome,
    Duplicate,
    DuplicatesResponse,
    ImageDetail,
    ImageSummary,
    PredictedLabel,
    SearchResult,
    SpatialInfo,
)
from query_api.spatial import SpatialRequest, SpatialReranker

T = TypeVar("T")


@dataclass
class SearchOutcome:
    results: list[SearchResult]
    collection: str
    model_id: str
    generation: int
    result_cache: CacheOutcome = "miss"
    embedding_cache: CacheOutcome = "none"
    timings_ms: dict[str, float] = field(default_factory=dict)
    query_id: str | None = None  # more-like-this: the stored image searched with
    spatial: SpatialInfo | None = None  # what spatial re-ranking did, when asked

    def predicted(self) -> list[Prediction]:
        """The query's likely labels, voted by the results (the query image left out)."""
        return predict_labels(
            [(r.tags, r.score) for r in self.results if r.image_id != self.query_id]
        )


@dataclass(frozen=True)
class IndexView:
    """What a search reads first: the generation, its Milvus timestamp, the served model."""

    generation: int
    milvus_ts: int
    served: Served | None


class QueryEngine:
    """Searches and image reads over the ports. The vector index is opened on first use
    (`index_factory`), so the API starts while Milvus is still down."""

    def __init__(
        self,
        settings: Settings,
        metrics: ApiMetrics,
        metadata: MetadataStore,
        index_factory: Callable[[], VectorIndex],
        embedders: Embedders,
        cache: Cache,
        objects: ObjectStore,
        features: FeatureStore | None = None,
    ) -> None:
        self.settings = settings
        self.features = features
        self.reranker = (
            SpatialReranker(features, SpatialPolicy(settings.local_features.min_inliers))
            if features is not None
            else None
        )
        self._background = ThreadPoolExecutor(4, thread_name_prefix="query-features")
        self.finder = (
            DuplicateFinder(features, policy_of(settings.local_features))
            if features is not None
            else None
        )
        self.metrics = metrics
        self.metadata = metadata
        self.cache = cache
        self.objects = objects
        self.embedders = embedders
        self._index_factory = index_factory
        self._index: VectorIndex | None = None
        self._checked: dict[str, Embedder] = {}
        self._view: IndexView | None = None
        self._lock = threading.Lock()
        api = settings.api
        self.timeout_s = api.dependency_timeout_s
        self.breakers = {
            name: CircuitBreaker(name, api.breaker_failures, api.breaker_open_s)
            for name in ("MySQL", "Milvus", "Triton", "MinIO")
        }

    def _call(self, service: str, operation: str, action: Callable[[], T]) -> T:
        """A dependency call, timed, through its circuit breaker: a dependency that keeps
        failing answers 503 at once until a probe finds it back."""
        with self.metrics.timed(service.lower(), operation):
            return self.breakers[service].call(action)

    @property
    def index(self) -> VectorIndex:
        with self._lock:
            if self._index is None:
                self._index = self.breakers["Milvus"].call(self._index_factory)
            return self._index

    def embedder(self, model_id: str) -> Embedder:
        """The Triton model that made the served vectors: queries are embedded with it."""
        with self._lock:
            if model_id not in self._checked:
                embedder = self.embedders(ModelId.parse(model_id).triton_model)
                try:
                    self.breakers["Triton"].call(lambda: embedder.expect(model_id))
                except ModelMismatch as exc:
                    raise ApiError(503, "model_mismatch", str(exc)) from exc
                self._checked[model_id] = embedder
            return self._checked[model_id]

    def view(self, deadline: Deadline | None = None) -> IndexView:
        """The generation and its Milvus timestamp (read per search), and the served model
        (described again only when the generation moved: an alias switch moves it)."""
        deadline = deadline or Deadline(self.timeout_s)
        generation, milvus_ts = self._call("MySQL", "generation", self.metadata.index_generation)
        current = self._view
        if current is None or current.generation != generation or current.served is None:
            budget_s = self._left(deadline, "Milvus")
            served = self._call("Milvus", "describe", lambda: self.index.served_model(budget_s))
            current = IndexView(generation, milvus_ts, served)
            self._view = current
        return IndexView(generation, milvus_ts, current.served)

    # -- searches --

    def search_image(
        self,
        data: bytes,
        k: int,
        filters: SearchFilters,
        effort: int | None,
        use_result_cache: bool = True,
        spatial: SpatialRequest | None = None,
    ) -> SearchOutcome:
        image_hash = content_hash(data)
        deadline = Deadline(self.timeout_s)
        view = self.view(deadline)
        if view.served is None:
            return SearchOutcome([], "", "", view.generation, "none", "none")
        served = view.served

        def embedded() -> tuple[Vectors, CacheOutcome]:
            vector_key = embedding_key(served.model_id, image_hash)
            with self.metrics.timed("redis", "get_embedding"):
                vector = self.cache.get_vector(vector_key)
            self.metrics.cache_lookup("embedding", vector is not None)
            if vector is not None:
                return vector, "hit"
            embedder = self.embedder(served.model_id)
            vectors, errors = self._call("Triton", "embed", lambda: embedder.embed([data]))
            if errors[0]:
                raise ApiError(422, "unreadable_image", f"the image cannot be read: {errors[0]}")
            self.cache.put_vector(vector_key, vectors[0], self.settings.api.embedding_cache_ttl_s)
            return vectors[0], "miss"

        def features() -> LocalFeatures:
            try:
                return self._feature_store().extract(data)
            except ImageRejected as exc:
                raise ApiError(422, "unreadable_image", f"the image cannot be read: {exc}") from exc

        return self._answer(
            f"image:{image_hash}",
            k,
            filters,
            effort,
            view,
            served,
            use_result_cache,
            embedded,
            deadline,
            spatial,
            features,
        )

    def search_similar(
        self,
        image_id: str,
        k: int,
        filters: SearchFilters,
        effort: int | None,
        use_result_cache: bool = True,
        spatial: SpatialRequest | None = None,
    ) -> SearchOutcome:
        deadline = Deadline(self.timeout_s)
        view = self.view(deadline)
        if view.served is None:
            raise self._not_indexed(image_id)
        served = view.served

        def stored() -> tuple[Vectors, CacheOutcome]:
            budget_s = self._left(deadline, "Milvus")
            found = self._call(
                "Milvus",
                "get_vector",
                lambda: self.index.vectors_of(
                    [image_id], served.collection, view.milvus_ts, budget_s
                ),
            )
            if image_id not in found:
                raise self._not_indexed(image_id)
            return found[image_id], "none"

        def features() -> LocalFeatures | None:
            row = self.row(image_id)
            key = row.object_key if row is not None else None
            store = self._feature_store()
            return self._call("MinIO", "get_features", lambda: store.get(image_id, key))

        outcome = self._answer(
            f"id:{image_id}",
            k,
            filters,
            effort,
            view,
            served,
            use_result_cache,
            stored,
            deadline,
            spatial,
            features,
        )
        outcome.query_id = image_id
        return outcome

    def _answer(
        self,
        query: str,
        k: int,
        filters: SearchFilters,
        effort: int | None,
        view: IndexView,
        served: Served,
        use_result_cache: bool,
        vector_of: Callable[[], tuple[Vectors, CacheOutcome]],
        deadline: Deadline,
        spatial: SpatialRequest | None = None,
        query_features: Callable[[], LocalFeatures | None] | None = None,
    ) -> SearchOutcome:
        """The cached result list, or: the query's vector, the search, the join, (with
        `spatial`, the top R re-ranked by spatial verification), cached. The Milvus calls
        share the request's one deadline: together they never wait past it."""
        asked = query if spatial is None else f"{query}|{spatial.cache_tag()}"
        key = result_key(asked, k, filters.canonical(), effort, served.collection, view.generation)
        cached = self._cached_results(key, use_result_cache)
        if cached is not None:
            results, info = cached
            return SearchOutcome(
                results, served.collection, served.model_id, view.generation, "hit", spatial=info
            )
        # the query's local features are extracted while it is embedded and searched, and the
        # candidates' are read while the extraction finishes
        pending = (
            self._background.submit(query_features)
            if spatial is not None and query_features is not None
            else None
        )
        vector, embedding_outcome = vector_of()
        depth = max(k, spatial.depth) if spatial is not None else k
        results, keys = self._search(
            vector, depth, filters, effort, view, served, self._left(deadline, "Milvus")
        )
        info = None
        if spatial is not None and pending is not None:
            assert self.reranker is not None
            started = time.perf_counter()  # the budget is verification's
            features = self.reranker.candidates(results, keys, spatial.depth)
            query_side = pending.result()
            if query_side is not None:
                results, info = self.reranker.rerank(
                    query_side, results, features, spatial, started
                )
            results = results[:k]
        self._store_results(key, results, info)
        return SearchOutcome(
            results,
            served.collection,
            served.model_id,
            view.generation,
            "miss" if use_result_cache else "bypass",
            embedding_outcome,
            spatial=info,
        )

    def _feature_store(self) -> FeatureStore:
        if self.features is None:
            raise ApiError(
                400,
                "no_local_features",
                "spatial re-ranking needs local features: this server runs without them "
                "(set CBIR_LOCAL_FEATURES__ENABLED=true and re-embed)",
            )
        return self.features

    def _left(self, deadline: Deadline, service: str) -> float:
        """What is left of the request's bound for the next call; a 503 when nothing is."""
        if deadline.expired:
            raise ApiError(
                503,
                "timeout",
                f"the search spent its {deadline.seconds:g} s bound (CBIR_API__DEPENDENCY_"
                f"TIMEOUT_S) before it could ask {service}: a dependency is slow; retry shortly",
            )
        return deadline.remaining()

    def _not_indexed(self, image_id: str) -> ApiError:
        row = self.row(image_id)
        if row is None:
            return unknown_image(image_id)
        detail = f": {row.error}" if row.status == "failed" and row.error else ""
        return ApiError(
            409,
            "not_indexed",
            f"image {image_id} is {row.status}{detail}; similar images can be searched once it "
            f"is indexed (poll GET /images/{image_id})",
        )

    def _cached_results(
        self, key: str, use: bool
    ) -> tuple[list[SearchResult], SpatialInfo | None] | None:
        if not use:
            return None
        with self.metrics.timed("redis", "get_results"):
            raw = self.cache.get(key)
        self.metrics.cache_lookup("result", raw is not None)
        if raw is None:
            return None
        body = json.loads(raw)
        results = [SearchResult.model_validate(item) for item in body["results"]]
        spatial = body.get("spatial")
        return results, SpatialInfo.model_validate(spatial) if spatial is not None else None

    def _store_results(
        self, key: str, results: list[SearchResult], spatial: SpatialInfo | None = None
    ) -> None:
        body = json.dumps(
            {
                "results": [r.model_dump() for r in results],
                "spatial": spatial.model_dump() if spatial is not None else None,
            }
        ).encode()
        with self.metrics.timed("redis", "put_results"):
            self.cache.put(key, body, self.settings.api.result_cache_ttl_s)

    def _search(
        self,
        vector: Vectors,
        k: int,
        filters: SearchFilters,
        effort: int | None,
        view: IndexView,
        served: Served,
        budget_s: float,
    ) -> tuple[list[SearchResult], dict[str, str]]:
        """The results, and each one's object key (where its bytes are)."""
        hits = self._call(
            "Milvus",
            "search",
            lambda: self.index.search(
                vector[None, :],
                k,
                effort,
                filters.expression(),
                collection=served.collection,
                guarantee_ts=view.milvus_ts,
                timeout_s=budget_s,
                index_type=served.index_type,
            ),
        )[0]
        rows = self._call(
            "MySQL", "lookup", lambda: self.metadata.lookup([h.image_id for h in hits])
        )
        results = []
        keys = {}
        for rank, hit in enumerate(hits, start=1):
            row = rows.get(hit.image_id)
            if row is None:  # deleted between the search and the join
                continue
            summary = ImageSummary.of(row).model_dump()
            results.append(SearchResult(rank=rank, score=round(hit.score, 6), **summary))
            keys[row.image_id] = row.object_key
        return results, keys

    def duplicates(self, image_id: str) -> DuplicatesResponse:
        """The image's near-duplicates among its nearest neighbours (local_features.duplicates:
        as the processors record them on the duplicates topic)."""
        store = self._feature_store()
        assert self.finder is not None
        outcome = self.search_similar(
            image_id,
            min(self.settings.local_features.duplicate_candidates + 1, self.settings.api.max_k),
            SearchFilters.parse(),
            None,
        )
        candidates = [r for r in outcome.results if r.image_id != image_id]
        rows = {r.image_id: r for r in self._rows([image_id, *(c.image_id for c in candidates)])}
        own = rows.get(image_id)
        query = self._call(
            "MinIO",
            "get_features",
            lambda: store.get(image_id, own.object_key if own is not None else None),
        )
        neighbours = [
            Neighbour(
                c.image_id, rows[c.image_id].object_key if c.image_id in rows else None, c.score
            )
            for c in candidates
        ]
        found = {f.image_id: f for f in self.finder.judge(query, neighbours)}
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
        policy = self.finder.policy
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

    def _rows(self, image_ids: list[str]) -> list[ImageRow]:
        return list(self._call("MySQL", "lookup", lambda: self.metadata.lookup(image_ids)).values())

    # -- images --

    def row(self, image_id: str) -> ImageRow | None:
        """The image's metadata row as stored."""
        return self._call("MySQL", "lookup", lambda: self.metadata.lookup([image_id])).get(image_id)

    def image(self, image_id: str) -> ImageDetail:
        """Its metadata; for an indexed image without tags, the tags its neighbours vote."""
        row = self.row(image_id)
        if row is None:
            raise unknown_image(image_id)
        predicted = None
        if not row.tags and row.status == "indexed":
            try:
                outcome = self.search_similar(
                    image_id, self.settings.api.default_k, SearchFilters.parse(), None
                )
                predicted = [PredictedLabel(**vars(p)) for p in outcome.predicted()]
            except CbirError:  # the metadata still answers while the index cannot
                predicted = None
        return ImageDetail(**ImageSummary.of(row).model_dump(), predicted_tags=predicted)

    def content(self, image_id: str) -> tuple[bytes, str]:
        """The image's bytes and media type, from the object store."""
        row = self.row(image_id)
        if row is None:
            raise unknown_image(image_id)
        bucket = self.settings.minio.bucket
        data = self._call("MinIO", "get", lambda: self.objects.get(bucket, row.object_key))
        if data is None:
            raise ApiError(404, "no_bytes", f"the bytes of {image_id} are gone from the store")
        return data, row.content_type or "application/octet-stream"

    def browse(self, limit: int, offset: int, status: str | None) -> list[ImageSummary]:
        rows = self._call("MySQL", "recent", lambda: self.metadata.recent(limit, offset, status))
        return [ImageSummary.of(row) for row in rows]

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        if self.reranker is not None:
            self.reranker.close()
        self._background.shutdown(wait=False)


def unknown_image(image_id: str) -> ApiError:
    return ApiError(404, "unknown_image", f"no image {image_id}: check the id")
