"""MinIO's S3 event records, parsed."""

from __future__ import annotations

import json

import pytest

from cbir.domain.bucket_events import parse_object_events


def notification(name: str, key: str, metadata: dict[str, str] | None = None) -> bytes:
    return json.dumps(
        {
            "EventName": name,
            "Key": f"images/{key}",
            "Records": [
                {
                    "eventVersion": "2.0",
                    "eventSource": "minio:s3",
                    "eventTime": "2026-11-26T18:00:00.123Z",
                    "eventName": name,
                    "s3": {
                        "bucket": {"name": "images"},
                        "object": {
                            "key": key,
                            "size": 1234,
                            "contentType": "image/jpeg",
                            "userMetadata": metadata or {"content-type": "image/jpeg"},
                        },
                    },
                }
            ],
        }
    ).encode()


def test_a_put_by_any_client_is_a_created_object_not_ours() -> None:
    put = notification("s3:ObjectCreated:Put", "holiday/beach+1%282%29.jpg")
    (event,) = parse_object_events(put)
    assert event.created and not event.ours
    assert (event.bucket, event.key, event.size) == ("images", "holiday/beach 1(2).jpg", 1234)
    assert event.time.year == 2026 and event.time.tzinfo is not None


def test_our_producers_objects_and_other_events_are_told_apart() -> None:
    (ours,) = parse_object_events(
        notification("s3:ObjectCreated:Put", "ab/abc", {"X-Amz-Meta-Cbir-Image-Id": "abc"})
    )
    assert ours.ours
    (removed,) = parse_object_events(notification("s3:ObjectRemoved:Delete", "x.jpg"))
    assert not removed.created
    assert parse_object_events(notification("s3:ObjectAccessed:Get", "x.jpg")) == []


def test_not_a_notification_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_object_events(b"not json")
