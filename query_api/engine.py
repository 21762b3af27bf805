"""What the API does, apart from HTTP: embed a query (through the embedding cache), search the
served collection (through the result cache) and join the metadata.

Consistency: each search first reads the index generation and the Milvus timestamp of the
last write from MySQL (one primary-key read). The result cache is keyed by that generation,
and Milvus is asked to include writes up to that timestamp, so a search never answers from
an index older than what MySQL has recorded, and a cached list never outlives a change.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from cbir.settings import Settings
from query_api.cache_keys import content_hash, embedding_key, result_key
from query_api.filters import SearchFilters
from query_api.metrics import ApiMetrics
from service_adapters import metadata_store
from service_adapters.cache import QueryCache
from service_adapters.embedder import ModelMismatch, TritonEmbedder
from service_adapters.vector_index import MilvusException, Served, VectorIndex

CacheOutcome = Literal["hit", "miss", "bypass", "none"]
T = TypeVar("T")
MILVUS_TIMEOUT_S = 10.0


class QueryError(Exception):
    """A query this service cannot answer: HTTP status, short code, message with the fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class SearchOutcome:
    results: list[dict[str, Any]]
    collection: str
    model_id: str
    generation: int
    result_cache: CacheOutcome = "miss"
    embedding_cache: CacheOutcome = "none"
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexView:
    """What a search reads first: the generation, its Milvus timestamp, the served model."""

    generation: int
    milvus_ts: int
    served: Served | None


def image_summary(row: dict[str, Any]) -> dict[str, Any]:
    """An image's metadata row as the API shows it."""
    image_id = str(row["image_id"])
    uploaded = row.get("uploaded_at")
    return {
        "image_id": image_id,
        "file_name": row.get("file_name", ""),
        "source": row.get("source", ""),
        "tags": json.loads(row["tags"]) if isinstance(row.get("tags"), str) else [],
        "content_type": row.get("content_type", ""),
        "size_bytes": int(row.get("size_bytes") or 0),
        "width": int(row.get("width") or 0),
        "height": int(row.get("height") or 0),
        "uploaded_at": uploaded.isoformat() + "Z" if uploaded is not None else None,
        "status": row.get("status", ""),
        "error": row.get("error"),
        "model_id": row.get("model_id"),
        "url": f"/images/{image_id}/content",
        "similar_url": f"/images/{image_id}/similar",
    }


