"""MinIO (or any S3 server) holding the image bytes."""

from __future__ import annotations

from minio import Minio
from minio.error import S3Error

from cbir.settings import MinioSettings


def client(settings: MinioSettings) -> Minio:
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key.get_secret_value(),
        secure=settings.secure,
    )


def ensure_bucket(settings: MinioSettings) -> bool:
    """Create the images bucket if it is missing; True when it was created."""
    minio = client(settings)
    if minio.bucket_exists(settings.bucket):
        return False
    minio.make_bucket(settings.bucket)
    return True


def exists(minio: Minio, bucket: str, key: str) -> bool:
    try:
        minio.stat_object(bucket, key)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            return False
        raise
    return True
