"""Where the adapters are made and handed to the code that uses them: the one place that
knows which service implements which port. Each adapter is made on first use (a command
that needs only Kafka never connects to Milvus) and closed with the container."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cbir.adapters import event_log
from cbir.adapters.cache import RedisQueryCache
from cbir.adapters.embedder import TritonEmbedders
from cbir.adapters.event_log import KafkaEventLog, KafkaWriter, TopicLag
from cbir.adapters.generations import MySQLGenerationRegistry
from cbir.adapters.metadata_store import MySQLMetadataStore
from cbir.adapters.object_store import MinioObjectStore
from cbir.adapters.vector_index import MilvusVectorIndex
from cbir.domain.errors import CbirError
from cbir.domain.generations import Generation
from cbir.domain.retry import RetryPolicy
from cbir.domain.spatial import DuplicatePolicy, SpatialPolicy
from cbir.local_features.duplicates import DuplicateFinder
from cbir.local_features.features import Extractor
from cbir.local_features.geometry import Verifier
from cbir.local_features.store import FeatureStore
from cbir.replay.backfill import Destinations
from cbir.replay.gate import CollectionJudge
from cbir.replay.rebuild import Rebuilder, ReplayConfig, Report
from cbir.settings import Settings
from cbir.thumbnails import RenditionSizes, ThumbnailStore
from processors.stages import (
    DuplicatesStage,
    EmbedStage,
    FeaturesStage,
    IndexStage,
    ObjectEventsStage,
    ThumbnailsStage,
)
from processors.stages.derived import YieldToIndexing
from processors.stages.embed import EmbedConfig
from processors.stages.index import IndexConfig
from producers.ingest import IngestConfig, IngestItem, Ingestor, IngestSummary, delete_images
from query_api.context import LocalFeatureServices, QueryConfig, QueryContext
from query_api.engine import QueryEngine
from query_api.metrics import ApiMetrics
from query_api.spatial import SpatialReranker


def command_policy(settings: Settings) -> RetryPolicy:
    """A command waits for a service that went away, for a while, then stops and says so."""
    return RetryPolicy(give_up_after_s=settings.ingest.service_wait_s)


def api_adapters(settings: Settings) -> Adapters:
    """The API's: every call bounded, and no waiting for a service that is away (a request
    answers 503 at once; the caller may retry)."""
    return Adapters(
        settings, RetryPolicy(give_up_after_s=0), timeout_s=settings.api.dependency_timeout_s
    )


# -- the small configs each part of the application gets --


def embed_config(settings: Settings) -> EmbedConfig:
    processors = settings.processors
    return EmbedConfig(
        model=processors.model,
        embeddings_topic=settings.kafka.embeddings_topic,
        in_flight=processors.embed_in_flight,
        chunk=processors.embed_chunk,
    )


def index_config(settings: Settings) -> IndexConfig:
    return IndexConfig(
        bucket=settings.minio.bucket,
        alias=settings.milvus.collection,
        index_type=settings.milvus.index_type,
    )


def ingest_config(settings: Settings) -> IngestConfig:
    kafka = settings.kafka
    return IngestConfig(settings.minio.bucket, kafka.images_topic, kafka.bootstrap_servers)


def destinations(settings: Settings) -> Destinations:
    kafka = settings.kafka
    return Destinations(kafka.dead_letter_topic, kafka.bootstrap_servers)


def replay_config(settings: Settings) -> ReplayConfig:
    return ReplayConfig(
        app_id=settings.processors.app_id,
        images_topic=settings.kafka.images_topic,
        embeddings_topic=settings.kafka.embeddings_topic,
        alias=settings.milvus.collection,
        index_type=settings.milvus.index_type,
        destinations=destinations(settings),
    )


def duplicate_policy(settings: Settings) -> DuplicatePolicy:
    lf = settings.local_features
    return DuplicatePolicy(
        lf.duplicate_max_hamming,
        lf.duplicate_min_cosine,
        lf.duplicate_min_inliers,
        lf.duplicate_geometry_floor,
        lf.duplicate_min_coverage,
    )


def query_config(settings: Settings) -> QueryConfig:
    api = settings.api
    return QueryConfig(
        timeout_s=api.dependency_timeout_s,
        breaker_failures=api.breaker_failures,
        breaker_open_s=api.breaker_open_s,
        embedding_cache_ttl_s=api.embedding_cache_ttl_s,
        result_cache_ttl_s=api.result_cache_ttl_s,
        default_k=api.default_k,
        max_k=api.max_k,
        bucket=settings.minio.bucket,
        duplicate_candidates=settings.local_features.duplicate_candidates,
    )


CORE, FEATURES, DUPLICATES, THUMBNAILS = "core", "features", "duplicates", "thumbnails"


@dataclass(frozen=True)
class ConsumerRole:
    """One kind of processors worker: the agents it runs, in a consumer group of its own, so
    that a backlog of derived outputs (local features, near-duplicates) never holds back the
    indexing group's committed offsets."""

    name: str  # core (bridge, embed, index) | features | duplicates | thumbnails
    group: str  # its consumer group (the Faust app id)
    workers: int


