"""What every use case of the API shares: its adapters, the circuit breaker in front of each
dependency, the request bound, and the index view a search starts from.

Consistency: each search first reads the index generation and the Milvus timestamp of the
last write from MySQL (one primary-key read). The result cache is keyed by that generation,
and Milvus is asked to include writes up to that timestamp, so a search never answers from
an index older than what MySQL has recorded, and a cached list never outlives a change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cbir.domain.breaker import CircuitBreaker
from cbir.domain.deadline import Deadline
from cbir.domain.errors import ModelMismatch, ModelNotServed
from cbir.domain.models import ModelId, text_entry
from cbir.domain.rows import ImageRow, Served
from cbir.local_features.duplicates import DuplicateFinder
from cbir.local_features.store import FeatureStore
from cbir.ports import Cache, Embedder, Embedders, MetadataStore, ObjectStore, VectorIndex
from cbir.thumbnails import ThumbnailStore
from query_api.errors import ApiError
from query_api.metrics import ApiMetrics
from query_api.spatial import SpatialReranker

T = TypeVar("T")
SERVICES = ("MySQL", "Milvus", "Triton", "MinIO")


@dataclass(frozen=True)
class QueryConfig:
    """What the API's use cases need of the settings (made by the wiring)."""

    timeout_s: float  # one request's bound on its dependency calls, together
    breaker_failures: int
    breaker_open_s: float
    embedding_cache_ttl_s: int
    result_cache_ttl_s: int
    default_k: int
    max_k: int
    bucket: str  # where the images' bytes are
    duplicate_candidates: int  # neighbours judged for near-duplicates


@dataclass(frozen=True)
class LocalFeatureServices:
    """Spatial re-ranking and near-duplicates, when the server runs with local features."""

    store: FeatureStore
    reranker: SpatialReranker
    finder: DuplicateFinder


@dataclass(frozen=True)
class IndexView:
    """What a search reads first: the generation, its Milvus timestamp, the served model."""

    generation: int
    milvus_ts: int
    served: Served | None


class QueryContext:
    """The adapters behind the breakers. The vector index is opened on first use
    (`index_factory`), so the API starts while Milvus is still down."""

    def __init__(
        self,
        config: QueryConfig,
        metrics: ApiMetrics,
        metadata: MetadataStore,
        index_factory: Callable[[], VectorIndex],
        embedders: Embedders,
        cache: Cache,
        objects: ObjectStore,
        local: LocalFeatureServices | None = None,
        thumbnails: ThumbnailStore | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.metadata = metadata
        self.embedders = embedders
        self.cache = cache
        self.objects = objects
        self.local = local
        self.thumbnails = thumbnails
        self._index_factory = index_factory
        self._index: VectorIndex | None = None
        self._checked: dict[str, Embedder] = {}
        self._text: dict[str, Embedder] = {}
        self._view: IndexView | None = None
        self._lock = threading.Lock()
        self.breakers = {
            name: CircuitBreaker(name, config.breaker_failures, config.breaker_open_s)
            for name in SERVICES
        }

    def call(self, service: str, operation: str, action: Callable[[], T]) -> T:
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

    def text_embedder(self, model_id: str) -> Embedder:
        """The text tower of the model that made the served vectors (a CLIP model's
        `NAME-text`, whose config names that model); 409 when it has none."""
        with self._lock:
            if model_id in self._text:
                return self._text[model_id]
        name = text_entry(ModelId.parse(model_id).triton_model)
        embedder = self.embedders(name)
        try:
            identity = self.breakers["Triton"].call(embedder.identity)
        except ModelNotServed:
            raise ApiError(
                409,
                "no_text_tower",
                f"the collection's model {model_id} has no text tower ({name} is not served): "
                "search by words needs a CLIP model, e.g. `cbir model export clip --clip "
                "ViT-B-32 --weights laion2b_s34b_b79k`, then `cbir re-embed clip`",
            ) from None
        if identity.pairs_with != model_id:
            raise ApiError(
                409,
                "no_text_tower",
                f"{name} is the text tower of {identity.pairs_with or 'no image model'}, but "
                f"the collection holds vectors of {model_id}: export both towers of one model "
                "again (`cbir model export NAME --clip ARCH`) and re-embed to it",
            )
        with self._lock:
            self._text[model_id] = embedder
        return embedder

    def deadline(self) -> Deadline:
        """A request's one bound, shared by its dependency calls."""
        return Deadline(self.config.timeout_s)

    def view(self, deadline: Deadline) -> IndexView:
        """The generation and its Milvus timestamp (read per search), and the served model
        (described again only when the generation moved: an alias switch moves it)."""
        generation, milvus_ts = self.call("MySQL", "generation", self.metadata.index_generation)
        current = self._view
        if current is None or current.generation != generation or current.served is None:
            budget_s = self.left(deadline, "Milvus")
            served = self.call("Milvus", "describe", lambda: self.index.served_model(budget_s))
            current = IndexView(generation, milvus_ts, served)
            self._view = current
        return IndexView(generation, milvus_ts, current.served)

    def left(self, deadline: Deadline, service: str) -> float:
        """What is left of the request's bound for the next call; a 503 when nothing is."""
        if deadline.expired:
            raise ApiError(
                503,
                "timeout",
                f"the search spent its {deadline.seconds:g} s bound (CBIR_API__DEPENDENCY_"
                f"TIMEOUT_S) before it could ask {service}: a dependency is slow; retry shortly",
            )
        return deadline.remaining()

    def local_features(self) -> LocalFeatureServices:
        if self.local is None:
            raise ApiError(
                400,
                "no_local_features",
                "spatial re-ranking needs local features: this server runs without them "
                "(set CBIR_LOCAL_FEATURES__ENABLED=true and re-embed)",
            )
        return self.local

    def rows(self, image_ids: list[str]) -> dict[str, ImageRow]:
        """The images' metadata rows as stored (the unknown ones left out)."""
        return self.call("MySQL", "lookup", lambda: self.metadata.lookup(image_ids))

    def row(self, image_id: str) -> ImageRow | None:
        return self.rows([image_id]).get(image_id)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        if self.local is not None:
            self.local.reranker.close()


def unknown_image(image_id: str) -> ApiError:
    return ApiError(404, "unknown_image", f"no image {image_id}: check the id")
