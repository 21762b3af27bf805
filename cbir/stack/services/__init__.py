"""One module per server the launcher runs; `ALL_SERVICES` is the start order."""

from __future__ import annotations

from cbir.stack.services.base import LocalService
from cbir.stack.services.kafka import KafkaService
from cbir.stack.services.mariadb import MariaDBService
from cbir.stack.services.milvus import MilvusService
from cbir.stack.services.minio import MinioService
from cbir.stack.services.processors import ProcessorsService
from cbir.stack.services.query_api import QueryApiService
from cbir.stack.services.redis import RedisService
from cbir.stack.services.triton import TritonService

ALL_SERVICES: tuple[type[LocalService], ...] = (
    MariaDBService,
    RedisService,
    MinioService,
    KafkaService,
    MilvusService,
    TritonService,
    ProcessorsService,
    QueryApiService,
)

__all__ = ["ALL_SERVICES", "LocalService"]