def consumer_roles(settings: Settings) -> list[ConsumerRole]:
    """The processors' roles: indexing always; local features and near-duplicates when local
    features are on; thumbnails when they are on."""
    processors = settings.processors
    roles = [ConsumerRole(CORE, processors.app_id, processors.workers)]
    if settings.local_features.enabled:
        roles += [
            ConsumerRole(FEATURES, f"{processors.app_id}.features", processors.feature_workers),
            ConsumerRole(
                DUPLICATES, f"{processors.app_id}.duplicates", processors.duplicate_workers
            ),
        ]
    if settings.thumbnails.enabled:
        roles.append(
            ConsumerRole(
                THUMBNAILS, f"{processors.app_id}.thumbnails", processors.thumbnail_workers
            )
        )
    return roles


def consumer_role(settings: Settings, name: str) -> ConsumerRole:
    """The role of that name; raises ValueError naming the roles there are."""
    roles = {role.name: role for role in consumer_roles(settings)}
    if name not in roles:
        raise ValueError(f"no processors role {name!r}: the roles are {', '.join(roles)}")
    return roles[name]


class Adapters:
    """The adapters of one process, made from its settings."""

    def __init__(
        self,
        settings: Settings,
        policy: RetryPolicy | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """`policy`: how service failures are retried (the processors wait for ever);
        `timeout_s`: a bound on each call to MySQL, MinIO, Milvus and Triton (the API's)."""
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.timeout_s = timeout_s

    @cached_property
    def objects(self) -> MinioObjectStore:
        return MinioObjectStore(self.settings.minio, self.timeout_s)

    @cached_property
    def metadata(self) -> MySQLMetadataStore:
        return MySQLMetadataStore(self.settings.mysql, timeout_s=self.timeout_s)

    @cached_property
    def registry(self) -> MySQLGenerationRegistry:
        return MySQLGenerationRegistry(self.settings.mysql)

    @cached_property
    def index(self) -> MilvusVectorIndex:
        """Raises ServiceUnavailable while Milvus is away (and is made again next time)."""
        return MilvusVectorIndex(
            self.settings.milvus, self.settings.processors, self.timeout_s or 10.0
        )

    @cached_property
    def embedders(self) -> TritonEmbedders:
        return TritonEmbedders(self.settings.triton, timeout_s=self.timeout_s or 120.0)

    @cached_property
    def cache(self) -> RedisQueryCache:
        return RedisQueryCache(self.settings.redis, self.settings.api.redis_timeout_s)

    @cached_property
    def features(self) -> FeatureStore:
        """Local features: the blobs in their bucket, read through the Redis cache."""
        lf = self.settings.local_features
        return FeatureStore(
            self.objects,
            self.cache,
            lf.bucket,
            Extractor(lf.max_keypoints, lf.max_side),
            lf.cache_ttl_s,
            self.settings.minio.bucket,
        )

    @cached_property
    def thumbnails(self) -> ThumbnailStore:
        """Thumbnails and previews in their bucket, made from the originals when missing."""
        t = self.settings.thumbnails
        sizes = RenditionSizes(t.thumbnail_side, t.preview_side, t.quality)
        return ThumbnailStore(self.objects, t.bucket, self.settings.minio.bucket, sizes)

    @cached_property
    def duplicate_finder(self) -> DuplicateFinder:
        """Which neighbours are near-duplicates: the processors and the API judge alike."""
        return DuplicateFinder(
            self.features,
            duplicate_policy(self.settings),
            keypoints=self.settings.local_features.duplicate_keypoints,
        )

    @cached_property
    def writer(self) -> KafkaWriter:
        return KafkaWriter(self.settings.kafka)

    @cached_property
    def events(self) -> KafkaEventLog:
        return KafkaEventLog(self.settings.kafka)

    # -- the application, with what it needs --

    def embed_stage(self, replay: Generation | None = None) -> EmbedStage:
        return EmbedStage(
            embed_config(self.settings),
            self.objects,
            self.metadata,
            self.registry,
            self.embedders,
            self.policy,
            replay,
        )

    def index_stage(self, replay: Generation | None = None) -> IndexStage:
        # a worker started before Milvus waits for it
        index = self.policy.run(lambda: self.index, "connect to Milvus")
        return IndexStage(
            index_config(self.settings),
            index,
            self.metadata,
            self.registry,
            self.objects,
            self.policy,
            replay,
            self.features,
            self.thumbnails,
        )

    def features_stage(self) -> FeaturesStage:
        return FeaturesStage(
            self.settings.minio.bucket, self.objects, self.metadata, self.features, self.policy
        )

    def thumbnails_stage(self) -> ThumbnailsStage:
        processors = self.settings.processors
        yielding = None
        if processors.thumbnails_yield_backlog > 0:
            images = [self.settings.kafka.images_topic]
            yielding = YieldToIndexing(
                lambda: self.events.lag(consumer_role(self.settings, CORE).group, images),
                processors.thumbnails_yield_backlog,
                processors.thumbnails_yield_max_s,
            )
        return ThumbnailsStage(
            self.settings.minio.bucket,
            self.objects,
            self.metadata,
            self.thumbnails,
            self.policy,
            yielding,
        )

    def duplicates_stage(self) -> DuplicatesStage:
        index = self.policy.run(lambda: self.index, "connect to Milvus")
        return DuplicatesStage(
            self.settings.kafka.duplicates_topic,
            self.settings.local_features.duplicate_candidates,
            index,
            self.metadata,
            self.registry,
            self.duplicate_finder,
            self.policy,
            self._features_pending,
        )

    def _features_pending(self) -> bool:
        """Whether the features consumer group has uploads left to extract."""
        group = consumer_role(self.settings, FEATURES).group
        return self.events.lag(group, [self.settings.kafka.images_topic]) > 0

    def object_events_stage(self) -> ObjectEventsStage:
        return ObjectEventsStage(
            self.settings.minio.bucket, self.objects, self.metadata, self.policy
        )

    def rebuilder(self, report: Report) -> Rebuilder:
        """The replay commands; the tables are made first (a rebuild from nothing starts
        from an empty database)."""
        self.metadata.migrate()
        return Rebuilder(
            replay_config(self.settings),
            report,
            self.registry,
            self.metadata,
            self.index,
            self.embedders,
            self.events,
            self,
            self.collection_judge(),
        )

    def collection_judge(self) -> CollectionJudge:
        """The gate's label-free check, judging by the stored local features (when on)."""
        lf = self.settings.local_features
        return CollectionJudge(
            self.metadata,
            self.index,
            self.features if lf.enabled else None,
            Verifier(),
            lf.min_inliers,
        )

    def query_engine(self, metrics: ApiMetrics) -> QueryEngine:
        """The query engine; Milvus is connected to on the first search."""
        lf = self.settings.local_features
        local = LocalFeatureServices(
            self.features,
            SpatialReranker(
                self.features, SpatialPolicy(lf.min_inliers, evidence=lf.inlier_evidence)
            ),
            self.duplicate_finder,
        )
        context = QueryContext(
            query_config(self.settings),
            metrics,
            self.metadata,
            lambda: self.index,
            self.embedders,
            self.cache,
            self.objects,
            local,
            self.thumbnails,
        )
        return QueryEngine(context)

    def ingestor(self, source: str = "cli") -> Ingestor:
        return Ingestor(
            ingest_config(self.settings),
            self.objects,
            self.metadata,
            self.writer,
            self.policy,
            source,
        )

    def __enter__(self) -> Adapters:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close what was made (nothing else is connected to)."""
        made = self.__dict__
        for name in ("metadata", "registry", "index", "embedders", "features", "cache", "writer"):
            if name in made:
                made[name].close()


def ingest(
    settings: Settings,
    items: Iterable[IngestItem],
    source: str = "cli",
    progress: Callable[[], Any] = lambda: None,
) -> IngestSummary:
    """Send files into the pipeline with adapters of their own (a script's, a test's)."""
    with Adapters(settings, command_policy(settings)) as adapters:
        return adapters.ingestor(source).ingest(items, progress)


def delete(
    settings: Settings, image_ids: Sequence[str], source: str = "cli", reason: str = ""
) -> None:
    """Send the deletes of these images into the pipeline."""
    with Adapters(settings) as adapters:
        delete_images(ingest_config(settings), adapters.writer, image_ids, source, reason)


# -- how far the processors are (`cbir process status`, the processors' own subscriptions) --


def indexed_topics(settings: Settings) -> list[str] | None:
    """The embeddings topics of the building and live generations ([] before the first one),
    or None when the registry cannot be read (MySQL away, or its tables not made yet)."""
    registry = MySQLGenerationRegistry(settings.mysql)
    try:
        return sorted({g.embeddings_topic for g in registry.active()})
    except CbirError:
        return None
    finally:
        registry.close()


def consumer_lag(settings: Settings, topics: list[str], group: str | None = None) -> list[TopicLag]:
    """How far a processors' consumer group (the indexing one unless named) is behind each
    topic."""
    return event_log.consumer_lag(settings.kafka, group or settings.processors.app_id, topics)


def role_topics(settings: Settings, role: ConsumerRole) -> list[str]:
    """The topics a role's workers consume now."""
    kafka = settings.kafka
    embeddings = indexed_topics(settings) or [kafka.embeddings_topic]
    if role.name in (FEATURES, THUMBNAILS):
        return [kafka.images_topic]
    if role.name == DUPLICATES:
        return embeddings
    return [kafka.object_events_topic, kafka.images_topic, *embeddings]


def pipeline_lag(settings: Settings) -> list[tuple[ConsumerRole, TopicLag]]:
    """Every role's lag on every topic it consumes."""
    return [
        (role, lag)
        for role in consumer_roles(settings)
        for lag in consumer_lag(settings, role_topics(settings, role), role.group)
    ]


def caught_up(settings: Settings) -> bool:
    """Whether every consumer group has processed everything (indexing and derived)."""
    return not any(lag.lag for _, lag in pipeline_lag(settings))


def dead_letter_count(settings: Settings) -> int:
    return event_log.message_count(settings.kafka, settings.kafka.dead_letter_topic)


def indexed_vectors(settings: Settings) -> int:
    """Vectors in the served collection; 0 before anything is indexed."""
    index = MilvusVectorIndex(settings.milvus, settings.processors)
    try:
        return index.count() if index.served_model() is not None else 0
    finally:
        index.close()


def image_statuses(settings: Settings) -> dict[str, int]:
    store = MySQLMetadataStore(settings.mysql, pool_size=1)
    try:
        return store.status_counts()
    finally:
        store.close()
