"""The features stage against fakes of the object store: SIFT once per image, deletes remove
the features, and nothing it cannot do reaches a dead letter."""

from __future__ import annotations

from pathlib import Path

from cbir.local_features.features import Extractor, LocalFeatures
from cbir.local_features.store import FeatureStore
from processors.stages import FeaturesStage
from tests.unit.processors.stages.conftest import World, deleted, message, uploaded

IMAGES = "cbir.images"
BUCKET = "features"


class CountingExtractor(Extractor):
    """The real extractor, counting its calls."""

    def __init__(self) -> None:
        super().__init__(200, 256)
        self.calls = 0

    def extract(self, data: bytes) -> LocalFeatures:
        self.calls += 1
        return super().extract(data)


def stage(world: World, extractor: Extractor) -> FeaturesStage:
    store = FeatureStore(world.objects, None, BUCKET, extractor)
    return FeaturesStage(
        world.settings.minio.bucket, world.objects, world.metadata, store, world.policy
    )


def test_features_are_stored_once_and_bytes_sift_cannot_read_are_passed_over(
    world: World, flower_photos: list[Path]
) -> None:
    extractor = CountingExtractor()
    photo, flat = world.image(flower_photos[0].read_bytes()), world.image(b"\x01no image")
    features = stage(world, extractor)
    outcomes = features.process([uploaded(IMAGES, photo), uploaded(IMAGES, flat, 1)])
    assert outcomes == []  # derived: nothing forwarded, nothing dead-lettered
    stored = world.objects.objects[(BUCKET, photo.image_id)]
    assert len(LocalFeatures.from_bytes(stored)) > 50
    assert (BUCKET, flat.image_id) not in world.objects.objects
    assert extractor.calls == 2
    # delivered again (a restart), or extracted first by the duplicates stage: kept
    features.process([uploaded(IMAGES, photo, 2)])
    assert extractor.calls == 2
    # a stored blob that cannot be read is made again
    world.objects.objects[(BUCKET, photo.image_id)] = b"not features"
    features.process([uploaded(IMAGES, photo, 3)])
    assert extractor.calls == 3
    assert len(LocalFeatures.from_bytes(world.objects.objects[(BUCKET, photo.image_id)])) > 50


def test_a_delete_removes_the_features_and_an_upload_deleted_in_the_batch_costs_nothing(
    world: World, flower_photos: list[Path]
) -> None:
    extractor = CountingExtractor()
    first = world.image(flower_photos[0].read_bytes())
    second = world.image(flower_photos[1].read_bytes())
    features = stage(world, extractor)
    features.process([uploaded(IMAGES, first)])
    assert (BUCKET, first.image_id) in world.objects.objects
    batch = [
        deleted(IMAGES, first.image_id, 1),
        uploaded(IMAGES, second, 2),
        message(IMAGES, second.image_id, None, 3),  # a tombstone deletes too
    ]
    assert features.process(batch) == []
    assert (BUCKET, first.image_id) not in world.objects.objects
    assert (BUCKET, second.image_id) not in world.objects.objects
    assert extractor.calls == 1


def test_an_upload_whose_bytes_are_gone_and_malformed_events_are_passed_over(
    world: World, flower_photos: list[Path]
) -> None:
    extractor = CountingExtractor()
    photo = world.image(flower_photos[0].read_bytes())
    del world.objects.objects[(photo.bucket, photo.object_key)]
    outcomes = stage(world, extractor).process(
        [uploaded(IMAGES, photo), message(IMAGES, "x", b"\x00garbage", 1)]
    )
    assert outcomes == [] and extractor.calls == 0
    assert not any(bucket == BUCKET for bucket, _ in world.objects.objects)
