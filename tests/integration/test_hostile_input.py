"""Hostile input on the real stack: 59 kinds of odd and hostile images through each entry
(the producer, the API's upload, a plain S3 client's put), and malformed events on every
topic a processor reads. Each image ends indexed or failed with a reason of its own, each
malformed event in the dead-letter topic with its reason, the stream goes on, and no process
dies."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import httpx
import pytest

from cbir import wiring
from cbir.adapters import object_store
from cbir.adapters.event_log import KafkaWriter
from cbir.domain.images import image_id_of
from cbir.settings import Settings
from cbir.stack.launcher import Launcher
from producers.ingest import IngestItem
from schemas.events import DeadLetter, Event, EventSerializer, ImageMetadata, ImageUploaded, now
from tests.hostile_images import Hostile, hostile_corpus
from tests.integration.conftest import TEST_API_KEY
from tests.integration.helpers import rows, wait_for
from tests.integration.test_pipeline import drained, unique_png, vectors_of
from tests.integration.topics import read_events

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(launcher: Launcher, mobilenet_served: Path) -> Settings:
    return launcher.settings


def alive(launcher: Launcher) -> dict[str, bool]:
    """Whether the processors and the API are still the processes the launcher started."""
    return {
        name: not launcher.service(name).process.exited() for name in ("processors", "query-api")
    }


def settled(settings: Settings, expected: dict[str, Hostile]) -> bool:
    found = rows(settings, set(expected))
    return len(found) == len(expected) and all(r["status"] != "pending" for r in found.values())


def test_hostile_images_through_every_entry_end_indexed_or_failed_with_their_reason(
    pipeline: Settings, launcher: Launcher, flower_photos: list[Path], tmp_path: Path
) -> None:
    by_entry = {
        entry: hostile_corpus(photo)
        for entry, photo in zip(("producer", "api", "s3"), flower_photos[1:4], strict=True)
    }
    expected: dict[str, Hostile] = {}
    for corpus in by_entry.values():
        expected.update({image_id_of(h.data): h for h in corpus})

    # the producer: every file named, so each is sent and judged by its bytes
    folder = tmp_path / "producer"
    folder.mkdir()
    items = []
    for hostile in by_entry["producer"]:
        path = folder / hostile.file_name
        path.write_bytes(hostile.data)
        items.append(IngestItem(path, ("hostile",)))
    summary = wiring.ingest(pipeline, items)
    assert summary.rejected == [] and summary.new + summary.present == len(items)

    # the API: refused at the door with a 4xx naming why, or taken (202, or 200 when known)
    refused_at_door = set()
    api = pipeline.api
    with httpx.Client(base_url=f"http://{api.host}:{api.port}", timeout=60) as client:
        for hostile in by_entry["api"]:
            answer = client.post(
                "/images",
                files={"image": (hostile.file_name, hostile.data)},
                headers={"X-API-Key": TEST_API_KEY},
            )
            assert answer.status_code in (200, 202, 400, 413, 415), (hostile.kind, answer.text)
            body = answer.json()
            if answer.status_code >= 400:
                assert hostile.verdict == "reject" and len(body["detail"]) > 20, hostile.kind
                refused_at_door.add(image_id_of(hostile.data))
    elsewhere = {image_id_of(h.data) for h in by_entry["producer"] + by_entry["s3"]}
    for image_id in refused_at_door - elsewhere:  # never entered: no row, no vector
        expected.pop(image_id)
        assert not rows(pipeline, {image_id})

    # a plain S3 client: the bucket notification brings each object into the pipeline
    minio = object_store.client(pipeline.minio)
    for hostile in by_entry["s3"]:
        minio.put_object(
            pipeline.minio.bucket,
            f"hostile/{hostile.file_name}",
            io.BytesIO(hostile.data),
            len(hostile.data),
        )

    wait_for(lambda: settled(pipeline, expected), 240, "every hostile image to be judged")
    # and every event they caused handled (an S3 put of bytes the producer sent already is
    # a second upload event): nothing of this test is left in flight for the next one
    wait_for(lambda: drained(pipeline), 120, "the processors to have handled every event")
    found = rows(pipeline, set(expected))
    wrong = []
    for image_id, hostile in expected.items():
        row = found[image_id]
        if hostile.verdict == "embed" and row["status"] != "indexed":
            wrong.append(f"{hostile.kind}: {row['status']} ({row['error']})")
        if hostile.verdict == "reject" and (
            row["status"] != "failed" or hostile.reason not in str(row["error"])
        ):
            wrong.append(f"{hostile.kind}: {row['status']} ({row['error']})")
    assert not wrong, wrong
    embedded = {i for i, h in expected.items() if h.verdict == "embed"}
    assert vectors_of(pipeline, embedded) == len(embedded)  # once each
    assert alive(launcher) == {"processors": True, "query-api": True}


def test_malformed_events_on_every_topic_are_dead_lettered_and_the_stream_goes_on(
    pipeline: Settings, launcher: Launcher
) -> None:
    kafka = pipeline.kafka
    serializer = EventSerializer()
    marker = os.urandom(6).hex()
    good = unique_png(int(marker, 16) % 100_000)
    good_id = image_id_of(good)
    # a well-formed upload event (of an image whose bytes were never stored)
    stray = image_id_of(marker.encode())
    upload_event = serializer.dumps(
        ImageUploaded(
            ImageMetadata(
                stray,
                pipeline.minio.bucket,
                f"nowhere/{stray}",
                "stray.png",
                "test",
                "image/png",
                1,
                1,
                1,
                now(),
            )
        )
    )
    unknown_fingerprint = b"\xc3\x01" + struct.pack("<Q", 0x0123456789ABCDEF) + b"\x02ab"
    letter = serializer.dumps(
        DeadLetter("x", "y", "z", "t", 0, 0)  # valid Avro, the wrong record for these topics
    )
    malformed = {
        kafka.images_topic: [
            (f"garbage-{marker}", b"\x00\xff not avro at all"),
            (f"fingerprint-{marker}", unknown_fingerprint),
            (f"record-{marker}", letter),
            (f"oversized-{marker}", os.urandom(900_000)),
            (f"miskeyed-{marker}", upload_event),  # keyed by something else than its id
        ],
        kafka.embeddings_topic: [
            (f"garbage-{marker}", b"\x00\xff not avro at all"),
            (f"record-{marker}", upload_event),  # an upload on the embeddings topic
            (f"fingerprint-{marker}", unknown_fingerprint),
        ],
        kafka.object_events_topic: [
            (f"garbage-{marker}", b"{not json"),
            (f"records-{marker}", b'{"Records": [{"eventName": "s3:ObjectCreated:Put"}]}'),
        ],
    }
    writer = KafkaWriter(kafka)
    try:
        messages = [
            (topic, key.encode(), value) for topic, sent in malformed.items() for key, value in sent
        ]
        assert writer.send(messages) == [None] * len(messages)
    finally:
        writer.close()
    wanted = {(topic, key) for topic, sent in malformed.items() for key, _ in sent}

    def letters_for(events: list[tuple[bytes, Event]]) -> dict[tuple[str, str], str]:
        return {
            (e.original_topic, (e.original_key or b"").decode()): e.reason
            for _, e in events
            if isinstance(e, DeadLetter) and (e.original_key or b"").decode().endswith(marker)
        }

    events = read_events(
        pipeline,
        kafka.dead_letter_topic,
        lambda found: set(letters_for(found)) >= wanted,
        timeout_s=120,
    )
    reasons = letters_for(events)
    assert set(reasons) >= wanted, wanted - set(reasons)
    assert all(len(reason) > 15 for reason in reasons.values()), reasons
    assert "is not the image id" in reasons[(kafka.images_topic, f"miskeyed-{marker}")]
    # the stream goes on: a good image sent after them is indexed
    path_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"good-{marker}"
    path_dir.mkdir()
    (path_dir / "good.png").write_bytes(good)
    wiring.ingest(pipeline, [IngestItem(path_dir / "good.png")])
    wait_for(
        lambda: rows(pipeline, {good_id}).get(good_id, {}).get("status") == "indexed",
        120,
        "a good image sent after the malformed events to be indexed",
    )
    assert alive(launcher) == {"processors": True, "query-api": True}