class QueryEngine:
    def __init__(self, settings: Settings, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pool = metadata_store.ConnectionPool(settings.mysql)
        self.cache = QueryCache(settings.redis, settings.api.redis_timeout_s)
        self._index: VectorIndex | None = None
        self._embedders: dict[str, TritonEmbedder] = {}
        self._view: IndexView | None = None
        self._lock = threading.Lock()

    # -- dependencies, opened on first use (the API starts while a service is still down) --

    @property
    def index(self) -> VectorIndex:
        with self._lock:
            if self._index is None:
                self._index = VectorIndex(self.settings.milvus, self.settings.processors)
            return self._index

    def embedder(self, model_id: str) -> TritonEmbedder:
        """The Triton model that made the served vectors: queries are embedded with it."""
        with self._lock:
            if model_id not in self._embedders:
                embedder = TritonEmbedder(self.settings.triton, model_id.split(":")[0])
                try:
                    embedder.expect(model_id)
                except ModelMismatch as exc:
                    raise QueryError(503, "model_mismatch", str(exc)) from exc
                self._embedders[model_id] = embedder
            return self._embedders[model_id]

    def view(self) -> IndexView:
        """The generation and its Milvus timestamp (read per search), and the served model
        (described again only when the generation moved: an alias switch moves it)."""
        with self.metrics.timed("mysql", "generation"):
            generation, milvus_ts = self.pool.run(metadata_store.index_generation)
        current = self._view
        if current is None or current.generation != generation or current.served is None:
            with self.metrics.timed("milvus", "describe"):
                try:
                    served: Served | None = self.index.served_model()
                except MilvusException:
                    served = None  # no alias yet: nothing indexed
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
    ) -> SearchOutcome:
        image_hash = content_hash(data)
        view = self.view()
        if view.served is None:
            return SearchOutcome([], "", "", view.generation, "none", "none")
        served = view.served

        def embedded() -> tuple[np.ndarray, CacheOutcome]:
            vector_key = embedding_key(served.model_id, image_hash)
            with self.metrics.timed("redis", "get_embedding"):
                vector = self.cache.get_vector(vector_key)
            self.metrics.cache_lookup("embedding", vector is not None)
            if vector is not None:
                return vector, "hit"
            embedder = self.embedder(served.model_id)
            with self.metrics.timed("triton", "embed"):
                vectors, errors = embedder.embed([data])
            if errors[0]:
                raise QueryError(422, "unreadable_image", f"the image cannot be read: {errors[0]}")
            self.cache.put_vector(vector_key, vectors[0], self.settings.api.embedding_cache_ttl_s)
            return vectors[0], "miss"

        return self._answer(
            f"image:{image_hash}", k, filters, effort, view, served, use_result_cache, embedded
        )

    def search_similar(
        self,
        image_id: str,
        k: int,
        filters: SearchFilters,
        effort: int | None,
        use_result_cache: bool = True,
    ) -> SearchOutcome:
        view = self.view()
        if view.served is None:
            raise self._not_indexed(image_id)
        served = view.served

        def stored() -> tuple[np.ndarray, CacheOutcome]:
            with self.metrics.timed("milvus", "get_vector"):
                found = self._milvus(
                    lambda: self.index.vectors_of(
                        [image_id], served.collection, view.milvus_ts, MILVUS_TIMEOUT_S
                    )
                )
            if image_id not in found:
                raise self._not_indexed(image_id)
            return found[image_id], "none"

        return self._answer(
            f"id:{image_id}", k, filters, effort, view, served, use_result_cache, stored
        )

    def _answer(
        self,
        query: str,
        k: int,
        filters: SearchFilters,
        effort: int | None,
        view: IndexView,
        served: Served,
        use_result_cache: bool,
        vector_of: Callable[[], tuple[np.ndarray, CacheOutcome]],
    ) -> SearchOutcome:
        """The cached result list, or: the query's vector, the search, the join, cached."""
        key = result_key(query, k, filters.canonical(), effort, served.collection, view.generation)
        cached = self._cached_results(key, use_result_cache)
        if cached is not None:
            return SearchOutcome(cached, served.collection, served.model_id, view.generation, "hit")
        vector, embedding_outcome = vector_of()
        results = self._search(vector, k, filters, effort, view, served)
        self._store_results(key, results)
        return SearchOutcome(
            results,
            served.collection,
            served.model_id,
            view.generation,
            "miss" if use_result_cache else "bypass",
            embedding_outcome,
        )

    @staticmethod
    def _milvus(call: Callable[[], T]) -> T:
        try:
            return call()
        except MilvusException as exc:
            if "deadline" in str(exc).lower():
                raise QueryError(
                    503,
                    "index_catching_up",
                    f"Milvus did not answer within {MILVUS_TIMEOUT_S:.0f} s: after a restart it "
                    "replays its log before searches see every write; retry in a few seconds",
                ) from exc
            raise QueryError(503, "milvus_error", f"Milvus refused the search: {exc}") from exc

    def _not_indexed(self, image_id: str) -> QueryError:
        row = self.row(image_id)
        if row is None:
            return QueryError(404, "unknown_image", f"no image {image_id}: check the id")
        status = row["status"]
        detail = f": {row['error']}" if status == "failed" and row.get("error") else ""
        return QueryError(
            409,
            "not_indexed",
            f"image {image_id} is {status}{detail}; similar images can be searched once it "
            f"is indexed (poll GET /images/{image_id})",
        )

    def _cached_results(self, key: str, use: bool) -> list[dict[str, Any]] | None:
        if not use:
            return None
        with self.metrics.timed("redis", "get_results"):
            raw = self.cache.get(key)
        self.metrics.cache_lookup("result", raw is not None)
        return None if raw is None else list(json.loads(raw))

    def _store_results(self, key: str, results: list[dict[str, Any]]) -> None:
        with self.metrics.timed("redis", "put_results"):
            self.cache.put(key, json.dumps(results).encode(), self.settings.api.result_cache_ttl_s)

    def _search(
        self,
        vector: np.ndarray,
        k: int,
        filters: SearchFilters,
        effort: int | None,
        view: IndexView,
        served: Served,
    ) -> list[dict[str, Any]]:
        with self.metrics.timed("milvus", "search"):
            hits = self._milvus(
                lambda: self.index.search(
                    vector[None, :],
                    k,
                    effort,
                    filters.expression(),
                    collection=served.collection,
                    guarantee_ts=view.milvus_ts,
                    timeout_s=MILVUS_TIMEOUT_S,
                    index_type=served.index_type,
                )
            )[0]
        ids = [hit.image_id for hit in hits]
        with self.metrics.timed("mysql", "lookup"):
            rows = self.pool.run(lambda c: metadata_store.lookup(c, ids))
        results = []
        for rank, hit in enumerate(hits, start=1):
            row = rows.get(hit.image_id)
            if row is None:  # deleted between the search and the join
                continue
            results.append({"rank": rank, "score": round(hit.score, 6), **image_summary(row)})
        return results

    # -- images --

    def row(self, image_id: str) -> dict[str, Any] | None:
        """The image's metadata row as stored."""
        return self.pool.run(lambda c: metadata_store.lookup(c, [image_id])).get(image_id)

    def image(self, image_id: str) -> dict[str, Any] | None:
        row = self.row(image_id)
        return None if row is None else image_summary(row)

    def browse(self, limit: int, offset: int, status: str | None) -> list[dict[str, Any]]:
        rows = self.pool.run(lambda c: metadata_store.recent(c, limit, offset, status))
        return [image_summary(row) for row in rows]

    def close(self) -> None:
        self.pool.close()
        self.cache.close()
        for embedder in self._embedders.values():
            embedder.close()
        if self._index is not None:
            self._index.close()
