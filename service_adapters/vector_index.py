"""Milvus holding the image embeddings."""

from __future__ import annotations

import json
import logging
import re
import time
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
    """What the alias points at: the physical collection, the model of its vectors, and its
    index type (search parameters depend on it)."""

    collection: str
    model_id: str
    index_type: str = "HNSW"


def model_slug(model_id: str) -> str:
    """`name_vVERSION_FINGERPRINT8` of a model id (Milvus and Kafka names allow it)."""
    name, version, _dim, _pooling, fingerprint = model_id.split(":")
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{name}_v{version}_{fingerprint[:8]}")


def generation_name(alias: str, number: int, model_id: str) -> str:
    """The physical collection of generation `number` behind the alias, e.g.
    `images__g3_mobilenet_v1_1a2b3c4d`: the alias, the generation, the model."""
    return f"{alias}__g{number}_{model_slug(model_id)}"


def default_index_params(index_type: str, processors: ProcessorsSettings) -> dict[str, Any]:
    """The build parameters of an index type when none are given."""
    if index_type == "HNSW":
        return {"M": processors.hnsw_m, "efConstruction": processors.hnsw_ef_construction}
    if index_type.startswith("IVF_"):
        return {"nlist": 1024}
    return {}


def search_params(
    index_type: str, metric_type: str, processors: ProcessorsSettings, effort: int | None = None
) -> dict[str, Any]:
    """`effort` is the speed/recall knob of the index type: search_list (DISKANN), ef (HNSW),
    nprobe (IVF)."""
    params: dict[str, Any] = {}
    if index_type == "DISKANN":
        params = {"search_list": effort or processors.diskann_search_list}
    elif index_type == "HNSW":
        params = {"ef": effort or processors.hnsw_ef}
    elif index_type.startswith("IVF_"):
        params = {"nprobe": effort or 16}
    return {"metric_type": metric_type, "params": params}


def consistency(guarantee_ts: int | None) -> dict[str, Any]:
    """Search arguments that see every write up to a Milvus timestamp ('Strong' when None:
    Milvus then waits for its next time tick, ~200 ms)."""
    if guarantee_ts is None:
        return {"consistency_level": "Strong"}
    return {"consistency_level": "Customized", "guarantee_timestamp": max(guarantee_ts, 1)}


def timestamp_now() -> int:
    """A Milvus hybrid timestamp of this moment: a search guaranteed to it sees every write
    acknowledged before it."""
    return int(utility.mkts_from_unixtime(time.time()))


class VectorIndex:
    """The generations' collections, and the alias queries search."""

    def __init__(self, settings: MilvusSettings, processors: ProcessorsSettings) -> None:
        self.settings = settings
        self.processors = processors
        self.alias = f"cbir-index-{uuid.uuid4().hex[:8]}"
        connections.connect(
            alias=self.alias, host=settings.host, port=str(settings.port), timeout=10
        )
        self._handles: dict[str, Collection] = {}

    def create(
        self,
        name: str,
        model_id: str,
        dim: int,
        index_type: str,
        index_params: dict[str, Any],
    ) -> Collection:
        """A generation's collection, created, indexed and loaded (each step skipped when it
        is done already, so a rerun after a crash finishes the job)."""
        if not utility.has_collection(name, using=self.alias):
            try:
                Collection(name, collection_schema(model_id, dim), using=self.alias)
            except MilvusException:
                if not utility.has_collection(name, using=self.alias):
                    raise  # not a concurrent creation by another writer
        collection = Collection(name, using=self.alias)
        if collection.description != model_id:
            raise ValueError(f"collection {name} holds {collection.description!r}, not {model_id}")
        missing = set(FIELDS) - {f.name for f in collection.schema.fields}
        if missing:
            raise ValueError(
                f"collection {name} was made by an older version without the fields "
                f"{sorted(missing)}: rebuild it from the log (`cbir reindex`)"
            )
        if not collection.has_index():
            try:
                collection.create_index(
                    "embedding",
                    {
                        "index_type": index_type,
                        "metric_type": self.settings.metric_type,
                        "params": index_params,
                    },
                )
            except MilvusException:
                if not collection.has_index():
                    raise
        collection.load()
        self._handles[name] = collection
        return collection

    def exists(self, name: str) -> bool:
        return bool(utility.has_collection(name, using=self.alias))

    def switch_alias(self, name: str) -> None:
        """Point the alias queries search at `name`, atomically (created on first use)."""
        if self.aliased() is None:
            utility.create_alias(name, self.settings.collection, using=self.alias)
        else:
            utility.alter_alias(name, self.settings.collection, using=self.alias)

    def aliased(self) -> str | None:
        """The collection the alias points at, or None when there is no alias yet."""
        try:
            return str(self.served().describe()["collection_name"])
        except MilvusException:
            return None

    def drop(self, name: str) -> None:
        """Drop a collection (its alias must have moved away first)."""
        self._handles.pop(name, None)
        if utility.has_collection(name, using=self.alias):
            utility.drop_collection(name, using=self.alias)

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
        name = str(collection.describe()["collection_name"])
        return Served(name, collection.description, self._index_type_of(name))

    def _index_type_of(self, name: str) -> str:
        indexes = self._named(name).indexes
        return str(indexes[0].params.get("index_type", "FLAT")) if indexes else "FLAT"

    def upsert(self, name: str, images: Sequence[ImageMetadata], vectors: np.ndarray) -> int:
        """Write vectors, with the fields filters use, into a generation's collection; the
        Milvus timestamp of the write."""
        result = self._named(name).upsert(
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

    def delete(self, name: str, image_ids: Sequence[str]) -> int:
        """Remove images from one generation's collection; the Milvus timestamp."""
        result = self._named(name).delete(f"image_id in {json.dumps(list(image_ids))}")
        return int(result.timestamp)

    def delete_everywhere(self, image_ids: Sequence[str]) -> int:
        """Remove images from every generation's collection (building, live and retired);
        the Milvus timestamp of the last delete."""
        expression = f"image_id in {json.dumps(list(image_ids))}"
        timestamp = 0
        for name in utility.list_collections(using=self.alias):
            if name.startswith(f"{self.settings.collection}__"):
                result = self._named(name).delete(expression)
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
        index_type: str | None = None,
    ) -> list[list[Hit]]:
        """The k nearest of each vector in the served collection (or a named one), among
        the entities the boolean `expression` admits, seeing every write up to
        `guarantee_ts` (None: every write so far, which costs Milvus ~200 ms)."""
        if collection is None:
            served = self.served_model()
            collection, index_type = served.collection, index_type or served.index_type
        elif index_type is None:
            index_type = self._index_type_of(collection)
        results = self._named(collection).search(
            vectors.astype(np.float32).tolist(),
            "embedding",
            search_params(index_type, self.settings.metric_type, self.processors, effort),
            limit=k,
            expr=expression or None,
            timeout=timeout_s,
            **consistency(guarantee_ts),
        )
        return [[Hit(str(hit.id), float(hit.distance)) for hit in hits] for hits in results]

    def count(self, name: str | None = None) -> int:
        """Entities in a collection (the served one by default), strongly consistent."""
        target = self._named(name) if name else self.served()
        rows = target.query(
            'image_id != ""', output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"])

    def close(self) -> None:
        connections.disconnect(self.alias)
