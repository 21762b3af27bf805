"""The bridge of bucket notifications: objects of S3 clients in and out of the pipeline."""

from __future__ import annotations

import json

from cbir.domain.bucket_events import PRODUCER_MARK
from cbir.domain.images import image_id_of
from processors.stages import ObjectEventsStage
from schemas.events import ImageDeleted, ImageUploaded
from tests.unit.processors.stages.conftest import SERIALIZER, World, forwarded, letters, message

TOPIC = "cbir.object-events"


def notification(name: str, key: str, bucket: str = "images", ours: bool = False) -> bytes:
    meta = {f"X-Amz-Meta-{PRODUCER_MARK}": "x"} if ours else {}
    record = {
        "eventName": name,
        "eventTime": "2026-01-01T00:00:00.000Z",
        "s3": {
            "bucket": {"name": bucket},
            "object": {"key": key, "size": 4, "userMetadata": meta},
        },
    }
    return json.dumps({"Records": [record]}).encode()


def stage(world: World) -> ObjectEventsStage:
    return ObjectEventsStage(
        world.settings.minio.bucket, world.objects, world.metadata, world.policy
    )


def test_an_object_put_by_an_s3_client_enters_the_pipeline_under_its_own_key(
    world: World,
) -> None:
    world.objects.objects[("images", "cam/1.jpg")] = b"\x01raw"
    value = notification("s3:ObjectCreated:Put", "cam/1.jpg")
    sent = forwarded(stage(world).process([message(TOPIC, "k", value)]))
    event = SERIALIZER.loads(sent[0].value or b"")
    assert isinstance(event, ImageUploaded)
    assert event.image.image_id == image_id_of(b"\x01raw")
    assert event.image.object_key == "cam/1.jpg" and event.image.source == "s3"
    assert world.metadata.rows[event.image.image_id].status == "pending"


def test_our_own_objects_and_other_buckets_are_skipped(world: World) -> None:
    batch = [
        message(TOPIC, "a", notification("s3:ObjectCreated:Put", "x", ours=True)),
        message(TOPIC, "b", notification("s3:ObjectCreated:Put", "x", bucket="other")),
    ]
    assert stage(world).process(batch) == []


def test_a_removed_object_deletes_every_image_stored_under_its_key(world: World) -> None:
    image = world.image(b"\x02kept", key="cam/2.jpg")
    value = notification("s3:ObjectRemoved:Delete", "cam/2.jpg")
    sent = forwarded(stage(world).process([message(TOPIC, "k", value)]))
    assert isinstance(SERIALIZER.loads(sent[0].value or b""), ImageDeleted)
    assert sent[1].value is None and sent[1].key == image.image_id.encode()


def test_garbage_and_keys_longer_than_s3_allows_are_dead_lettered(world: World) -> None:
    long_key = "k" * 1025
    world.objects.objects[("images", long_key)] = b"\x03data"
    outcomes = stage(world).process(
        [
            message(TOPIC, "a", b"{not json"),
            message(TOPIC, "b", notification("s3:ObjectCreated:Put", long_key)),
        ]
    )
    reasons = [letter.reason for letter in letters(outcomes)]
    assert reasons[0].startswith("not a bucket notification")
    assert "over 1024 bytes" in reasons[1]
