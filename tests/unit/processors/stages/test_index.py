"""The index stage against fakes of Milvus, MySQL, the registry and the object store."""

from __future__ import annotations

import numpy as np

from cbir.domain.errors import Rejected, ServiceUnavailable
from cbir.domain.generations import GenerationState
from cbir.domain.rows import ImageStatus
from cbir.wiring import index_config
from processors.stages import IndexStage
from tests.unit.processors.stages.conftest import (
    MOBILENET,
    RESNET,
    World,
    deleted,
    embedded,
    letters,
    message,
)

TOPIC = "cbir.embeddings"


def stage(world: World) -> IndexStage:
    return IndexStage(
        index_config(world.settings),
        world.index,
        world.metadata,
        world.registry,
        world.objects,
        world.policy,
    )


def test_the_first_embedding_registers_a_live_generation_and_points_the_alias(
    world: World,
) -> None:
    image = world.image(b"\x01first")
    assert letters(stage(world).process([embedded(TOPIC, image, MOBILENET)])) == []
    live = world.registry.live()
    assert live is not None and live.model_id == MOBILENET and live.embeddings_topic == TOPIC
    assert world.index.aliased() == live.name
    assert set(world.index.collections[live.name]) == {image.image_id}
    row = world.metadata.rows[image.image_id]
    assert (row.status, row.model_id, row.generation) == (ImageStatus.INDEXED, MOBILENET, live.name)
    assert world.metadata.bumps == 1


def test_every_building_and_live_generation_of_the_topic_is_written(world: World) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    building = world.registry.add(MOBILENET, TOPIC, GenerationState.BUILDING)
    other = world.registry.add(RESNET, "cbir.embeddings.resnet", GenerationState.BUILDING)
    images = [world.image(bytes([i]) + b"x") for i in range(1, 4)]
    stage(world).process([embedded(TOPIC, im, MOBILENET, i) for i, im in enumerate(images)])
    ids = {i.image_id for i in images}
    assert set(world.index.collections[live.name]) == ids
    assert set(world.index.collections[building.name]) == ids
    assert other.name not in world.index.collections
    assert world.metadata.bumps == 1  # once per batch, after the writes


def test_an_upload_then_a_delete_in_one_batch_ends_deleted_and_the_reverse_indexed(
    world: World,
) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    gone, back = world.image(b"\x01gone"), world.image(b"\x02back")
    stage(world).process(
        [
            embedded(TOPIC, gone, MOBILENET, 0),
            deleted(TOPIC, gone.image_id, 1),
            deleted(TOPIC, back.image_id, 2),
            embedded(TOPIC, back, MOBILENET, 3),
        ]
    )
    assert set(world.index.collections[live.name]) == {back.image_id}
    assert gone.image_id not in world.metadata.rows
    assert world.metadata.rows[back.image_id].status == ImageStatus.INDEXED


def test_embeddings_of_a_model_no_generation_holds_never_enter_and_fail_the_row(
    world: World,
) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    image = world.image(b"\x01stranger")
    found = letters(stage(world).process([embedded(TOPIC, image, RESNET)]))
    assert len(found) == 1 and "is not the model of the generations" in found[0].reason
    assert world.index.collections.get(live.name, {}) == {}
    assert world.metadata.rows[image.image_id].status == ImageStatus.FAILED


def test_a_row_a_store_refuses_for_good_is_dead_lettered_alone(world: World) -> None:
    world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    images = [world.image(bytes([i]) + b"y") for i in range(1, 5)]
    bad = images[2].image_id
    world.metadata.fail_upsert = lambda batch: (
        Rejected("Data too long for column 'object_key'")
        if any(i.image_id == bad for i in batch)
        else None
    )
    outcomes = stage(world).process(
        [embedded(TOPIC, im, MOBILENET, i) for i, im in enumerate(images)]
    )
    found = letters(outcomes)
    assert [(f.image_id, f.original_offset) for f in found] == [(bad, 2)]
    assert "Data too long" in found[0].reason
    statuses = {i.image_id: world.metadata.rows[i.image_id].status for i in images}
    assert statuses.pop(bad) == ImageStatus.FAILED
    assert set(statuses.values()) == {ImageStatus.INDEXED}


def test_a_delete_removes_the_bytes_under_the_rows_key_even_after_a_failure(
    world: World,
) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    image = world.image(b"\x01s3 client's", key="photos/holiday/beach.jpg")
    stage(world).process([embedded(TOPIC, image, MOBILENET)])
    bumps = world.metadata.bumps
    world.objects.fail_next = [ServiceUnavailable("MinIO", "x", "Y", "refused")]
    stage(world).process([deleted(TOPIC, image.image_id), message(TOPIC, image.image_id, None, 1)])
    assert world.objects.removed == [(image.bucket, "photos/holiday/beach.jpg")]
    assert (image.bucket, image.object_key) not in world.objects.objects
    assert image.image_id not in world.metadata.rows
    assert world.index.collections[live.name] == {}
    assert world.metadata.bumps == bumps + 1  # once, though the first attempt failed


def test_a_replay_writes_its_generation_alone_and_leaves_the_rows_to_the_live_one(
    world: World,
) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    building = world.registry.add(MOBILENET, TOPIC, GenerationState.BUILDING)
    image = world.image(b"\x01replayed")
    replay = IndexStage(
        index_config(world.settings),
        world.index,
        world.metadata,
        world.registry,
        world.objects,
        world.policy,
        replay=building,
    )
    replay.process([embedded(TOPIC, image, MOBILENET)])
    assert set(world.index.collections[building.name]) == {image.image_id}
    assert live.name not in world.index.collections
    assert world.metadata.rows[image.image_id].status == ImageStatus.PENDING
    stored = world.index.collections[building.name][image.image_id]
    assert np.allclose(stored, np.eye(8)[0])


def test_a_failure_the_stage_does_not_handle_dead_letters_the_batch_never_raises(
    world: World,
) -> None:
    image = world.image(b"\x01unlucky")
    world.registry.active = lambda: (_ for _ in ()).throw(KeyError("a bug"))  # type: ignore[method-assign]
    outcomes = stage(world).process([embedded(TOPIC, image, MOBILENET)])
    found = letters(outcomes)
    assert [f.image_id for f in found] == [image.image_id]
    assert "failed 3 times (KeyError: 'a bug')" in found[0].reason
    assert world.metadata.rows[image.image_id].status == ImageStatus.FAILED


def test_a_service_away_during_a_batch_is_waited_for_and_the_batch_done_again(
    world: World,
) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    image = world.image(b"\x01later")
    failures = [ServiceUnavailable("MySQL", "x", "Y", "gone")] * 2
    real = world.metadata.bump_generation

    def flaky_bump(milvus_ts: int) -> None:
        if failures:
            raise failures.pop()
        real(milvus_ts)

    world.metadata.bump_generation = flaky_bump  # type: ignore[method-assign]
    assert letters(stage(world).process([embedded(TOPIC, image, MOBILENET)])) == []
    assert set(world.index.collections[live.name]) == {image.image_id}
    assert world.metadata.bumps == 1 and len(world.sleeps) == 2


def test_an_embedding_keyed_by_another_id_never_enters(world: World) -> None:
    live = world.registry.add(MOBILENET, TOPIC, GenerationState.LIVE)
    image = world.image(b"\x01misfiled")
    good = embedded(TOPIC, image, MOBILENET)
    found = letters(stage(world).process([message(TOPIC, "other", good.value)]))
    assert "is not the image id" in found[0].reason
    assert world.index.collections.get(live.name, {}) == {}
