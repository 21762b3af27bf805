"""The embed stage against fakes of the object store, the registry and Triton."""

from __future__ import annotations

from cbir.domain.errors import ServiceUnavailable
from cbir.domain.generations import Generation, GenerationState
from cbir.domain.rows import ImageStatus
from cbir.wiring import embed_config
from processors.stages import EmbedStage
from schemas.events import EmbeddingComputed, ImageDeleted
from tests.unit.processors.stages.conftest import (
    MOBILENET,
    RESNET,
    SERIALIZER,
    World,
    deleted,
    forwarded,
    letters,
    message,
    uploaded,
)

IMAGES = "cbir.images"


def stage(world: World, replay: Generation | None = None) -> EmbedStage:
    return EmbedStage(
        embed_config(world.settings),
        world.objects,
        world.metadata,
        world.registry,
        world.embedders,
        world.policy,
        replay,
    )


def test_uploads_are_embedded_into_the_live_generations_topic(world: World) -> None:
    world.registry.add(MOBILENET, "cbir.embeddings", GenerationState.LIVE)
    first, second = world.image(b"\x01one"), world.image(b"\x02two")
    outcomes = stage(world).process([uploaded(IMAGES, first), uploaded(IMAGES, second, 1)])
    sent = forwarded(outcomes)
    assert [o.topic for o in sent] == ["cbir.embeddings"] * 2
    events = [SERIALIZER.loads(o.value or b"") for o in sent]
    assert all(isinstance(e, EmbeddingComputed) and e.model_id == MOBILENET for e in events)
    assert [o.key for o in sent] == [first.image_id.encode(), second.image_id.encode()]
    assert letters(outcomes) == []


def test_an_upload_deleted_later_in_the_batch_is_not_embedded(world: World) -> None:
    world.registry.add(MOBILENET, "cbir.embeddings", GenerationState.LIVE)
    image = world.image(b"\x01gone soon")
    batch = [
        uploaded(IMAGES, image),
        deleted(IMAGES, image.image_id, 1),
        message(IMAGES, image.image_id, None, 2),
    ]
    sent = forwarded(stage(world).process(batch))
    assert isinstance(SERIALIZER.loads(sent[0].value or b""), ImageDeleted)
    assert sent[1].value is None  # the tombstone goes on, for compaction downstream
    assert world.embedders("mobilenet").calls == 0


def test_a_lost_object_and_an_unreadable_image_are_dead_lettered_and_marked_failed(
    world: World,
) -> None:
    world.registry.add(MOBILENET, "cbir.embeddings", GenerationState.LIVE)
    lost, bad, good = world.image(b"\x01lost"), world.image(b"bad bytes"), world.image(b"\x03ok")
    world.objects.objects.pop((lost.bucket, lost.object_key))
    outcomes = stage(world).process(
        [uploaded(IMAGES, lost), uploaded(IMAGES, bad, 1), uploaded(IMAGES, good, 2)]
    )
    found = {letter.image_id: letter for letter in letters(outcomes)}
    assert found[lost.image_id].stage == "fetch" and "gone" in found[lost.image_id].reason
    assert found[bad.image_id].stage == "embed" and "cannot identify" in found[bad.image_id].reason
    assert found[bad.image_id].original_offset == 1
    assert len(forwarded(outcomes)) == 1  # the good one goes on
    rows = world.metadata.rows
    assert rows[lost.image_id].status == ImageStatus.FAILED
    assert rows[bad.image_id].status == ImageStatus.FAILED and "embed:" in (
        rows[bad.image_id].error or ""
    )
    assert rows[good.image_id].status == ImageStatus.PENDING


def test_building_and_live_generations_each_get_their_models_embeddings(world: World) -> None:
    world.registry.add(MOBILENET, "cbir.embeddings", GenerationState.LIVE)
    world.registry.add(RESNET, "cbir.embeddings.resnet", GenerationState.BUILDING)
    image, bad = world.image(b"\x05both"), world.image(b"bad again")
    outcomes = stage(world).process([uploaded(IMAGES, image), uploaded(IMAGES, bad, 1)])
    by_topic = {o.topic: SERIALIZER.loads(o.value or b"") for o in forwarded(outcomes)}
    assert {t: e.model_id for t, e in by_topic.items()} == {  # type: ignore[union-attr]
        "cbir.embeddings": MOBILENET,
        "cbir.embeddings.resnet": RESNET,
    }
    assert len(letters(outcomes)) == 2  # the bad image, once per model
    # only the live model's failure marks the row: a build never fails the served image
    assert world.metadata.rows[bad.image_id].error == "embed: mobilenet: cannot identify image file"


def test_an_object_store_outage_is_waited_for_and_loses_nothing(world: World) -> None:
    world.registry.add(MOBILENET, "cbir.embeddings", GenerationState.LIVE)
    image = world.image(b"\x07patience")
    world.objects.fail_next = [ServiceUnavailable("MinIO", "x", "Y", "refused")] * 3
    outcomes = stage(world).process([uploaded(IMAGES, image)])
    assert len(forwarded(outcomes)) == 1 and letters(outcomes) == []
    assert len(world.sleeps) == 3


def test_a_model_that_keeps_failing_unexpectedly_dead_letters_the_batch(world: World) -> None:
    world.registry.add(MOBILENET, "cbir.embeddings", GenerationState.LIVE)
    images = [world.image(bytes([i]) + b"x") for i in range(1, 4)]
    world.embedders("mobilenet").fail_next = [RuntimeError("model crashed")] * 10
    outcomes = stage(world).process([uploaded(IMAGES, im, i) for i, im in enumerate(images)])
    found = letters(outcomes)
    assert len(found) == 3 and forwarded(outcomes) == []
    assert all("failed 3 times (RuntimeError: model crashed)" in f.reason for f in found)
    assert all(world.metadata.rows[i.image_id].status == ImageStatus.FAILED for i in images)


def test_bytes_that_are_no_event_are_dead_lettered_and_the_rest_goes_on(world: World) -> None:
    world.registry.add(MOBILENET, "cbir.embeddings", GenerationState.LIVE)
    image = world.image(b"\x09fine")
    outcomes = stage(world).process(
        [message(IMAGES, "junk", b"not avro at all"), uploaded(IMAGES, image, 1)]
    )
    assert [letter.stage for letter in letters(outcomes)] == ["decode"]
    assert len(forwarded(outcomes)) == 1


def test_before_any_generation_the_configured_model_and_topic_are_used(world: World) -> None:
    world.settings.processors.model = "mobilenet"
    image = world.image(b"\x0bfirst")
    sent = forwarded(stage(world).process([uploaded(IMAGES, image)]))
    assert [o.topic for o in sent] == [world.settings.kafka.embeddings_topic]


def test_an_event_keyed_by_another_id_is_dead_lettered(world: World) -> None:
    world.registry.add(MOBILENET, "cbir.embeddings", GenerationState.LIVE)
    image = world.image(b"\x0dmisfiled")
    event = uploaded(IMAGES, image)
    wrong = message(IMAGES, "not-the-id", event.value)
    outcomes = stage(world).process([wrong])
    assert forwarded(outcomes) == [] and "is not the image id" in letters(outcomes)[0].reason
