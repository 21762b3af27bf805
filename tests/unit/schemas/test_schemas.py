"""The event codec: round trips, malformed input, and the compatibility rules."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from schemas.codec import (
    SCHEMA_DIR,
    EventCodec,
    IncompatibleSchema,
    MalformedEvent,
    SchemaRegistry,
    check_backward_compatible,
)
from schemas.events import (
    DeadLetter,
    DuplicateLink,
    DuplicatesFound,
    EmbeddingComputed,
    EventSerializer,
    ImageDeleted,
    ImageMetadata,
    ImageUploaded,
    now,
)

METADATA = ImageMetadata(
    image_id="a" * 64,
    bucket="images",
    object_key="aa/" + "a" * 64,
    file_name="rose.jpg",
    source="cli",
    content_type="image/jpeg",
    size_bytes=1234,
    width=500,
    height=375,
    uploaded_at=now(),
    tags=("flowers", "rose"),
)


@pytest.mark.parametrize(
    "event",
    [
        ImageUploaded(METADATA),
        ImageUploaded(
            dataclasses.replace(
                METADATA,
                content_type="image/heic",
                taken_at=datetime(2024, 7, 14, 18, 32, 5, 420_000),  # the camera's clock
                camera_make="Apple",
                camera_model="iPhone 15 Pro",
            )
        ),
        ImageDeleted("a" * 64, "api", reason="user asked"),
        EmbeddingComputed.of(METADATA, "mobilenet:1:1024d:gap:abc", np.arange(4, dtype=np.float32)),
        DeadLetter(
            "embed",
            "corrupt JPEG",
            "ImageRejected",
            "cbir.images",
            3,
            42,
            image_id="a" * 64,
            original_key=b"k",
            original_value=b"v",
        ),
        DuplicatesFound(
            "a" * 64,
            "mobilenet:1:1024d:gap:abc",
            (
                DuplicateLink("b" * 64, "both", 0.5, 3, 40),
                DuplicateLink("c" * 64, "geometry", 0.25),
            ),
        ),
        DuplicatesFound("a" * 64, "mobilenet:1:1024d:gap:abc"),
    ],
)
def test_every_event_round_trips(event: object) -> None:
    serializer = EventSerializer()
    data = serializer.dumps(event)  # type: ignore[arg-type]
    assert data[:2] == b"\xc3\x01"
    writer = serializer.codec.registry.latest(type(event).__name__)
    assert data[2:10] == writer.fingerprint
    assert serializer.loads(data) == event


def test_an_embedding_keeps_its_exact_values() -> None:
    vector = np.random.default_rng(1).normal(size=1024).astype(np.float32)
    event = EventSerializer().loads(
        EventSerializer().dumps(EmbeddingComputed.of(METADATA, "m", vector))
    )
    assert isinstance(event, EmbeddingComputed)
    np.testing.assert_array_equal(event.vector, vector)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "tombstone"),
        (None, "tombstone"),
        (b'{"json": true}', "not Avro single-object encoding"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown writer schema"),
    ],
)
def test_malformed_bytes_say_why(data: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        EventCodec().decode(data)


def test_a_truncated_body_is_malformed() -> None:
    data = EventSerializer().dumps(ImageUploaded(METADATA))
    with pytest.raises(MalformedEvent, match="does not decode"):
        EventCodec().decode(data[:20])


def test_every_shipped_version_follows_the_rules() -> None:
    registry = SchemaRegistry()
    for name in registry.names():
        versions = registry.versions(name)
        for old, new in itertools.pairwise(versions):
            check_backward_compatible(old.raw, new.raw)


def _with_newer(tmp_path: Path, stem: str, change: dict[str, object]) -> Path:
    folder = tmp_path / "avro"
    shutil.copytree(SCHEMA_DIR, folder)
    newer = json.loads((SCHEMA_DIR / f"{stem}.v1.avsc").read_text())
    newer["fields"] = [*newer["fields"], change] if "name" in change else newer["fields"]
    (folder / f"{stem}.v2.avsc").write_text(json.dumps(newer))
    return folder


def test_a_newer_reader_reads_events_written_with_the_older_schema(tmp_path: Path) -> None:
    old_bytes = EventSerializer().dumps(ImageDeleted("b" * 64, "s3", reason="gone"))
    folder = _with_newer(
        tmp_path, "image_deleted", {"name": "actor", "type": "string", "default": "unknown"}
    )
    newer = SchemaRegistry(folder)
    check_backward_compatible(
        newer.versions("ImageDeleted")[0].raw, newer.versions("ImageDeleted")[1].raw
    )
    name, record = EventCodec(newer).decode(old_bytes)
    assert name == "cbir.ImageDeleted"
    assert record["reason"] == "gone"
    assert record["actor"] == "unknown"


@pytest.mark.parametrize(
    ("old_field", "new_field", "message"),
    [
        (None, {"name": "n", "type": "int"}, "is new and has no default"),
        ({"name": "n", "type": "int"}, None, "was removed but had no default"),
        ({"name": "n", "type": "long"}, {"name": "n", "type": "int"}, "long cannot become int"),
        ({"name": "n", "type": ["null", "string"]}, {"name": "n", "type": "string"}, "union lost"),
    ],
)
def test_breaking_changes_are_refused(
    old_field: dict[str, object] | None, new_field: dict[str, object] | None, message: str
) -> None:
    base = [{"name": "id", "type": "string"}]
    old = {"type": "record", "name": "R", "fields": base + ([old_field] if old_field else [])}
    new = {"type": "record", "name": "R", "fields": base + ([new_field] if new_field else [])}
    with pytest.raises(IncompatibleSchema, match=message):
        check_backward_compatible(old, new)


def test_promotions_and_defaults_are_allowed() -> None:
    old = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}]}
    new = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "n", "type": "long"},
            {"name": "extra", "type": "string", "default": ""},
        ],
    }
    check_backward_compatible(old, new)
