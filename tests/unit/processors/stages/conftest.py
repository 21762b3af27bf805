"""A small world of fakes for the stages: settings, stores, a registry and two models."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pytest

from cbir.domain.images import image_id_of, object_key_of
from cbir.domain.log import DeadLettered, Forward, LogMessage, Outcome
from cbir.domain.retry import RetryPolicy
from cbir.settings import Settings
from schemas.events import (
    DeadLetter,
    EmbeddingComputed,
    EventSerializer,
    ImageDeleted,
    ImageMetadata,
    ImageUploaded,
)
from tests.fakes import (
    FakeEmbedder,
    FakeEmbedders,
    FakeMetadataStore,
    FakeObjectStore,
    FakeRegistry,
    FakeVectorIndex,
)

MOBILENET = "mobilenet:1:8d:gap:aaaaaaaaaaaa"
RESNET = "resnet50:1:8d:gap:bbbbbbbbbbbb"
SERIALIZER = EventSerializer()


@dataclass
class World:
    settings: Settings = field(default_factory=Settings)
    objects: FakeObjectStore = field(default_factory=FakeObjectStore)
    metadata: FakeMetadataStore = field(default_factory=FakeMetadataStore)
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    index: FakeVectorIndex = field(default_factory=FakeVectorIndex)
    embedders: FakeEmbedders = field(
        default_factory=lambda: FakeEmbedders(
            FakeEmbedder("mobilenet", MOBILENET), FakeEmbedder("resnet50", RESNET)
        )
    )
    sleeps: list[float] = field(default_factory=list)

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(unexpected_attempts=3, sleep=self.sleeps.append)

    def image(self, data: bytes, key: str | None = None, name: str = "a.jpg") -> ImageMetadata:
        """An image whose bytes are in the store (under the producer's key unless given)."""
        image_id = image_id_of(data)
        image = ImageMetadata(
            image_id=image_id,
            bucket=self.settings.minio.bucket,
            object_key=key or object_key_of(image_id),
            file_name=name,
            source="test",
            content_type="image/jpeg",
            size_bytes=len(data),
            width=1,
            height=1,
            uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        self.objects.objects[(image.bucket, image.object_key)] = data
        self.metadata.insert_pending([image])
        return image


@pytest.fixture
def world() -> World:
    return World()


def message(topic: str, key: str, value: bytes | None, offset: int = 0) -> LogMessage:
    return LogMessage(topic, 0, offset, key.encode(), value)


def uploaded(topic: str, image: ImageMetadata, offset: int = 0) -> LogMessage:
    return message(topic, image.image_id, SERIALIZER.dumps(ImageUploaded(image)), offset)


def deleted(topic: str, image_id: str, offset: int = 0) -> LogMessage:
    event = ImageDeleted(image_id=image_id, source="test")
    return message(topic, image_id, SERIALIZER.dumps(event), offset)


def embedded(topic: str, image: ImageMetadata, model_id: str, offset: int = 0) -> LogMessage:
    event = EmbeddingComputed.of(image, model_id, np.eye(8, dtype=np.float32)[0])
    return message(topic, image.image_id, SERIALIZER.dumps(event), offset)


def forwarded(outcomes: list[Outcome]) -> list[Forward]:
    return [o for o in outcomes if isinstance(o, Forward)]


def letters(outcomes: list[Outcome]) -> list[DeadLetter]:
    found = []
    for outcome in outcomes:
        if isinstance(outcome, DeadLettered):
            letter = SERIALIZER.loads(outcome.value)
            assert isinstance(letter, DeadLetter)
            found.append(letter)
    return found
