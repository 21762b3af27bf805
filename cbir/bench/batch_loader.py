"""The plain batch loader a user might write instead of the pipeline, as the yardstick of
`cbir bench ingest`: what the Milvus reverse-image-search demo does.

Files are read from disk, embedded through the same Triton model (four requests of eight
images in flight, as Triton alone is measured), and written straight into a Milvus
collection and the MySQL `images` table, 64 images a write. No Kafka, no MinIO, no local
features: nothing is durable until it is in the index, a crash loses what was in flight, and
there is no replay, dead-letter topic or per-image order. Images the model cannot read are
skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cbir.adapters import metadata_store
from cbir.adapters.embedder import TritonEmbedder
from cbir.adapters.vector_index import MilvusVectorIndex
from cbir.domain.images import image_id_of, object_key_of, sniff
from cbir.settings import Settings
from schemas.events import ImageMetadata, described_by, now

REQUEST = 8  # images per Triton request
IN_FLIGHT = 4  # requests at once
WRITE = 64  # images per Milvus and MySQL write


@dataclass
class Loaded:
    images: int
    skipped: int


def _read(settings: Settings, paths: Sequence[Path]) -> tuple[list[ImageMetadata], list[bytes]]:
    metas, blobs = [], []
    for path in paths:
        data = path.read_bytes()
        header = sniff(data)
        image_id = image_id_of(data)
        image = ImageMetadata(
            image_id=image_id,
            bucket=settings.minio.bucket,
            object_key=object_key_of(image_id),
            file_name=path.name,
            source="batch-loader",
            size_bytes=len(data),
            **described_by(header),
            uploaded_at=now(),
        )
        metas.append(image)
        blobs.append(data)
    return metas, blobs


def _chunks(paths: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def batch_load(settings: Settings, model: str, paths: Sequence[Path], collection: str) -> Loaded:
    """Every file into `collection` (made here, HNSW) and MySQL's rows (status indexed)."""
    embedder = TritonEmbedder(settings.triton, model)
    index = MilvusVectorIndex(settings.milvus, settings.processors)
    identity = embedder.identity()
    index.create(collection, identity.model_id, identity.dim, "HNSW", index.default_params("HNSW"))
    loaded = Loaded(0, 0)

    def embed(chunk: Sequence[Path]) -> tuple[list[ImageMetadata], np.ndarray]:
        metas, blobs = _read(settings, chunk)
        vectors, errors = embedder.embed(blobs)
        keep = [i for i, error in enumerate(errors) if not error]
        loaded.skipped += len(metas) - len(keep)
        return [metas[i] for i in keep], vectors[keep]

    pending_metas: list[ImageMetadata] = []
    pending_vectors: list[np.ndarray] = []

    def write(conn: Any) -> None:
        if not pending_metas:
            return
        index.upsert(collection, pending_metas, np.concatenate(pending_vectors))
        metadata_store.upsert_indexed(conn, pending_metas, identity.model_id, collection)
        loaded.images += len(pending_metas)
        pending_metas.clear()
        pending_vectors.clear()

    try:
        with (
            metadata_store.connect(settings.mysql) as conn,
            ThreadPoolExecutor(IN_FLIGHT) as pool,
        ):
            for metas, vectors in pool.map(embed, _chunks(paths, REQUEST)):
                pending_metas.extend(metas)
                pending_vectors.append(vectors)
                if len(pending_metas) >= WRITE:
                    write(conn)
            write(conn)
    finally:
        embedder.close()
        index.close()
    return loaded
