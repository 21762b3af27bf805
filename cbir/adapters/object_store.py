"""MinIO (or any S3 server) holding the image bytes: the `ObjectStore` port, and the bucket's
provisioning."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error
from minio.notificationconfig import NotificationConfig, QueueConfig

from cbir.domain.errors import Rejected, ServiceUnavailable
from cbir.settings import MinioSettings

T = TypeVar("T")
GONE = ("NoSuchKey", "NoSuchObject", "NoSuchBucket")
# MinIO's name for the Kafka target the launcher and the compose file configure (identifier CBIR)
KAFKA_TARGET_ARN = "arn:minio:sqs::CBIR:kafka"


# keep-alive connections kept per host: the processors fetch 8 objects at once while local
# features are written and 8 more read (the duplicates stage), and the MinIO client's own
# pool of 10 then discards connections ("Connection pool is full") and opens new ones
POOL_CONNECTIONS = 32
DEFAULT_TIMEOUT_S = 300.0  # the MinIO client's own


def client(settings: MinioSettings, timeout_s: float | None = None) -> Minio:
    """An S3 client with a pool of POOL_CONNECTIONS keep-alive connections; `timeout_s`
    bounds connecting and each read (a paused server then fails the call), with no retries
    of its own (the callers' policies retry). Without it, the client's defaults: 300 s, and
    five retries of a 5xx answer."""
    timeout = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    retries = (
        urllib3.Retry(total=0)
        if timeout_s is not None
        else urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504])
    )
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
        retries=retries,
        maxsize=POOL_CONNECTIONS,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key.get_secret_value(),
        secure=settings.secure,
        http_client=http,
    )


class MinioObjectStore:
    """The `ObjectStore` port on MinIO: a server that is away raises ServiceUnavailable; a
    key or object the server refuses for good raises Rejected."""

    def __init__(self, settings: MinioSettings, timeout_s: float | None = None) -> None:
        self.settings = settings
        self.client = client(settings, timeout_s)

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except S3Error as exc:
            if exc.code in ("KeyTooLongError", "InvalidObjectName", "EntityTooLarge"):
                raise Rejected(f"MinIO refused {what}: {exc.code} ({exc.message})") from exc
            if exc.code == "NoSuchBucket":
                raise Rejected(
                    f"MinIO refused {what}: the bucket does not exist; `cbir provision` "
                    "creates the buckets (CBIR_MINIO__BUCKET, CBIR_LOCAL_FEATURES__BUCKET)"
                ) from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ServiceUnavailable(
                "MinIO", self.settings.endpoint, "CBIR_MINIO__ENDPOINT", exc
            ) from exc

    def get(self, bucket: str, key: str) -> bytes | None:
        with self._translated(f"reading {bucket}/{key}"):
            try:
                response = self.client.get_object(bucket, key)
            except S3Error as exc:
                if exc.code in GONE:
                    return None
                raise
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

    def exists(self, bucket: str, key: str) -> bool:
        with self._translated(f"looking for {bucket}/{key}"):
            try:
                self.client.stat_object(bucket, key)
            except S3Error as exc:
                if exc.code in GONE:
                    return False
                raise
            return True

    def put(
        self, bucket: str, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        with self._translated(f"writing {bucket}/{key}"):
            self.client.put_object(
                bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata=dict(metadata),
            )

    def remove(self, bucket: str, key: str) -> None:
        with self._translated(f"removing {bucket}/{key}"):
            self.client.remove_object(bucket, key)

    def bucket_ready(self, bucket: str) -> bool:
        """The bucket exists and answers (readiness; writes nothing, so no notification)."""
        with self._translated(f"checking {bucket}"):
            return bool(self.client.bucket_exists(bucket))


def ensure_bucket(settings: MinioSettings, bucket: str | None = None) -> bool:
    """Create the images bucket (or `bucket`) if it is missing; True when it was created."""
    minio = client(settings)
    name = bucket or settings.bucket
    if minio.bucket_exists(name):
        return False
    minio.make_bucket(name)
    return True


def ensure_notifications(settings: MinioSettings) -> None:
    """Publish every object created or removed in the bucket to Kafka (the object-events
    topic), so that objects written by any S3 client enter the pipeline."""
    client(settings).set_bucket_notification(
        settings.bucket,
        NotificationConfig(
            queue_config_list=[
                QueueConfig(
                    ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                    config_id="cbir",
                    queue=KAFKA_TARGET_ARN,
                )
            ]
        ),
    )
