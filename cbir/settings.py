"""The one settings object. Every knob has one name in code, in the environment and in
docker-compose.yml: ``CBIR_<SECTION>__<FIELD>``, for example ``CBIR_KAFKA__BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_stack_home() -> Path:
    import os

    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cbir-stack"


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """Split ``host:port`` (or a URL) into its host and port."""
    parsed = urlsplit(address if "//" in address else f"//{address}")
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


class KafkaSettings(BaseModel):
    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Kafka brokers")
    images_topic: str = Field(default="cbir.images", description="image uploaded/deleted events")
    embeddings_topic: str = Field(default="cbir.embeddings", description="embedding events")
    dead_letter_topic: str = Field(default="cbir.dead-letter", description="failed events")
    duplicates_topic: str = Field(
        default="cbir.duplicates", description="each image's near-duplicates (compacted)"
    )
    object_events_topic: str = Field(
        default="cbir.object-events", description="MinIO's bucket notifications (S3 clients)"
    )
    partitions: int = Field(default=4, ge=1, description="partitions of each pipeline topic")
    dead_letter_retention_ms: int = Field(
        default=30 * 24 * 3600 * 1000, description="how long failed events are kept"
    )

    @property
    def port(self) -> int:
        return split_host_port(self.bootstrap_servers.split(",")[0], 9092)[1]


class MinioSettings(BaseModel):
    endpoint: str = Field(default="127.0.0.1:9000", description="MinIO / S3 host:port")
    access_key: str = Field(default="cbir-admin", description="S3 access key")
    secret_key: SecretStr = Field(default=SecretStr("cbir-admin-secret"), description="S3 secret")
    bucket: str = Field(default="images", description="bucket holding the image bytes")
    secure: bool = Field(default=False, description="use HTTPS")

    @property
    def port(self) -> int:
        return split_host_port(self.endpoint, 9000)[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


# the vector index types a generation can be built with (DISKANN needs Milvus 2.4+ with disk)
INDEX_TYPES = ("HNSW", "DISKANN", "IVF_FLAT", "IVF_SQ8", "FLAT")


class MilvusSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="Milvus host")
    port: int = Field(default=19530, description="Milvus gRPC port")
    collection: str = Field(default="images", description="the alias that queries search")
    index_type: str = Field(default="HNSW", description="DISKANN in production, HNSW locally")
    metric_type: str = Field(default="IP", description="inner product on unit vectors = cosine")


class MySQLSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="MySQL / MariaDB host")
    port: int = Field(default=3306, description="MySQL port")
    user: str = Field(default="cbir", description="MySQL user of the application")
    password: SecretStr = Field(default=SecretStr("cbir-secret"), description="its password")
    database: str = Field(default="cbir", description="database holding the metadata")


class RedisSettings(BaseModel):
    url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis URL (the cache)")

    @property
    def port(self) -> int:
        return split_host_port(self.url, 6379)[1]


class TritonSettings(BaseModel):
    http_url: str = Field(default="127.0.0.1:8000", description="Triton HTTP host:port")
    grpc_url: str = Field(default="127.0.0.1:8001", description="Triton gRPC host:port")
    model_repository: Path = Field(
        default=PROJECT_ROOT / "triton_repo", description="model repository the local Triton serves"
    )

    @property
    def http_port(self) -> int:
        return split_host_port(self.http_url, 8000)[1]

    @property
    def grpc_port(self) -> int:
        return split_host_port(self.grpc_url, 8001)[1]


class ProcessorsSettings(BaseModel):
    """The Faust processors (`cbir process`)."""

    app_id: str = Field(default="cbir-processors", description="Faust app id = consumer group")
    model: str = Field(default="mobilenet", description="the Triton model that embeds images")
    batch_size: int = Field(default=64, ge=1, description="events per batch, at most")
    batch_wait_s: float = Field(default=0.5, gt=0, description="how long a batch may wait to fill")
    embed_chunk: int = Field(default=8, ge=1, description="images per Triton request")
    embed_in_flight: int = Field(default=4, ge=1, description="Triton requests in flight")
    hnsw_m: int = Field(default=16, description="HNSW graph degree (local index)")
    hnsw_ef_construction: int = Field(default=200, description="HNSW build effort")
    diskann_search_list: int = Field(default=100, description="DISKANN search list (L) default")
    hnsw_ef: int = Field(default=64, description="HNSW search effort default")
    resubscribe_check_s: float = Field(
        default=5.0, gt=0, description="how often the worker looks for new embeddings topics"
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Faust workers in the consumer group, each taking a share of the partitions",
    )
    feature_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="workers extracting local features, a consumer group of their own "
        "(APP_ID.features): a backlog there never holds back indexing",
    )
    duplicate_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="workers judging near-duplicates, a consumer group of their own "
        "(APP_ID.duplicates)",
    )
    thumbnail_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="workers making thumbnails and previews, a consumer group of their own "
        "(APP_ID.thumbnails)",
    )
    thumbnails_idle: bool = Field(
        default=True,
        description="run the thumbnail workers under the idle scheduling class (SCHED_IDLE): "
        "they get only CPU time nothing else wants, so thumbnails never slow indexing; on a "
        "machine busy for good they fall behind, and a thumbnail asked for meanwhile is made "
        "on request",
    )
    thumbnails_yield_backlog: int = Field(
        default=200,
        ge=0,
        description="a thumbnail batch waits while the indexing group is more than this many "
        "images behind on the images topic (a burst is made searchable first); 0: never waits",
    )
    thumbnails_yield_max_s: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="the longest a thumbnail batch waits for indexing to catch up; then it "
        "goes on (thumbnails are never starved)",
    )
    derived_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="niceness of the features and duplicates workers: on a busy machine the "
        "cores go to indexing first",
    )


class ApiSettings(BaseModel):
    """The query API and web page (`cbir serve`)."""

    host: str = Field(default="127.0.0.1", description="address the API listens on")
    port: int = Field(default=8080, description="the API's HTTP port")
    api_key: SecretStr | None = Field(
        default=None, description="key for uploads and deletes (X-API-Key); unset: writes refused"
    )
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="largest upload")
    max_pixels: int = Field(
        default=40_000_000, ge=1, description="largest image, width x height (as the model)"
    )
    default_k: int = Field(default=10, ge=1, description="results when k is not given")
    max_k: int = Field(default=100, ge=1, description="largest k a search may ask for")
    result_cache_ttl_s: int = Field(default=3600, ge=1, description="life of a cached result list")
    embedding_cache_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1, description="life of a cached query embedding"
    )
    redis_timeout_s: float = Field(
        default=0.25, gt=0, description="Redis socket timeout: past it a query goes uncached"
    )
    dependency_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="bound on each call to MySQL, Milvus, Triton and MinIO: past it, a 503",
    )
    breaker_failures: int = Field(
        default=3, ge=1, description="failures in a row that open a dependency's circuit"
    )
    breaker_open_s: float = Field(
        default=5.0, gt=0, description="how long an open circuit answers 503 before a probe"
    )


class IngestSettings(BaseModel):
    """The producer (`cbir ingest`)."""

    service_wait_s: float = Field(
        default=120.0,
        ge=0,
        description="how long it waits for MinIO, MySQL or Kafka when one goes away, then stops",
    )


class ReplaySettings(BaseModel):
    """Rebuilding from the log (`cbir reindex`, `cbir re-embed`)."""

    grace_s: float = Field(
        default=600.0, ge=0, description="how long a replaced generation is kept before dropping"
    )
    batch_size: int = Field(default=500, ge=1, description="events a replay writes at a time")
    max_rate: float = Field(
        default=0.0, ge=0, description="events per second a replay may read (0: no limit)"
    )
    collection_sample: int = Field(
        default=200,
        ge=0,
        description="images the gate's label-free collection check samples (0: no such check)",
    )
    collection_k: int = Field(
        default=10, ge=1, le=100, description="depth k of the collection check's verified mAP@k"
    )
    collection_tolerance: float = Field(
        default=0.03,
        ge=0,
        description="how far below the live generation's verified mAP@k a switch may fall",
    )


class ThumbnailSettings(BaseModel):
    """Small WebP renditions of each image, made once at ingest by a consumer group of their
    own, so that a page of results loads kilobytes, not the originals."""

    enabled: bool = Field(default=True, description="make thumbnails and previews at ingest")
    bucket: str = Field(default="image-thumbnails", description="bucket of the renditions")
    thumbnail_side: int = Field(
        default=320, ge=32, le=2048, description="longer side of a grid thumbnail, pixels"
    )
    preview_side: int = Field(
        default=960, ge=64, le=4096, description="longer side of a preview, pixels"
    )
    quality: int = Field(default=75, ge=1, le=100, description="WebP quality of both")


class LocalFeaturesSettings(BaseModel):
    """SIFT local features: extracted at ingest, used by spatial re-ranking and duplicates."""

    enabled: bool = Field(
        default=True, description="extract and store every image's local features at ingest"
    )
    bucket: str = Field(default="image-features", description="bucket of the features blobs")
    max_keypoints: int = Field(default=500, ge=1, le=4000, description="SIFT keypoints kept")
    max_side: int = Field(
        default=320,
        ge=32,
        le=4096,
        description="longer side the image is brought to for SIFT (320: duplicates and "
        "re-ranking as good as at 512, at about half the cost; bench/results/duplicates)",
    )
    cache_ttl_s: int = Field(
        default=3600, ge=1, description="life of a features blob cached in Redis"
    )
    rerank_depth: int = Field(
        default=50, ge=1, le=200, description="candidates spatial re-ranking verifies (R)"
    )
    max_rerank_depth: int = Field(default=200, ge=1, description="largest R a search may ask")
    rerank_budget_ms: int = Field(
        default=250,
        ge=1,
        description="time spatial verification may take: past it, the rest keeps its order",
    )
    min_inliers: int = Field(
        default=8, ge=4, description="inliers that make a candidate the same object"
    )
    inlier_evidence: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="re-ranking: added to an unverified candidate's cosine per inlier beyond "
        "3 (0: fewer than min_inliers change nothing)",
    )
    duplicate_candidates: int = Field(
        default=50, ge=1, le=99, description="nearest neighbours checked as near-duplicates"
    )
    duplicate_max_hamming: int = Field(
        default=10, ge=0, le=64, description="perceptual-hash tier: Hamming distance at most"
    )
    duplicate_min_cosine: float = Field(
        default=0.90, ge=-1, le=1, description="embedding tier: cosine similarity at least"
    )
    duplicate_min_inliers: int = Field(
        default=20, ge=4, description="geometry's inliers that confirm a near-duplicate"
    )
    duplicate_keypoints: int = Field(
        default=150,
        ge=8,
        le=4000,
        description="strongest keypoints of each image the near-duplicate check matches",
    )
    duplicate_geometry_floor: float = Field(
        default=0.6,
        ge=-1,
        le=1,
        description="cosine below which a neighbour is not verified as a near-duplicate",
    )
    duplicate_min_coverage: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="share of both images the verified matches must span (not a logo)",
    )


class StackSettings(BaseModel):
    """The local launcher: where it installs servers and keeps their data."""

    home: Path = Field(default_factory=_default_stack_home, description="installed servers")
    data_dir: Path | None = Field(default=None, description="service data; default HOME/data")
    internal_port_offset: int = Field(
        default=0,
        description="added to the ports no client uses (Kafka controller, MinIO console, "
        "Milvus internals, Triton metrics) so that two stacks can run side by side",
    )
    ready_timeout_s: float = Field(default=120.0, description="how long `up` waits per service")
    stop_timeout_s: float = Field(default=30.0, description="SIGTERM grace before SIGKILL")
    kafka_heap: str = Field(default="-Xms256m -Xmx768m", description="the local broker's JVM heap")
    milvus_mq_retention_minutes: int = Field(
        default=60, description="Milvus's own rocksmq WAL (not our Kafka log)"
    )
    milvus_session_ttl_s: int = Field(
        default=10,
        ge=5,
        description="Milvus session TTL: a restart waits it out, a longer stall kills Milvus",
    )
    supervise: bool = Field(
        default=True,
        description="`up` starts a watchdog that restarts what exits, with back-off",
    )
    owner_pid: int = Field(
        default=0,
        ge=0,
        description="the watchdog stops the stack once this process is gone (a benchmark's "
        "stack: killed, it leaves nothing running); 0: the stack outlives whoever started it",
    )

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir or self.home / "data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CBIR_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    minio: MinioSettings = MinioSettings()
    milvus: MilvusSettings = MilvusSettings()
    mysql: MySQLSettings = MySQLSettings()
    redis: RedisSettings = RedisSettings()
    triton: TritonSettings = TritonSettings()
    processors: ProcessorsSettings = ProcessorsSettings()
    api: ApiSettings = ApiSettings()
    ingest: IngestSettings = IngestSettings()
    replay: ReplaySettings = ReplaySettings()
    local_features: LocalFeaturesSettings = LocalFeaturesSettings()
    thumbnails: ThumbnailSettings = ThumbnailSettings()
    stack: StackSettings = StackSettings()
    log_format: str = Field(default="text", description="text (key=value) or json")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR")


@dataclass(frozen=True)
class SettingDoc:
    variable: str
    default: str
    description: str


def describe_settings() -> list[SettingDoc]:
    """Every setting: its environment variable, default and description (docs/CONFIGURATION)."""
    docs = []
    home = str(_default_stack_home())
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, sub in model.model_fields.items():
                default = sub.get_default(call_default_factory=True)
                if isinstance(default, SecretStr):
                    default = "(secret, local default)"
                text = (
                    str(default)
                    .replace(str(PROJECT_ROOT), ".")
                    .replace(home, "~/.cache/cbir-stack")
                )
                docs.append(
                    SettingDoc(
                        f"CBIR_{section.upper()}__{name.upper()}", text, sub.description or ""
                    )
                )
        else:
            docs.append(
                SettingDoc(f"CBIR_{section.upper()}", str(field.default), field.description or "")
            )
    return docs


def side_by_side(base: Settings, offset: int, data_dir: Path, model_repository: Path) -> Settings:
    """`base` with every port moved by `offset` and data of its own: a second local stack
    that runs beside the first (the tests use +10000, the ingest benchmark +11000; at most
    12435, for Milvus's highest internal port is 53100), owned by this process: its watchdog
    stops it when this process is gone, however it ended."""
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(
                update={"bootstrap_servers": f"127.0.0.1:{9092 + offset}"}
            ),
            "minio": base.minio.model_copy(update={"endpoint": f"127.0.0.1:{9000 + offset}"}),
            "milvus": base.milvus.model_copy(update={"host": "127.0.0.1", "port": 19530 + offset}),
            "mysql": base.mysql.model_copy(update={"host": "127.0.0.1", "port": 3306 + offset}),
            "redis": base.redis.model_copy(update={"url": f"redis://127.0.0.1:{6379 + offset}/0"}),
            "triton": base.triton.model_copy(
                update={
                    "http_url": f"127.0.0.1:{8000 + offset}",
                    "grpc_url": f"127.0.0.1:{8001 + offset}",
                    "model_repository": model_repository,
                }
            ),
            "api": base.api.model_copy(update={"host": "127.0.0.1", "port": 8080 + offset}),
            "stack": base.stack.model_copy(
                update={
                    "data_dir": data_dir,
                    "internal_port_offset": offset,
                    "owner_pid": os.getpid(),
                }
            ),
        }
    )


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as the CBIR_* variables that reproduce them in a child process."""
    env: dict[str, str] = {}
    for section in Settings.model_fields:
        value = getattr(settings, section)
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                item = getattr(value, name)
                if item is None:
                    continue
                text = item.get_secret_value() if isinstance(item, SecretStr) else str(item)
                env[f"CBIR_{section.upper()}__{name.upper()}"] = text
        else:
            env[f"CBIR_{section.upper()}"] = str(value)
    return env


def settings_markdown() -> str:
    """The configuration table of docs/CONFIGURATION.md."""
    rows = [f"| `{d.variable}` | `{d.default}` | {d.description} |" for d in describe_settings()]
    return "\n".join(["| variable | default | what it is |", "|---|---|---|", *rows])


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings read from the environment once per process."""
    return Settings()
