"""MinIO (or any S3 server) holding the image bytes."""

from __future__ import annotations

from minio import Minio

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
