"""One real request to every dependency, with its latency: `cbir check`, and later the
query API's readiness. Never raises: each failure is a result that says what to do."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import redis

from cbir.adapters import kafka_topics, metadata_store, object_store, vector_index
from cbir.settings import Settings


@dataclass(frozen=True)
class DependencyCheck:
    service: str
    ok: bool
    detail: str
    latency_ms: float


def _kafka(settings: Settings) -> str:
    topics = kafka_topics.topic_partitions(settings.kafka)
    wanted = [spec.name for spec in kafka_topics.pipeline_topics(settings.kafka)]
    missing = [name for name in wanted if name not in topics]
    if missing:
        raise RuntimeError(f"topics missing: {', '.join(missing)}; run `cbir provision`")
    return ", ".join(f"{name} ({topics[name]} partitions)" for name in wanted)


def _minio(settings: Settings) -> str:
    # read-only: an object written and removed here would feed two bucket notifications
    # into the pipeline on every probe
    if not object_store.MinioObjectStore(settings.minio).bucket_ready(settings.minio.bucket):
        raise RuntimeError(f"no bucket {settings.minio.bucket}; run `cbir provision`")
    return f"bucket {settings.minio.bucket}: present"


def _milvus(settings: Settings) -> str:
    names = vector_index.list_collections(settings.milvus, timeout_s=5)
    return f"{len(names)} collection(s)"


def _mysql(settings: Settings) -> str:
    with metadata_store.connect(settings.mysql) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM images")
        row = cur.fetchone()
    return f"images table: {row[0] if row else 0} row(s)"


def _redis(settings: Settings) -> str:
    client = redis.Redis.from_url(settings.redis.url, socket_timeout=2)
    key = f"_health:{uuid.uuid4().hex}"
    client.set(key, b"ok", px=5000)
    if client.get(key) != b"ok":
        raise RuntimeError("a key read back differs from what was written")
    client.delete(key)
    return "write, read, delete"


def _triton(settings: Settings) -> str:
    base = f"http://{settings.triton.http_url}"
    httpx.get(f"{base}/v2/health/ready", timeout=3).raise_for_status()
    index = httpx.post(f"{base}/v2/repository/index", json={}, timeout=3)
    index.raise_for_status()
    models = [f"{m['name']} {m.get('state', '?')}" for m in index.json()]
    return "models: " + (", ".join(models) if models else "none in the repository")


CHECKS: dict[str, tuple[Callable[[Settings], str], str]] = {
    "kafka": (_kafka, "CBIR_KAFKA__BOOTSTRAP_SERVERS"),
    "minio": (_minio, "CBIR_MINIO__ENDPOINT"),
    "milvus": (_milvus, "CBIR_MILVUS__HOST / CBIR_MILVUS__PORT"),
    "mysql": (_mysql, "CBIR_MYSQL__HOST / CBIR_MYSQL__PORT"),
    "redis": (_redis, "CBIR_REDIS__URL"),
    "triton": (_triton, "CBIR_TRITON__HTTP_URL"),
}


def check_all(settings: Settings) -> list[DependencyCheck]:
    results = []
    for service, (check, setting) in CHECKS.items():
        started = time.perf_counter()
        try:
            detail, ok = check(settings), True
        except Exception as exc:
            detail = (
                f"{type(exc).__name__}: {exc} (is it running? `cbir stack status`; "
                f"or point {setting} at it)"
            )
            ok = False
        results.append(DependencyCheck(service, ok, detail, (time.perf_counter() - started) * 1000))
    return results
