"""Typed rows: an image's metadata as stored, and a vector search hit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class ImageStatus(StrEnum):
    PENDING = "pending"
    INDEXED = "indexed"
    FAILED = "failed"
    DELETED = "deleted"


@dataclass(frozen=True)
class ImageRow:
    """One image's row in the metadata store."""

    image_id: str
    object_key: str
    file_name: str
    source: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    tags: tuple[str, ...]
    status: ImageStatus
    uploaded_at: datetime | None
    taken_at: datetime | None = None  # EXIF capture time: the camera's clock, no zone
    camera_make: str | None = None
    camera_model: str | None = None
    error: str | None = None
    model_id: str | None = None
    generation: str | None = None


@dataclass(frozen=True)
class TakenWindow:
    """Photographs taken (EXIF capture time, the camera's clock) in [after, before); an image
    without a capture time is outside every window but the unbounded one."""

    after: datetime | None = None
    before: datetime | None = None

    @property
    def bounded(self) -> bool:
        return self.after is not None or self.before is not None


ANY_TIME = TakenWindow()  # no bound: every image, with or without a capture time


@dataclass(frozen=True)
class Hit:
    """One neighbour of a query vector: the image and its similarity (metric-dependent)."""

    image_id: str
    score: float


@dataclass(frozen=True)
class Served:
    """What the alias points at: the physical collection, the model of its vectors, and its
    index type (search parameters depend on it)."""

    collection: str
    model_id: str
    index_type: str = "HNSW"
