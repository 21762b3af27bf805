"""Labelled images to train on: a folder per class, or what the system already holds (the
tags of indexed images from the metadata store, their bytes from the object store). Either
way the frozen descriptors come from the base model through Triton, cached on disk by model
id and content, so a second run (other losses, other options) skips Triton."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domain.errors import CbirError
from domain.rows import ImageRow
from ports import Embedder, MetadataStore, ObjectStore

CHUNK = 32


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
) -> Labelled:
    """Indexed images labelled by their first tag; classes with a single image are left out
    (they give no positive pair)."""
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
        progress(len(rows))
        with np.load(cache) as stored:
            features, labels = stored["features"], stored["labels"]
        return Labelled("the index", fingerprint, features, labels, classes, model_id)
    vectors, kept = [], []
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        data = [objects.get(bucket, row.object_key) for row in chunk]
        present = [(i, d) for i, d in enumerate(data) if d is not None]  # deleted meanwhile
        if present:
            found, errors = embedder.embed([d for _, d in present])
            for (i, _), vector, error in zip(present, found, errors, strict=True):
                if not error:
                    vectors.append(vector)
                    kept.append(start + i)
        progress(len(chunk))
    features = np.stack(vectors).astype(np.float32)
    labels = labels[kept]
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, features=features, labels=labels)
    return Labelled("the index", fingerprint, features, labels, classes, model_id)
