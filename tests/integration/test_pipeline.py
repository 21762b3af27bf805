"""The streaming pipeline on the real stack: producer -> Kafka -> Faust embed (Triton) ->
Kafka -> Faust index -> Milvus and MySQL, with dead letters, deletes and a crash."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbir import wiring
from cbir.adapters import object_store
from cbir.adapters.embedder import TritonEmbedder
from cbir.adapters.kafka_topics import admin_client
from cbir.adapters.vector_index import MilvusVectorIndex
from cbir.domain.images import image_id_of, object_key_of
from cbir.settings import Settings
from cbir.stack.launcher import Launcher
from cbir.wiring import CORE, consumer_lag
from producers.ingest import IngestItem, collect
from schemas.events import DeadLetter, Event
from tests.integration.helpers import indexed, role_workers, rows, wait_for
from tests.integration.topics import read_events

pytestmark = pytest.mark.integration
SIX_SPECIES = ("0", "5", "12", "1", "7", "14")  # the first three: the session's indexed_flowers


@pytest.fixture(scope="module")
def pipeline(launcher: Launcher, mobilenet_served: Path) -> Settings:
    """A healthy stack whose processors embed with the served MobileNet."""
    assert launcher.service("processors").process.pid is not None
    return launcher.settings


def vectors_of(settings: Settings, image_ids: set[str]) -> int:
    """How many entities the searched collection holds for these ids (duplicates counted)."""
    index = MilvusVectorIndex(settings.milvus, settings.processors)
    try:
        found = 0
        ordered = sorted(image_ids)
        for start in range(0, len(ordered), 1000):
            chunk = ordered[start : start + 1000]
            result = index.served().query(
                f"image_id in {json.dumps(chunk)}",
                output_fields=["count(*)"],
                consistency_level="Strong",
            )
            found += int(result[0]["count(*)"])
        return found
    finally:
        index.close()


def drained(settings: Settings) -> bool:
    kafka = settings.kafka
    topics = [kafka.object_events_topic, kafka.images_topic, kafka.embeddings_topic]
    return all(lag.lag == 0 for lag in consumer_lag(settings, topics))


def unique_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_six_species_are_indexed_exactly_once_and_each_image_finds_itself(
    pipeline: Settings, shared_dir: Path
) -> None:
    # six of flowers17's species, 480 photographs (three of them may be in already: the
    # session's indexed_flowers), walked from flowers17's folder: the species become tags
    folder = shared_dir / "data" / "flowers17"

    def six_species() -> list[IngestItem]:
        return [item for item in collect([str(folder)]) if item.path.parent.name in SIX_SPECIES]

    items = six_species()
    ids = {image_id_of(item.path.read_bytes()) for item in items}
    assert len(items) == 480
    summary = wiring.ingest(pipeline, items)
    assert summary.new + summary.present == 480 and not summary.rejected
    # SIFT local features are extracted at ingest (about 90 ms a photograph here)
    wait_for(lambda: indexed(pipeline, ids) == len(ids), 600, "six species to be indexed")
    assert vectors_of(pipeline, ids) == len(ids)
    by_id = rows(pipeline, ids)
    for item in items:  # the species folder became a tag
        assert item.path.parent.name in json.loads(
            str(by_id[image_id_of(item.path.read_bytes())]["tags"])
        )

    sample = random.Random(17).sample(items, 50)
    vectors, errors = TritonEmbedder(pipeline.triton, pipeline.processors.model).embed(
        [item.path.read_bytes() for item in sample]
    )
    assert not any(errors)
    index = MilvusVectorIndex(pipeline.milvus, pipeline.processors)
    hits = index.search(vectors, k=5)
    index.close()
    for item, found in zip(sample, hits, strict=True):
        assert found[0].image_id == image_id_of(item.path.read_bytes()), item.path

    again = wiring.ingest(pipeline, six_species())
    assert (again.new, again.present) == (0, 480)
    assert vectors_of(pipeline, ids) == len(ids)


def test_bad_files_land_in_the_dead_letter_topic_with_reasons(
    pipeline: Settings, shared_dir: Path, tmp_path: Path
) -> None:
    photo = sorted((shared_dir / "data" / "flowers17" / "9").glob("*.jpg"))[0]
    (tmp_path / "corrupt.jpg").write_bytes(photo.read_bytes()[:2000] + uuid.uuid4().bytes)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text(f"a text file named .jpg {uuid.uuid4()}")
    (tmp_path / "good.png").write_bytes(unique_png(seed=int(time.time())))
    bad = {
        image_id_of((tmp_path / n).read_bytes()): n
        for n in ("corrupt.jpg", "empty.jpg", "text.jpg")
    }
    good = image_id_of((tmp_path / "good.png").read_bytes())
    wiring.ingest(pipeline, collect([str(tmp_path)]))

    wait_for(lambda: indexed(pipeline, {good}) == 1, 120, "the good image to be indexed")
    wait_for(
        lambda: (
            all(r["status"] == "failed" for r in rows(pipeline, set(bad)).values())
            and len(rows(pipeline, set(bad))) == 3
        ),
        120,
        "the bad images to fail",
    )
    reasons = {image_id: str(row["error"]) for image_id, row in rows(pipeline, set(bad)).items()}
    assert "zero bytes" in reasons[image_id_of(b"")]
    assert all(reasons.values())

    letters = read_dead_letters(pipeline, set(bad))
    assert set(letters) == set(bad)
    assert {letter.stage for letter in letters.values()} == {"embed"}
    assert all(letter.original_value for letter in letters.values())


def read_dead_letters(settings: Settings, image_ids: set[str]) -> dict[str, DeadLetter]:
    def found(events: list[tuple[bytes, Event]]) -> dict[str, DeadLetter]:
        return {
            e.image_id: e
            for _, e in events
            if isinstance(e, DeadLetter) and e.image_id in image_ids
        }

    return found(
        read_events(
            settings,
            settings.kafka.dead_letter_topic,
            lambda events: set(found(events)) == image_ids,
        )
    )


def gone_everywhere(settings: Settings, image_id: str) -> bool:
    minio = object_store.MinioObjectStore(settings.minio)
    return (
        not rows(settings, {image_id})
        and vectors_of(settings, {image_id}) == 0
        and minio.get(settings.minio.bucket, object_key_of(image_id)) is None
    )


def test_a_deleted_image_is_gone_from_every_store_and_from_search(
    pipeline: Settings, tmp_path: Path
) -> None:
    data = unique_png(seed=1000 + int(time.time()))
    (tmp_path / "doomed.png").write_bytes(data)
    image_id = image_id_of(data)
    wiring.ingest(pipeline, collect([str(tmp_path)]))
    wait_for(lambda: indexed(pipeline, {image_id}) == 1, 120, "the image to be indexed")
    vectors, _ = TritonEmbedder(pipeline.triton, pipeline.processors.model).embed([data])
    index = MilvusVectorIndex(pipeline.milvus, pipeline.processors)
    assert index.search(vectors, k=1)[0][0].image_id == image_id

    wiring.delete(pipeline, [image_id])
    wait_for(lambda: gone_everywhere(pipeline, image_id), 120, "the image to be gone")
    assert all(hit.image_id != image_id for hit in index.search(vectors, k=10)[0])
    index.close()


def test_upload_then_delete_in_quick_succession_ends_deleted(
    pipeline: Settings, tmp_path: Path
) -> None:
    ids = set()
    for n in range(5):
        data = unique_png(seed=5000 + n + int(time.time()))
        (tmp_path / f"brief-{n}.png").write_bytes(data)
        ids.add(image_id_of(data))
    wiring.ingest(pipeline, collect([str(tmp_path)]))
    wiring.delete(pipeline, sorted(ids))
    wait_for(lambda: drained(pipeline), 120, "the processors to catch up")
    for image_id in ids:
        assert gone_everywhere(pipeline, image_id), image_id


def test_kill_9_while_indexing_cifar10_loses_and_duplicates_nothing(
    pipeline: Settings, launcher: Launcher, shared_dir: Path
) -> None:
    # 3000 of CIFAR-10's images: enough for the kill to land with thousands in flight
    items = collect([str(shared_dir / "data" / "cifar10-test")])[:3000]
    ids = {image_id_of(item.path.read_bytes()) for item in items}
    summary = wiring.ingest(pipeline, items)
    assert summary.new + summary.present == len(items) == 3000
    wait_for(lambda: indexed(pipeline, ids) >= len(ids) // 4, 300, "a quarter to be indexed")
    processors = launcher.service("processors").process
    pid = processors.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(processors.exited, 30, "the processors to die")
    assert indexed(pipeline, ids) < len(ids), "killed too late to prove anything"

    launcher.up()  # the launcher starts what is not running: the processors
    wait_for(lambda: indexed(pipeline, ids) == len(ids), 600, "every image to be indexed")
    assert vectors_of(pipeline, ids) == len(ids)


def group_members(settings: Settings) -> int:
    admin = admin_client(settings.kafka)
    group = settings.processors.app_id
    return len(admin.describe_consumer_groups([group])[group].result(timeout=10).members)


def test_one_of_two_workers_killed_midstream_loses_and_duplicates_nothing(
    pipeline: Settings, launcher: Launcher, tmp_path: Path
) -> None:
    assert pipeline.processors.workers == 2
    wait_for(lambda: group_members(pipeline) == 2, 60, "two workers in the consumer group")
    for seed in range(600):
        (tmp_path / f"{seed}.png").write_bytes(unique_png(seed=77_000 + seed))
    items = collect([str(tmp_path)])
    ids = {image_id_of(item.path.read_bytes()) for item in items}
    wiring.ingest(pipeline, items)
    wait_for(lambda: indexed(pipeline, ids) >= len(ids) // 5, 300, "a fifth to be indexed")
    workers = role_workers(launcher, CORE)
    assert len(workers) == 2
    workers[0].kill()  # SIGKILL: the supervisor must start it again, Kafka move its partitions
    assert indexed(pipeline, ids) < len(ids), "killed too late to prove anything"
    wait_for(lambda: indexed(pipeline, ids) == len(ids), 600, "every image to be indexed")
    assert vectors_of(pipeline, ids) == len(ids)  # once each
    wait_for(
        lambda: len(role_workers(launcher, CORE)) == 2, 60, "the killed worker to be restarted"
    )
    assert workers[0].pid not in {p.pid for p in role_workers(launcher, CORE)}
    wait_for(lambda: group_members(pipeline) == 2, 120, "the group to be two workers again")


def test_an_object_put_by_an_s3_client_is_searchable_and_its_removal_deletes_it(
    pipeline: Settings,
) -> None:
    data = unique_png(seed=9000 + int(time.time()))
    image_id, key = image_id_of(data), f"incoming/{uuid.uuid4().hex}.png"
    minio = object_store.client(pipeline.minio)  # a plain S3 client: no producer involved
    minio.put_object(pipeline.minio.bucket, key, io.BytesIO(data), len(data))
    wait_for(lambda: indexed(pipeline, {image_id}) == 1, 120, "the S3 object to be indexed")
    row = rows(pipeline, {image_id})[image_id]
    assert (row["object_key"], row["source"], row["file_name"]) == (key, "s3", key.split("/")[1])
    vectors, _ = TritonEmbedder(pipeline.triton, pipeline.processors.model).embed([data])
    index = MilvusVectorIndex(pipeline.milvus, pipeline.processors)
    assert index.search(vectors, k=1)[0][0].image_id == image_id
    index.close()

    minio.remove_object(pipeline.minio.bucket, key)
    wait_for(
        lambda: not rows(pipeline, {image_id}) and vectors_of(pipeline, {image_id}) == 0,
        120,
        "the removed object's image to be gone",
    )
