"""The producer on fakes: what a folder walk sends and refuses, a service that goes away for
a while and for good, and a run that resumes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from cbir.domain.errors import ServiceUnavailable
from cbir.domain.images import image_id_of
from cbir.domain.retry import RetryPolicy
from cbir.settings import Settings
from cbir.wiring import ingest_config
from producers.ingest import Ingestor, collect
from schemas.events import EventSerializer, ImageUploaded
from tests.fakes import FakeMetadataStore, FakeObjectStore, FakeWriter


def picture(path: Path, fmt: str, color: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (color, 0, 0)).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


class World:
    def __init__(self, wait_s: float = 30) -> None:
        self.objects = FakeObjectStore()
        self.metadata = FakeMetadataStore()
        self.writer = FakeWriter()
        self.sleeps: list[float] = []
        policy = RetryPolicy(give_up_after_s=wait_s, sleep=self.sleeps.append)
        self.ingestor = Ingestor(
            ingest_config(Settings()),
            self.objects,
            self.metadata,
            self.writer,
            policy,
            source="test",
        )


def test_a_folder_walk_sends_images_and_lists_every_other_file_with_why(tmp_path: Path) -> None:
    jpeg = picture(tmp_path / "a.jpg", "JPEG", 10)
    picture(tmp_path / "b.tif", "TIFF", 20)
    picture(tmp_path / "c.ico", "ICO", 30)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    world = World()
    summary = world.ingestor.ingest(collect([str(tmp_path)]))
    assert summary.new == 1 and summary.present == 0
    refused = dict(summary.rejected)
    assert sorted(Path(p).name for p in refused) == ["b.tif", "c.ico", "notes.txt"]
    assert all("convert it to JPEG, PNG, WebP, HEIC, AVIF" in r for r in refused.values())
    event = EventSerializer().loads(world.writer.sent[0][2])
    assert isinstance(event, ImageUploaded) and event.image.image_id == image_id_of(jpeg)
    assert world.metadata.rows[image_id_of(jpeg)].status == "pending"


def test_a_file_named_on_the_command_line_is_sent_whatever_it_holds(tmp_path: Path) -> None:
    picture(tmp_path / "scan.tif", "TIFF", 40)
    summary = World().ingestor.ingest(collect([str(tmp_path / "scan.tif")]))
    assert summary.new == 1 and summary.rejected == []  # the embed stage judges the bytes


def test_a_store_away_for_a_while_is_waited_for_and_nothing_is_lost(tmp_path: Path) -> None:
    picture(tmp_path / "a.jpg", "JPEG", 50)
    world = World()
    world.objects.fail_next = [ServiceUnavailable("MinIO", "x", "Y", "refused")] * 3
    summary = world.ingestor.ingest(collect([str(tmp_path)]))
    assert summary.new == 1 and len(world.sleeps) == 3


def test_a_store_away_for_good_stops_the_run_and_the_rerun_resumes(tmp_path: Path) -> None:
    for color in range(3):
        picture(tmp_path / f"{color}.png", "PNG", color)
    world = World(wait_s=2)
    world.objects.fail_next = [ServiceUnavailable("MinIO", "x", "Y", "refused")] * 99
    with pytest.raises(ServiceUnavailable, match="MinIO"):
        world.ingestor.ingest(collect([str(tmp_path)]))
    assert world.writer.sent == [] and world.metadata.rows == {}  # nothing half-recorded
    world.objects.fail_next = []
    first = world.ingestor.ingest(collect([str(tmp_path)]))
    again = world.ingestor.ingest(collect([str(tmp_path)]))
    assert (first.new, again.new, again.present) == (3, 0, 3)


def test_an_event_kafka_refuses_is_rejected_with_its_reason_and_not_recorded(
    tmp_path: Path,
) -> None:
    data = picture(tmp_path / "big.png", "PNG", 60)
    world = World()
    world.writer.refuse = lambda key: key == image_id_of(data).encode()
    summary = world.ingestor.ingest(collect([str(tmp_path)]))
    assert summary.new == 0 and summary.rejected == [
        ("big.png", "Kafka refused it: MSG_SIZE_TOO_LARGE")
    ]
    assert world.metadata.rows == {}
