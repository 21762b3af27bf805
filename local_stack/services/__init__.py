"""One module per server the launcher runs; `ALL_SERVICES` is the start order."""

from __future__ import annotations

from local_stack.services.base import LocalService
from local_stack.services.kafka import KafkaService
from local_stack.services.mariadb import MariaDBService
from local_stack.services.milvus import MilvusService
from local_stack.services.minio import MinioService
from local_stack.services.processors import ProcessorsService
from local_stack.services.query_api import QueryApiService
from local_stack.services.redis import RedisService
from local_stack.services.triton import TritonService

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
