"""Milvus holding the image embeddings."""

from __future__ import annotations

import json
import logging
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
from schemas.events import ImageMetadata


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


def unready_collections(settings: MilvusSettings, query_timeout_s: float = 2.0) -> dict[str, str]:
    """Collections a search cannot use yet, with why. After a restart Milvus first reloads
    what was loaded ('loading'), then replays its write-ahead log before its 'safe time'
    reaches the present; until then (tens of seconds here) a search that must see every
    write waits ('replaying its log'), which a strongly consistent count shows."""
    unready: dict[str, str] = {}
    # pymilvus logs every timed-out call as an error: here a timeout is the expected answer
    quiet = logging.getLogger("pymilvus.decorators")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        with connection(settings, 10.0) as alias:
            for name in utility.list_collections(timeout=10.0, using=alias):
                state = utility.load_state(name, using=alias, timeout=10.0).name
                if state == "Loading":
                    unready[name] = "loading"
                elif state == "Loaded":
                    try:
                        Collection(name, using=alias).query(
                            "",
                            output_fields=["count(*)"],
                            consistency_level="Strong",
                            timeout=query_timeout_s,
                        )
                    except MilvusException:
                        unready[name] = "replaying its log"
    finally:
        quiet.setLevel(level)
    return unready


class ScratchCollection:
    """A collection of int ids and vectors for measurements (evaluation, benchmarks): made,
    filled, indexed, searched, dropped. Never behind the alias queries use."""

    def __init__(self, settings: MilvusSettings, prefix: str, dim: int) -> None:
        self.alias = f"cbir-{prefix}-{uuid.uuid4().hex[:8]}"
        connections.connect(alias=self.alias, host=settings.host, port=str(settings.port))
        self.name = f"{prefix}__{uuid.uuid4().hex[:8]}"
        schema = CollectionSchema(
            [
                FieldSchema("id", DataType.INT64, is_primary=True),
                FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=dim),
            ]
        )
        self.collection = Collection(self.name, schema, using=self.alias)
        self.written = 0  # the Milvus timestamp of the last insert

    def insert(self, vectors: np.ndarray, chunk: int = 2000) -> None:
        """Ids 0..n-1 in order, sent in chunks (a whole 100K x 2048 set as one list of floats
        would take gigabytes of Python objects), then flushed into sealed segments."""
        for start in range(0, len(vectors), chunk):
            part = np.asarray(vectors[start : start + chunk], dtype=np.float32)
            result = self.collection.insert([list(range(start, start + len(part))), part.tolist()])
            self.written = max(self.written, int(result.timestamp))
        self.collection.flush()

    def drop(self) -> None:
        utility.drop_collection(self.name, using=self.alias)
        connections.disconnect(self.alias)


@dataclass(frozen=True)
class Hit:
    image_id: str
    score: float


# the scalar fields beside each vector, so that a filtered search filters inside Milvus
# (before the top k is cut, not after); tags beyond these bounds are cut when indexed
MAX_TAGS = 64
MAX_TAG_LENGTH = 128
MAX_SOURCE_LENGTH = 255
FIELDS = ("image_id", "source", "uploaded_at", "tags", "embedding")


def collection_schema(model_id: str, dim: int) -> CollectionSchema:
    return CollectionSchema(
        [
            FieldSchema("image_id", DataType.VARCHAR, is_primary=True, max_length=64),
            FieldSchema("source", DataType.VARCHAR, max_length=MAX_SOURCE_LENGTH),
            FieldSchema("uploaded_at", DataType.INT64, description="epoch milliseconds, UTC"),
            FieldSchema(
                "tags",
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=MAX_TAGS,
                max_length=MAX_TAG_LENGTH,
            ),
            FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=dim),
        ],
        description=model_id,
    )


def scalar_columns(images: Sequence[ImageMetadata]) -> list[list[Any]]:
    """source, uploaded_at (epoch ms) and tags columns of these images, within the bounds."""
    return [
        [i.source[:MAX_SOURCE_LENGTH] for i in images],
        [int(i.uploaded_at.timestamp() * 1000) for i in images],
        [[t[:MAX_TAG_LENGTH] for t in i.tags[:MAX_TAGS]] for i in images],
    ]


@dataclass(frozen=True)
class Served:
    """What the alias points at: the physical collection and the model of its vectors."""

    collection: str
    model_id: str


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


