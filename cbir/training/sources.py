"""Labelled images to train on: a folder per class, or what the system already holds (the
tags of indexed images from the metadata store). The frozen descriptors are the base model's:
for the index, the vectors already stored in the served collection when it holds that
model's (no image is fetched or embedded again), otherwise the bytes from the object store
through Triton; either way cached on disk by model id and content, so a second run (other
losses, other options) reads neither."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbir.domain.errors import CbirError
from cbir.domain.rows import ImageRow
from cbir.ports import Embedder, MetadataStore, ObjectStore, VectorIndex

CHUNK = 32  # images per Triton request
STORED_CHUNK = 500  # stored vectors per Milvus read


class NothingToTrainOn(CbirError):
    """The source holds too little labelled data; the message says what to add."""


@dataclass
class Labelled:
    name: str
    fingerprint: str
    features: np.ndarray  # the base model's descriptors, one row per image
    labels: np.ndarray
    classes: list[str]
    model_id: str
    origin: str = ""  # where the descriptors came from, when it is worth saying
    image_ids: tuple[str, ...] = ()  # each row's content id (what the model is trained on)


def tagged_rows(metadata: MetadataStore, page: int = 1000) -> list[ImageRow]:
    """Indexed images that carry a tag, each once (pages newest first; an image added while
    paging may push another one page on: ids are de-duplicated)."""
    found: dict[str, ImageRow] = {}
    offset = 0
    while True:
        rows = metadata.recent(page, offset, "indexed")
        for row in rows:
            if row.tags:
                found.setdefault(row.image_id, row)
        if len(rows) < page:
            return sorted(found.values(), key=lambda r: r.image_id)
        offset += page


def from_index(
    metadata: MetadataStore,
    objects: ObjectStore,
    bucket: str,
    embedder: Embedder,
    cache_dir: Path,
    progress: Callable[[int], None] = lambda _: None,
    index: VectorIndex | None = None,
) -> Labelled:
    """Indexed images labelled by their first tag; classes with a single image are left out
    (they give no positive pair). With `index` serving the embedder's model, each image's
    stored vector is its descriptor; only an image the served collection lacks is fetched
    and embedded."""
    rows = tagged_rows(metadata)
    sizes = Counter(row.tags[0] for row in rows)
    rows = [row for row in rows if sizes[row.tags[0]] >= 2]
    classes = sorted({row.tags[0] for row in rows})
    if len(classes) < 2:
        raise NothingToTrainOn(
            f"the index holds {len(rows)} usable tagged images in {len(classes)} class(es): "
            "training needs two tags with two images each at least (cbir ingest tags each image "
            "with its folder, or --tag), or train on a folder with one subfolder per class"
        )
    digest = hashlib.sha256()
    for row in rows:
        digest.update(f"{row.image_id}:{row.tags[0]}\n".encode())
    fingerprint = digest.hexdigest()[:16]
    model_id = embedder.identity().model_id
    cache = cache_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model_id)}-index-{fingerprint}.npz"
    labels = np.array([classes.index(row.tags[0]) for row in rows])
    if cache.exists():
        with np.load(cache) as stored:
            cached = (
                (stored["features"], stored["labels"], stored["ids"]) if "ids" in stored else None
            )
        if cached is not None:  # a cache without ids is from an older version: made again
            progress(len(rows))
            origin = f"descriptors: from the cache ({cache})"
            features, labels, ids = cached
            return Labelled(
                "the index", fingerprint, features, labels, classes, model_id, origin,
                tuple(str(i) for i in ids),
            )  # fmt: skip
    served = index.served_model() if index is not None else None
    collection = served.collection if served and served.model_id == model_id else None
    # every indexed row's vector was written by this Milvus timestamp (what the API searches
    # to): reads guaranteed to it skip a strongly consistent read's wait for a time tick
    _, written_ts = metadata.index_generation()
    descriptors: dict[int, np.ndarray] = {}
    reused = 0
    chunk_size = STORED_CHUNK if collection else CHUNK
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]
        stored = (
            index.vectors_of([row.image_id for row in chunk], collection, written_ts)
            if index is not None and collection
            else {}
        )
        for i, row in enumerate(chunk):
            if row.image_id in stored:
                descriptors[start + i] = stored[row.image_id]
        reused += len(stored)
        missing = [i for i, row in enumerate(chunk) if row.image_id not in stored]
        for first in range(0, len(missing), CHUNK):
            descriptors.update(
                embedded(objects, bucket, embedder, chunk, missing[first : first + CHUNK], start)
            )
        progress(len(chunk))
    kept = sorted(descriptors)
    features = np.stack([descriptors[i] for i in kept]).astype(np.float32)
    labels = labels[kept]
    ids = tuple(rows[i].image_id for i in kept)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, features=features, labels=labels, ids=np.array(ids))
    origin = (
        f"descriptors: {reused} read from {collection}, {len(kept) - reused} embedded"
        if collection
        else f"descriptors: {len(kept)} embedded (no served collection holds this model's)"
    )
    return Labelled("the index", fingerprint, features, labels, classes, model_id, origin, ids)


def embedded(
    objects: ObjectStore,
    bucket: str,
    embedder: Embedder,
    chunk: list[ImageRow],
    positions: list[int],
    offset: int,
) -> dict[int, np.ndarray]:
    """The descriptors of the rows at `positions` in `chunk`, fetched and embedded, by their
    position in the whole list (`offset` + position); an image deleted meanwhile, or one the
    model refuses, has none."""
    data = [(i, objects.get(bucket, chunk[i].object_key)) for i in positions]
    present = [(i, d) for i, d in data if d is not None]
    if not present:
        return {}
    found, errors = embedder.embed([d for _, d in present])
    return {
        offset + i: vector
        for (i, _), vector, error in zip(present, found, errors, strict=True)
        if not error
    }
