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
    error: str | None = None
    model_id: str | None = None
    generation: str | None = None


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
