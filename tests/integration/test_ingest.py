"""`cbir ingest` against the real stack: objects in MinIO, events in Kafka, resumable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from cbir import wiring
from cbir.adapters import metadata_store, object_store
from cbir.domain.images import image_id_of, object_key_of
from cbir.settings import Settings
from producers.ingest import collect
from schemas.events import Event, ImageUploaded
from tests.integration.topics import read_events

pytestmark = pytest.mark.integration


def end_offsets(settings: Settings) -> int:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "offsets-probe"}
    )
    topic = settings.kafka.images_topic
    total = sum(
        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(settings.kafka.partitions)
    )
    consumer.close()
    return total


def uploads(settings: Settings, ids: set[str]) -> dict[str, ImageUploaded]:
    """The ImageUploaded events of these images, checking that each is keyed by its id."""

    def found(events: list[tuple[bytes, Event]]) -> dict[str, ImageUploaded]:
        return {e.image.image_id: e for _, e in events if isinstance(e, ImageUploaded)}

    events = read_events(settings, settings.kafka.images_topic, lambda evs: ids <= set(found(evs)))
    for key, event in events:
        # only these: the log also holds other tests' events, a deliberately miskeyed one too
        if isinstance(event, ImageUploaded) and event.image.image_id in ids:
            assert key == event.image.image_id.encode()
    return found(events)


def test_ingest_a_folder_then_again(stack: Settings, shared_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for species in ("2", "7"):
        (folder / species).mkdir(parents=True)
        for photo in sorted((shared_dir / "data" / "flowers17" / species).glob("*.jpg"))[:5]:
            shutil.copy(photo, folder / species / photo.name)
    (folder / "odd").mkdir()
    (folder / "odd" / "text.jpg").write_text("not an image")
    (folder / "odd" / "README.txt").write_text("not sent: not an image suffix, but said")
    collected = collect([str(folder)], tags=["test"])
    items = [item for item in collected if not item.refused]
    assert (len(collected), len(items)) == (12, 11)
    before = end_offsets(stack)

    summary = wiring.ingest(stack, collected)
    assert (summary.new, summary.present) == (11, 0)
    assert [(Path(p).name, "convert it" in why) for p, why in summary.rejected] == [
        ("README.txt", True)
    ]
    assert end_offsets(stack) - before == 11

    ids = {image_id_of(item.path.read_bytes()) for item in items}
    events = uploads(stack, ids)
    assert ids <= set(events)
    rose = next(i for i in items if i.path.parent.name == "2")
    image = events[image_id_of(rose.path.read_bytes())].image
    assert (image.file_name, image.tags, image.content_type) == (
        rose.path.name,
        ("test", "2"),
        "image/jpeg",
    )
    assert image.width > 0 and image.height > 0
    assert image.object_key == object_key_of(image.image_id)
    minio = object_store.client(stack.minio)
    assert minio.get_object(stack.minio.bucket, image.object_key).read() == rose.path.read_bytes()
    with metadata_store.connect(stack.mysql) as conn:
        assert metadata_store.existing_image_ids(conn, ids) == ids

    again = wiring.ingest(stack, collect([str(folder)], tags=["test"]))
    assert (again.new, again.present) == (0, 11)
    assert end_offsets(stack) - before == 11, "a re-run must send nothing"


def test_unreadable_and_missing_paths_are_reported(stack: Settings, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file, folder or matching glob"):
        collect([str(tmp_path / "nothing-*.jpg")])
    vanished = tmp_path / "vanished.jpg"
    vanished.write_bytes(b"gone before it is read")
    items = collect([str(vanished)])
    vanished.unlink()
    summary = wiring.ingest(stack, items)
    assert summary.new == 0
    assert summary.rejected == [(str(vanished), "unreadable: No such file or directory")]
