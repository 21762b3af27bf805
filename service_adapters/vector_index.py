"""Milvus holding the image embeddings."""

from __future__ import annotations

import json
import re
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

with warnings.catch_warnings():
    # pymilvus 2.3 imports pkg_resources, which warns on every start
    warnings.simplefilter("ignore")
    from pymilvus import (
        Collection,
        CollectionSchema,
        DataType,
        FieldSchema,
        MilvusException,
        connections,
        utility,
    )

from cbir.settings import MilvusSettings, ProcessorsSettings


@contextmanager
def connection(settings: MilvusSettings, timeout_s: float = 10.0) -> Iterator[str]:
    """A pymilvus connection alias, closed on exit."""
    alias = f"cbir-{uuid.uuid4().hex[:8]}"
    connections.connect(alias=alias, host=settings.host, port=str(settings.port), timeout=timeout_s)
    try:
        yield alias
    finally:
        connections.disconnect(alias)


def list_collections(settings: MilvusSettings, timeout_s: float = 10.0) -> list[str]:
    with connection(settings, timeout_s) as alias:
        return list(utility.list_collections(timeout=timeout_s, using=alias))


def collections_still_loading(settings: MilvusSettings, timeout_s: float = 10.0) -> list[str]:
    """Collections being loaded: after a restart Milvus reloads what was loaded, and a load or
    search before it has finished fails or waits."""
    with connection(settings, timeout_s) as alias:
        names = utility.list_collections(timeout=timeout_s, using=alias)
        return [
            name
            for name in names
            if utility.load_state(name, using=alias, timeout=timeout_s).name == "Loading"
        ]


@dataclass(frozen=True)
class Hit:
    image_id: str
    score: float


def collection_name(alias: str, model_id: str) -> str:
    """The physical collection of one model behind the alias (names allow [A-Za-z0-9_])."""
    name, version, _dim, _pooling, fingerprint = model_id.split(":")
    slug = re.sub(r"[^A-Za-z0-9_]", "_", f"{name}_v{version}")
    return f"{alias}__{slug}_{fingerprint[:8]}"


def index_params(settings: MilvusSettings, processors: ProcessorsSettings) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if settings.index_type == "HNSW":
        params = {"M": processors.hnsw_m, "efConstruction": processors.hnsw_ef_construction}
    return {
        "index_type": settings.index_type,
        "metric_type": settings.metric_type,
        "params": params,
    }


def search_params(
    settings: MilvusSettings, processors: ProcessorsSettings, effort: int | None = None
) -> dict[str, Any]:
    if settings.index_type == "DISKANN":
        params = {"search_list": effort or processors.diskann_search_list}
    elif settings.index_type == "HNSW":
        params = {"ef": effort or processors.hnsw_ef}
    else:
        params = {}
    return {"metric_type": settings.metric_type, "params": params}


class VectorIndex:
    """The collection of one model, reached through the alias queries use."""

    def __init__(self, settings: MilvusSettings, processors: ProcessorsSettings) -> None:
        self.settings = settings
        self.processors = processors
        self.alias = f"cbir-index-{uuid.uuid4().hex[:8]}"
        connections.connect(
            alias=self.alias, host=settings.host, port=str(settings.port), timeout=10
        )
        self._ensured: dict[str, Collection] = {}

    def ensure(self, model_id: str, dim: int) -> Collection:
        """The model's collection, created, indexed, loaded and aliased if it is new.

        The alias is only created, never moved, here: switching it is the reindex's job, so
        an index agent of another model can never take over the alias queries use.
        """
        if model_id in self._ensured:
            return self._ensured[model_id]
        name = collection_name(self.settings.collection, model_id)
        if not utility.has_collection(name, using=self.alias):
            schema = CollectionSchema(
                [
                    FieldSchema("image_id", DataType.VARCHAR, is_primary=True, max_length=64),
                    FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=dim),
                ],
                description=model_id,
            )
            collection = Collection(name, schema, using=self.alias)
            collection.create_index("embedding", index_params(self.settings, self.processors))
        collection = Collection(name, using=self.alias)
        if collection.description != model_id:
            raise ValueError(f"collection {name} holds {collection.description!r}, not {model_id}")
        collection.load()
        aliases = utility.list_aliases(name, using=self.alias)
        if self.settings.collection not in aliases:
            try:
                utility.create_alias(name, self.settings.collection, using=self.alias)
            except MilvusException as exc:
                if "already exist" not in str(exc).lower():
                    raise
        self._ensured[model_id] = collection
        return collection

    def served(self) -> Collection:
        """The collection the alias points at (what queries search)."""
        return Collection(self.settings.collection, using=self.alias)

    def upsert(self, model_id: str, image_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Write vectors into the model's collection (created on first use)."""
        collection = self.ensure(model_id, int(vectors.shape[1]))
        collection.upsert([list(image_ids), vectors.astype(np.float32).tolist()])

    def delete_everywhere(self, image_ids: Sequence[str]) -> None:
        """Remove images from every model's collection behind the alias."""
        expression = f"image_id in {json.dumps(list(image_ids))}"
        for name in utility.list_collections(using=self.alias):
            if name.startswith(f"{self.settings.collection}__"):
                Collection(name, using=self.alias).delete(expression)

    def search(self, vectors: np.ndarray, k: int, effort: int | None = None) -> list[list[Hit]]:
        results = self.served().search(
            vectors.astype(np.float32).tolist(),
            "embedding",
            search_params(self.settings, self.processors, effort),
            limit=k,
            consistency_level="Strong",
        )
        return [[Hit(str(hit.id), float(hit.distance)) for hit in hits] for hits in results]

    def count(self, collection: Collection | None = None) -> int:
        target = collection or self.served()
        rows = target.query(
            'image_id != ""', output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"])

    def close(self) -> None:
        connections.disconnect(self.alias)
