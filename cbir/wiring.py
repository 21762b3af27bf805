"""Where the adapters are made and handed to the code that uses them: the one place that
knows which service implements which port. Each adapter is made on first use (a command
that needs only Kafka never connects to Milvus) and closed with the container."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import Any

from cbir.adapters.cache import QueryCache
from cbir.adapters.embedder import TritonEmbedders
from cbir.adapters.event_log import KafkaEventLog, KafkaWriter
from cbir.adapters.generations import MySQLGenerationRegistry
from cbir.adapters.metadata_store import MySQLMetadataStore
from cbir.adapters.object_store import MinioObjectStore
from cbir.adapters.vector_index import VectorIndex
from cbir.domain.generations import Generation
from cbir.domain.retry import RetryPolicy
from cbir.local_features.duplicates import DuplicateFinder, policy_of
from cbir.local_features.features import Extractor
from cbir.local_features.store import FeatureStore
from cbir.replay.rebuild import Rebuilder, Report
from cbir.settings import Settings
from processors.stages import DuplicatesStage, EmbedStage, IndexStage, ObjectEventsStage
from producers.ingest import IngestItem, Ingestor, IngestSummary, delete_images
from query_api.engine import QueryEngine
from query_api.metrics import ApiMetrics


def command_policy(settings: Settings) -> RetryPolicy:
    """A command waits for a service that went away, for a while, then stops and says so."""
    return RetryPolicy(give_up_after_s=settings.ingest.service_wait_s)


def api_adapters(settings: Settings) -> Adapters:
    """The API's: every call bounded, and no waiting for a service that is away (a request
    answers 503 at once; the caller may retry)."""
    return Adapters(
        settings, RetryPolicy(give_up_after_s=0), timeout_s=settings.api.dependency_timeout_s
    )


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
    def index(self) -> VectorIndex:
        """Raises ServiceUnavailable while Milvus is away (and is made again next time)."""
        return VectorIndex(self.settings.milvus, self.settings.processors, self.timeout_s or 10.0)

    @cached_property
    def embedders(self) -> TritonEmbedders:
        return TritonEmbedders(self.settings.triton, timeout_s=self.timeout_s or 120.0)

    @cached_property
    def cache(self) -> QueryCache:
        return QueryCache(self.settings.redis, self.settings.api.redis_timeout_s)

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
    def writer(self) -> KafkaWriter:
        return KafkaWriter(self.settings.kafka)

    @cached_property
    def events(self) -> KafkaEventLog:
        return KafkaEventLog(self.settings.kafka)

    # -- the application, with what it needs --

    def embed_stage(self, replay: Generation | None = None) -> EmbedStage:
        return EmbedStage(
            self.settings,
            self.objects,
            self.metadata,
            self.registry,
            self.embedders,
            self.policy,
            replay,
            self.features if self.settings.local_features.enabled else None,
        )

    def index_stage(self, replay: Generation | None = None) -> IndexStage:
        # a worker started before Milvus waits for it
        index = self.policy.run(lambda: self.index, "connect to Milvus")
        return IndexStage(
            self.settings,
            index,
            self.metadata,
            self.registry,
            self.objects,
            self.policy,
            replay,
            self.features,
        )

    def duplicates_stage(self) -> DuplicatesStage:
        index = self.policy.run(lambda: self.index, "connect to Milvus")
        return DuplicatesStage(
            self.settings.kafka.duplicates_topic,
            self.settings.local_features.duplicate_candidates,
            index,
            self.metadata,
            self.registry,
            DuplicateFinder(self.features, policy_of(self.settings.local_features)),
            self.policy,
        )

    def object_events_stage(self) -> ObjectEventsStage:
        return ObjectEventsStage(self.settings, self.objects, self.metadata, self.policy)

    def rebuilder(self, report: Report) -> Rebuilder:
        """The replay commands; the tables are made first (a rebuild from nothing starts
        from an empty database)."""
        self.metadata.migrate()
        return Rebuilder(
            self.settings,
            report,
            self.registry,
            self.metadata,
            self.index,
            self.embedders,
            self.events,
            self,
        )

    def query_engine(self, metrics: ApiMetrics) -> QueryEngine:
        """The query engine; Milvus is connected to on the first search."""
        return QueryEngine(
            self.settings,
            metrics,
            self.metadata,
            lambda: self.index,
            self.embedders,
            self.cache,
            self.objects,
            self.features,
        )

    def ingestor(self, source: str = "cli") -> Ingestor:
        return Ingestor(
            self.settings, self.objects, self.metadata, self.writer, self.policy, source
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
        delete_images(settings, adapters.writer, image_ids, source, reason)
