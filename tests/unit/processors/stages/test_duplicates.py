"""The duplicates stage against fakes of Milvus, MySQL, the registry and the object store,
with real local features (extracted from the photos' bytes by the feature store)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cbir.domain.errors import Rejected
from cbir.domain.generations import GenerationState
from cbir.domain.retry import RetryPolicy
from cbir.domain.rows import ImageStatus
from cbir.domain.spatial import DuplicatePolicy
from cbir.local_features.duplicates import DuplicateFinder
from cbir.local_features.features import Extractor, LocalFeatures
from cbir.local_features.store import FeatureStore
from processors.stages import DuplicatesStage
from schemas.events import DuplicatesFound, EmbeddingComputed, ImageMetadata
from tests.fakes import FakeCache
from tests.images import half_size
from tests.unit.processors.stages.conftest import (
    MOBILENET,
    RESNET,
    SERIALIZER,
    World,
    deleted,
    forwarded,
    message,
)

TOPIC = "cbir.embeddings"
OUT = "cbir.duplicates"


def stage(
    world: World,
    extractor: Extractor | None = None,
    features_pending: Callable[[], bool] | None = None,
) -> DuplicatesStage:
    store = FeatureStore(
        world.objects,
        FakeCache(),
        "features",
        extractor or Extractor(300, 320),
        60,
        world.settings.minio.bucket,
    )
    finder = DuplicateFinder(store, DuplicatePolicy())
    return DuplicatesStage(
        OUT, 5, world.index, world.metadata, world.registry, finder, world.policy, features_pending
    )


def source_indexed_and_copy(world: World, photo: Path) -> tuple[ImageMetadata, ImageMetadata]:
    """A photo indexed in the live generation, and a half-size copy of it (not indexed)."""
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    source = world.image(photo.read_bytes())
    index(world, live.name, source, unit([1.0]))
    return source, world.image(half_size(photo))


def extract(data: bytes) -> LocalFeatures:
    return Extractor(300, 320).extract(data)


def unit(vector: list[float]) -> np.ndarray:
    values = np.array(vector + [0.0] * (8 - len(vector)), np.float32)
    return values / np.linalg.norm(values)


def index(world: World, collection: str, image: ImageMetadata, vector: np.ndarray) -> None:
    world.index.create(collection, MOBILENET, 8, "HNSW", {})
    world.index.upsert(collection, [image], vector[None, :])


def embedding(image: ImageMetadata, vector: np.ndarray, model_id: str = MOBILENET) -> bytes:
    return SERIALIZER.dumps(EmbeddingComputed.of(image, model_id, vector))


def test_a_copy_is_recorded_with_its_source_and_an_unrelated_image_is_not(
    world: World, flower_photos: list[Path]
) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    source = world.image(flower_photos[0].read_bytes(), name="source.jpg")
    other = world.image(flower_photos[4].read_bytes(), name="other.jpg")
    index(world, live.name, source, unit([1.0]))
    index(world, live.name, other, unit([0.3, 1.0]))
    copy = world.image(half_size(flower_photos[0]), name="copy.jpg")
    judging = stage(world)
    # the features group stored the source's; the other's are not there yet
    judging.finder.features_store().put(source.image_id, extract(flower_photos[0].read_bytes()))

    outcomes = judging.process([message(TOPIC, copy.image_id, embedding(copy, unit([1.0, 0.2])))])
    (record,) = forwarded(outcomes)
    assert record.topic == OUT and record.key == copy.image_id.encode()
    found = SERIALIZER.loads(record.value)
    assert isinstance(found, DuplicatesFound) and found.model_id == MOBILENET
    assert [link.image_id for link in found.links] == [source.image_id]
    assert found.links[0].tier == "both" and found.links[0].hamming is not None
    # the copy's own missing features were extracted (no features group to wait for) and
    # kept; a neighbour's never are: it is judged when its own turn comes
    assert ("features", copy.image_id) in world.objects.objects
    assert ("features", other.image_id) not in world.objects.objects


def test_deletes_and_tombstones_become_tombstones_and_other_models_are_left_alone(
    world: World,
) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    image = world.image(b"\x01not a photo")
    index(world, live.name, image, unit([1.0]))
    outcomes = stage(world).process(
        [
            deleted(TOPIC, "a" * 64, 0),
            message(TOPIC, "b" * 64, None, 1),
            message(TOPIC, image.image_id, embedding(image, unit([1.0]), RESNET), 2),
        ]
    )
    assert [(o.key, o.value, o.topic) for o in forwarded(outcomes)] == [
        (b"a" * 64, None, OUT),
        (b"b" * 64, None, OUT),
    ]


def test_an_image_without_features_gets_a_record_without_links(world: World) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    first = world.image(b"\x01garbage one")
    second = world.image(b"\x01garbage two")
    index(world, live.name, first, unit([1.0]))
    (record,) = forwarded(
        stage(world).process([message(TOPIC, second.image_id, embedding(second, unit([1.0])))])
    )
    found = SERIALIZER.loads(record.value)
    assert isinstance(found, DuplicatesFound) and found.links == ()


def test_unreadable_features_give_no_record_and_never_fail_the_image(
    world: World, flower_photos: list[Path]
) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    source = world.image(flower_photos[0].read_bytes())
    copy = world.image(flower_photos[1].read_bytes())
    index(world, live.name, source, unit([1.0]))
    world.objects.fail_next = [Rejected("the bucket does not exist")]
    outcomes = stage(world).process(
        [message(TOPIC, copy.image_id, embedding(copy, unit([1.0, 0.1])))]
    )
    assert outcomes == []
    assert world.metadata.rows[copy.image_id].status != ImageStatus.FAILED


def test_before_the_first_generation_the_stage_waits_for_it(
    world: World, flower_photos: list[Path]
) -> None:
    image = world.image(flower_photos[2].read_bytes())
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the index stage registers it meanwhile
        waits.append(seconds)
        if len(waits) == 2:
            live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
            index(world, live.name, image, unit([1.0]))

    waiting = DuplicatesStage(
        OUT,
        5,
        world.index,
        world.metadata,
        world.registry,
        DuplicateFinder(
            FeatureStore(world.objects, None, "features", Extractor(200, 256)), DuplicatePolicy()
        ),
        RetryPolicy(sleep=sleep),
    )
    outcomes = waiting.process([message(TOPIC, image.image_id, embedding(image, unit([1.0])))])
    assert len(waits) == 2
    (record,) = forwarded(outcomes)
    found = SERIALIZER.loads(record.value)
    assert isinstance(found, DuplicatesFound) and found.links == ()  # alone in the index


def test_features_the_features_group_has_yet_to_extract_are_waited_for_not_extracted(
    world: World, flower_photos: list[Path]
) -> None:
    source, copy = source_indexed_and_copy(world, flower_photos[0])
    extractor = Extractor(300, 320)
    store = FeatureStore(world.objects, None, "features", extractor)
    store.put(source.image_id, extractor.extract(flower_photos[0].read_bytes()))
    held = extractor.extract(half_size(flower_photos[0]))  # what the features group will store
    asked: list[bool] = []

    def features_pending() -> bool:
        asked.append(True)
        if len(asked) == 2:  # the features group gets to the copy
            store.put(copy.image_id, held)
        return True

    class NoExtraction(Extractor):
        def extract(self, data: bytes) -> LocalFeatures:
            raise AssertionError("the duplicates stage extracted features itself")

    waiting = stage(world, NoExtraction(300, 320), features_pending)
    outcomes = waiting.process([message(TOPIC, copy.image_id, embedding(copy, unit([1.0, 0.2])))])
    assert len(asked) == 2 and len(world.sleeps) == 2  # waited twice, then found them
    (record,) = forwarded(outcomes)
    found = SERIALIZER.loads(record.value)
    assert isinstance(found, DuplicatesFound)
    assert [link.image_id for link in found.links] == [source.image_id]


def test_once_the_features_group_has_caught_up_missing_features_are_extracted(
    world: World, flower_photos: list[Path]
) -> None:
    source, copy = source_indexed_and_copy(world, flower_photos[0])
    caught_up = stage(world, features_pending=lambda: False)
    caught_up.finder.features_store().put(source.image_id, extract(flower_photos[0].read_bytes()))
    (record,) = forwarded(
        caught_up.process([message(TOPIC, copy.image_id, embedding(copy, unit([1.0, 0.2])))])
    )
    assert world.sleeps == []
    found = SERIALIZER.loads(record.value)
    assert isinstance(found, DuplicatesFound)
    assert [link.image_id for link in found.links] == [source.image_id]
    assert ("features", copy.image_id) in world.objects.objects  # a lost blob, made again
