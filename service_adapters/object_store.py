"""MinIO (or any S3 server) holding the image bytes."""

from __future__ import annotations

from minio import Minio
from minio.error import S3Error
from minio.notificationconfig import NotificationConfig, QueueConfig

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


# MinIO's name for the Kafka target the launcher and the compose file configure (identifier CBIR)
KAFKA_TARGET_ARN = "arn:minio:sqs::CBIR:kafka"


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