def consistency(guarantee_ts: int | None) -> dict[str, Any]:
    """Search arguments that see every write up to a Milvus timestamp ('Strong' when None:
    Milvus then waits for its next time tick, ~200 ms)."""
    if guarantee_ts is None:
        return {"consistency_level": "Strong"}
    return {"consistency_level": "Customized", "guarantee_timestamp": max(guarantee_ts, 1)}


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
        self._handles: dict[str, Collection] = {}

    def ensure(self, model_id: str, dim: int) -> Collection:
        """The model's collection, created, indexed, loaded and aliased if it is new.

        The alias is only created, never moved, here: switching it is the reindex's job, so
        an index agent of another model can never take over the alias queries use.
        """
        if model_id in self._ensured:
            return self._ensured[model_id]
        name = collection_name(self.settings.collection, model_id)
        if not utility.has_collection(name, using=self.alias):
            collection = Collection(name, collection_schema(model_id, dim), using=self.alias)
            collection.create_index("embedding", index_params(self.settings, self.processors))
        collection = Collection(name, using=self.alias)
        if collection.description != model_id:
            raise ValueError(f"collection {name} holds {collection.description!r}, not {model_id}")
        missing = set(FIELDS) - {f.name for f in collection.schema.fields}
        if missing:
            raise ValueError(
                f"collection {name} was made by an older version without the fields "
                f"{sorted(missing)}: rebuild it from the log (drop it and replay the "
                "embeddings topic)"
            )
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

    def _named(self, name: str) -> Collection:
        """A physical collection by name; its handle is kept (making one asks Milvus to
        describe the collection: a round trip per search otherwise)."""
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = Collection(name, using=self.alias)
        return handle

    def served(self) -> Collection:
        """The collection the alias points at (what queries search)."""
        return Collection(self.settings.collection, using=self.alias)

    def served_model(self) -> Served:
        collection = self.served()
        return Served(str(collection.describe()["collection_name"]), collection.description)

    def upsert(self, model_id: str, images: Sequence[ImageMetadata], vectors: np.ndarray) -> int:
        """Write vectors, with the fields filters use, into the model's collection (created
        on first use); the Milvus timestamp of the write."""
        collection = self.ensure(model_id, int(vectors.shape[1]))
        result = collection.upsert(
            [
                [i.image_id for i in images],
                *scalar_columns(images),
                vectors.astype(np.float32).tolist(),
            ]
        )
        return int(result.timestamp)

    def vectors_of(
        self,
        image_ids: Sequence[str],
        collection: str | None = None,
        guarantee_ts: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """The stored vectors of these images in the served collection (or a named one);
        an image without one is not indexed there."""
        if not image_ids:
            return {}
        target = self._named(collection) if collection else self.served()
        rows = target.query(
            f"image_id in {json.dumps(list(image_ids))}",
            output_fields=["embedding"],
            timeout=timeout_s,
            **consistency(guarantee_ts),
        )
        return {
            str(row["image_id"]): np.asarray(row["embedding"], dtype=np.float32) for row in rows
        }

    def delete_everywhere(self, image_ids: Sequence[str]) -> int:
        """Remove images from every model's collection behind the alias; the Milvus
        timestamp of the last delete."""
        expression = f"image_id in {json.dumps(list(image_ids))}"
        timestamp = 0
        for name in utility.list_collections(using=self.alias):
            if name.startswith(f"{self.settings.collection}__"):
                result = Collection(name, using=self.alias).delete(expression)
                timestamp = max(timestamp, int(result.timestamp))
        return timestamp

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        effort: int | None = None,
        expression: str | None = None,
        collection: str | None = None,
        guarantee_ts: int | None = None,
        timeout_s: float | None = None,
    ) -> list[list[Hit]]:
        """The k nearest of each vector in the served collection (or a named one), among
        the entities the boolean `expression` admits, seeing every write up to
        `guarantee_ts` (None: every write so far, which costs Milvus ~200 ms)."""
        target = self._named(collection) if collection else self.served()
        results = target.search(
            vectors.astype(np.float32).tolist(),
            "embedding",
            search_params(self.settings, self.processors, effort),
            limit=k,
            expr=expression or None,
            timeout=timeout_s,
            **consistency(guarantee_ts),
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
