"""The thumbnails stage against fakes of the object store: the thumbnail made once per image
(the preview waits for its first request), deletes remove both, bytes that are no image are
passed over."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PIL import Image

from cbir.thumbnails import RenditionSizes, ThumbnailStore, rendition_key
from processors.stages import ThumbnailsStage
from processors.stages.derived import YieldToIndexing
from schemas.events import now
from tests.unit.processors.stages.conftest import World, deleted, uploaded

IMAGES = "cbir.images"
BUCKET = "thumbnails"


def stage(world: World) -> tuple[ThumbnailsStage, ThumbnailStore]:
    store = ThumbnailStore(world.objects, BUCKET, world.settings.minio.bucket, RenditionSizes())
    made = ThumbnailsStage(
        world.settings.minio.bucket, world.objects, world.metadata, store, world.policy
    )
    return made, store


def test_the_thumbnail_is_made_once_and_a_delete_removes_every_rendition(
    world: World, flower_photos: list[Path], tmp_path: Path
) -> None:
    photo, garbage = world.image(flower_photos[0].read_bytes()), world.image(b"\x01no image")
    thumbnails, store = stage(world)
    assert thumbnails.process([uploaded(IMAGES, photo), uploaded(IMAGES, garbage, 1)]) == []
    data = world.objects.objects[(BUCKET, rendition_key(photo.image_id, "thumbnail"))]
    (tmp_path / "thumbnail").write_bytes(data)
    with Image.open(tmp_path / "thumbnail") as image:
        assert image.format == "WEBP"
    assert (BUCKET, rendition_key(photo.image_id, "preview")) not in world.objects.objects
    assert store.get(photo.image_id, "preview", photo.object_key) is not None  # on request
    assert not any(key.endswith(f"{garbage.image_id}.webp") for _, key in world.objects.objects)
    # delivered again: kept, not made again
    kept = dict(world.objects.objects)
    thumbnails.process([uploaded(IMAGES, photo, 2)])
    assert world.objects.objects == kept and store.has(photo.image_id)
    thumbnails.process([deleted(IMAGES, photo.image_id, 3)])
    assert not store.has(photo.image_id)
    assert not any(bucket == BUCKET for bucket, _ in world.objects.objects)


def test_an_upload_older_than_the_stage_is_looked_for_a_newer_one_is_made_at_once(
    world: World, flower_photos: list[Path]
) -> None:
    old = world.image(flower_photos[0].read_bytes())  # uploaded 2026-01-01
    thumbnails, _ = stage(world)
    new = dataclasses.replace(world.image(flower_photos[1].read_bytes()), uploaded_at=now())
    thumbnails.process([uploaded(IMAGES, old), uploaded(IMAGES, new, 1)])
    assert world.objects.looked == [(BUCKET, rendition_key(old.image_id, "thumbnail"))]
    for image in (old, new):
        assert (BUCKET, rendition_key(image.image_id, "thumbnail")) in world.objects.objects


class FakeClock:
    """A clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def yielding(lags: list[int], max_s: float = 30.0) -> tuple[YieldToIndexing, FakeClock]:
    clock, left = FakeClock(), iter(lags)

    def behind() -> int:
        value = next(left, lags[-1])
        if value < 0:
            raise RuntimeError("Kafka away")
        return value

    return YieldToIndexing(behind, 200, max_s, 1.0, clock.sleep, lambda: clock.now), clock


def test_a_batch_waits_while_indexing_is_behind_and_goes_on_when_it_catches_up() -> None:
    waiting, clock = yielding([1300, 900, 450, 150])
    assert waiting.wait() == 3.0 and clock.slept == [1.0, 1.0, 1.0]
    assert yielding([150])[0].wait() == 0.0  # a small lag: no wait


def test_a_batch_never_waits_past_its_bound_nor_on_a_lag_it_cannot_read() -> None:
    waiting, clock = yielding([5000], max_s=2.5)
    assert waiting.wait() == 2.5 and clock.slept == [1.0, 1.0, 0.5]
    assert yielding([-1])[0].wait() == 0.0


def test_the_stage_yields_before_making_thumbnails_not_before_a_delete(
    world: World, flower_photos: list[Path]
) -> None:
    photo = world.image(flower_photos[0].read_bytes())
    waiting, clock = yielding([900, 100])
    store = ThumbnailStore(world.objects, BUCKET, world.settings.minio.bucket, RenditionSizes())
    thumbnails = ThumbnailsStage(
        world.settings.minio.bucket, world.objects, world.metadata, store, world.policy, waiting
    )
    thumbnails.process([deleted(IMAGES, "f" * 64)])
    assert clock.slept == []
    thumbnails.process([uploaded(IMAGES, photo, 1)])
    assert clock.slept == [1.0] and store.has(photo.image_id)
