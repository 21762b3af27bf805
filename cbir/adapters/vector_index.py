"""Milvus holding the image embeddings."""

from __future__ import annotations

import json
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
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
    from pymilvus.exceptions import IndexNotExistException, SchemaNotReadyException

from cbir.adapters.milvus_vectors import PackedVectors, install
from cbir.domain.deadline import Deadline
from cbir.domain.errors import Rejected, ServiceUnavailable
from cbir.domain.images import (
    MAX_CAMERA_LENGTH,
    MAX_SOURCE_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    clock_ms,
)
from cbir.domain.rows import Hit, Served
from cbir.settings import MilvusSettings, ProcessorsSettings
from schemas.events import ImageMetadata

install()  # float vectors go to pymilvus as packed bytes (see milvus_vectors)

T = TypeVar("T")


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
            result = self.collection.insert(
                [list(range(start, start + len(part))), PackedVectors(np.asarray(part))]
            )
            self.written = max(self.written, int(result.timestamp))
        self.collection.flush()

    def build_index(self, index_type: str, params: dict[str, Any], wait_s: float) -> str:
        """Build an index on the vectors and load them: '' when built, else why Milvus
        refused it."""
        try:
            self.collection.create_index(
                "embedding", {"index_type": index_type, "metric_type": "IP", "params": params}
            )
        except MilvusException as exc:
            return f"this Milvus refused it: {exc}"
        utility.wait_for_index_building_complete(self.name, using=self.alias, timeout=wait_s)
        self.collection.load()
        return ""

    def probe_index(self, index_type: str, rows: int, wait_s: float) -> str:
        """Whether this Milvus builds `index_type` ('' when it does, else why not), asked
        asynchronously: a server whose index node fails retries for ever, which a
        synchronous build would wait on."""
        try:
            self.collection.create_index(
                "embedding",
                {"index_type": index_type, "metric_type": "IP", "params": {}},
                _async=True,
            )
        except MilvusException as exc:
            return f"this Milvus refused {index_type}: {exc}"
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(2)
            try:
                progress = utility.index_building_progress(self.name, using=self.alias)
            except MilvusException:
                continue  # the asynchronous request is not registered yet
            if progress.get("indexed_rows", 0) >= rows:
                return ""
        return f"this Milvus did not build {index_type} on {rows} vectors within {wait_s:.0f} s"

    def memory_mib(self) -> float | None:
        """What the loaded segments take, as Milvus reports it (None: not reported)."""
        segments = utility.get_query_segment_info(self.name, using=self.alias)
        reported = sum(int(getattr(s, "mem_size", 0)) for s in segments) / 2**20
        return reported or None

    def search_ids(self, vector: np.ndarray, k: int, params: dict[str, Any]) -> list[int]:
        """The ids of the k nearest, eventually consistent (measurements after a flush)."""
        hits = self.collection.search(
            [vector.tolist()],
            "embedding",
            {"metric_type": "IP", "params": params},
            limit=k,
            consistency_level="Eventually",
        )[0]
        return [int(hit.id) for hit in hits]

    def search_batch(self, queries: np.ndarray, limit: int, params: dict[str, Any]) -> np.ndarray:
        """Ids of the `limit` best per query (-1 where fewer came), in batches of 64, read
        after every insert."""
        found = np.full((len(queries), limit), -1, dtype=np.int64)
        for start in range(0, len(queries), 64):
            results = self.collection.search(
                queries[start : start + 64].tolist(),
                "embedding",
                {"metric_type": "IP", "params": params},
                limit=limit,
                **consistency(self.written),
            )
            for row, hits in enumerate(results):
                ids = [int(hit.id) for hit in hits]
                found[start + row, : len(ids)] = ids
        return found

    def drop(self) -> None:
        utility.drop_collection(self.name, using=self.alias)
        connections.disconnect(self.alias)


# the scalar fields beside each vector, so that a filtered search filters inside Milvus
# (before the top k is cut, not after); tags beyond the domain's bounds are cut when indexed
FIELDS = (
    "image_id",
    "source",
    "uploaded_at",
    "tags",
    "taken_at",
    "camera_make",
    "camera_model",
    "width",
    "height",
    "embedding",
)


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
            FieldSchema(
                "taken_at",
                DataType.INT64,
                description="EXIF capture time, ms of the camera clock; unknown: -2^62",
            ),
            FieldSchema("camera_make", DataType.VARCHAR, max_length=MAX_CAMERA_LENGTH),
            FieldSchema("camera_model", DataType.VARCHAR, max_length=MAX_CAMERA_LENGTH),
            FieldSchema("width", DataType.INT32),
            FieldSchema("height", DataType.INT32),
            FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=dim),
        ],
        description=model_id,
    )


def scalar_columns(images: Sequence[ImageMetadata]) -> list[list[Any]]:
    """The scalar columns of these images in the schema's order (between image_id and
    the embedding), within the bounds; an unknown camera is ''."""
    return [
        [i.source[:MAX_SOURCE_LENGTH] for i in images],
        [int(i.uploaded_at.timestamp() * 1000) for i in images],
        [[t[:MAX_TAG_LENGTH] for t in i.tags[:MAX_TAGS]] for i in images],
        [clock_ms(i.taken_at) for i in images],
        [(i.camera_make or "")[:MAX_CAMERA_LENGTH] for i in images],
        [(i.camera_model or "")[:MAX_CAMERA_LENGTH] for i in images],
        [i.width for i in images],
        [i.height for i in images],
    ]


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


# a score equal to the threshold is kept: Milvus's bound is strict on the radius side
RANGE_SLACK = 1e-6


def range_params(metric_type: str, min_score: float) -> dict[str, Any]:
    """Milvus range search for "at least `min_score` similar" (a cosine, the vectors being
    unit length). IP: radius < score <= range_filter, so radius just under the threshold and
    no range_filter. L2: range_filter <= distance < radius, with squared distance
    2 - 2 cosine on unit vectors, so radius just over that (the scores are then distances)."""
    if metric_type == "L2":
        return {"radius": 2.0 - 2.0 * min_score + RANGE_SLACK}
    return {"radius": min_score - RANGE_SLACK}


def consistency(guarantee_ts: int | None) -> dict[str, Any]:
    """Search arguments that see every write up to a Milvus timestamp ('Strong' when None:
    Milvus then waits for its next time tick, ~200 ms)."""
    if guarantee_ts is None:
        return {"consistency_level": "Strong"}
    return {"consistency_level": "Customized", "guarantee_timestamp": max(guarantee_ts, 1)}


# Milvus error codes of a request it refuses as malformed, which no retry mends: 2.3's
# common.ErrorCode IllegalArgument, IllegalDimension, IllegalTOPK, IllegalRowRecord,
# IllegalVectorID, and its newer error code for an invalid parameter (1100: an invalid
# collection name among others, which its proxy refuses before anything is tried)
REFUSED_CODES = {5, 7, 10, 11, 12, 1100}


def translated(
    settings: MilvusSettings, what: str, call: Callable[[], T], timeout_s: float | None = None
) -> T:
    """A call, its failures in the project's terms: a request Milvus refuses as malformed is
    Rejected (permanent); anything else from Milvus or gRPC (down, restarting, a timeout, a
    collection still loading) is ServiceUnavailable, saying why where it is known (a timeout
    right after a restart: Milvus replays its log before it sees every write)."""
    try:
        return call()
    except (MilvusException, grpc.RpcError) as exc:
        if getattr(exc, "code", None) in REFUSED_CODES:
            raise Rejected(f"Milvus refused {what}: {getattr(exc, 'message', exc)}") from exc
        cause: BaseException | str = exc
        if "deadline" in str(exc).lower():
            cause = (
                f"no answer within {timeout_s or 0:.1f} s: after a restart it replays its log "
                "before searches see every write; retry in a few seconds"
            )
        raise ServiceUnavailable(
            "Milvus", f"{settings.host}:{settings.port}", "CBIR_MILVUS__HOST / PORT", cause
        ) from exc


# Milvus's own "channel not available" (merr code 503): after a node of it restarts or hangs
# past its session's lease, its coordinator hands the collection's channels out again, and
# for a few seconds a search or query finds no node serving one (milvus-io/milvus#31560)
CHANNEL_NOT_AVAILABLE = 503


def unreachable(exc: BaseException | None) -> bool:
    """Milvus cannot be reached, or cannot serve yet (down, restarting, the channel
    reconnecting, its channels being handed out again): worth another try. pymilvus wraps
    gRPC's UNAVAILABLE in a MilvusException when it stops retrying, and re-raises with
    `raise e from e`: the chain of causes can loop back on itself."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = getattr(exc, "code", None)
        if isinstance(exc, grpc.RpcError) and callable(code):
            return bool(code() == grpc.StatusCode.UNAVAILABLE)
        if isinstance(exc, MilvusException) and code == CHANNEL_NOT_AVAILABLE:
            return True
        exc = exc.__cause__
    return False


# pymilvus retries a call that finds Milvus unreachable: for as many seconds as an int
# timeout, but 75 times with back-off (minutes) for a float one; bounded calls retry here
NO_RETRIES = {"retry_times": 0}


def bounded(
    settings: MilvusSettings,
    what: str,
    call: Callable[[Deadline], T],
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call` and its retries while Milvus is unreachable, all within `timeout_s`: every
    pymilvus call inside gets what is left of one deadline (and `NO_RETRIES`), so the whole
    never takes longer than the bound."""
    deadline = Deadline(timeout_s)
    back_off = 0.05
    while True:
        try:
            return translated(settings, what, lambda: call(deadline), timeout_s)
        except ServiceUnavailable as exc:
            if not unreachable(exc.__cause__) or deadline.remaining() <= back_off:
                raise
        sleep(back_off)
        back_off = min(back_off * 2, 1.0)


def left(deadline: Deadline) -> dict[str, Any]:
    """The keyword arguments of a pymilvus call made within `deadline`."""
    return {"timeout": max(deadline.remaining(), 0.001), **NO_RETRIES}


def timestamp_now() -> int:
    """A Milvus hybrid timestamp of this moment: a search guaranteed to it sees every write
    acknowledged before it."""
    return int(utility.mkts_from_unixtime(time.time()))


class MilvusVectorIndex:
    """The generations' collections, and the alias queries search."""

    def __init__(
        self, settings: MilvusSettings, processors: ProcessorsSettings, timeout_s: float = 10.0
    ) -> None:
        self.settings = settings
        self.processors = processors
        self.timeout_s = timeout_s  # every call's bound, where pymilvus takes one
        self.alias = f"cbir-index-{uuid.uuid4().hex[:8]}"
        translated(
            settings,
            "a connection",
            lambda: connections.connect(
                alias=self.alias, host=settings.host, port=str(settings.port), timeout=timeout_s
            ),
        )
        self._handles: dict[str, Collection] = {}

    def _bound(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else timeout_s

    def default_params(self, index_type: str) -> dict[str, Any]:
        return default_index_params(index_type, self.processors)

    def timestamp_now(self) -> int:
        return timestamp_now()

    def create(
        self,
        name: str,
        model_id: str,
        dim: int,
        index_type: str,
        index_params: dict[str, Any],
    ) -> None:
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

    def wait_until_built(self, name: str, timeout_s: float) -> None:
        """Until Milvus has indexed every sealed segment of a collection."""
        utility.wait_for_index_building_complete(name, using=self.alias, timeout=timeout_s)

    def drop_everything(self) -> None:
        """Drop the alias and every generation's collection behind it (a benchmark's wipe)."""
        if self.aliased() is not None:
            utility.drop_alias(self.settings.collection, using=self.alias)
        for name in utility.list_collections(using=self.alias):
            if name.startswith(f"{self.settings.collection}__"):
                self.drop(name)

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
            return str(self.served().describe(timeout=self.timeout_s)["collection_name"])
        except MilvusException:
            return None

    def drop(self, name: str) -> None:
        """Drop a collection (its alias must have moved away first)."""
        self._handles.pop(name, None)
        if utility.has_collection(name, using=self.alias):
            utility.drop_collection(name, using=self.alias)

    def _named(self, name: str, deadline: Deadline | None = None) -> Collection:
        """A physical collection by name; its handle is kept (making one asks Milvus to
        describe the collection: a round trip per search otherwise)."""
        handle = self._handles.get(name)
        if handle is None:
            bound = left(deadline) if deadline else {"timeout": self.timeout_s}
            handle = self._handles[name] = Collection(name, using=self.alias, **bound)
        return handle

    def served(self, deadline: Deadline | None = None) -> Collection:
        """The collection the alias points at (what queries search)."""
        bound = left(deadline) if deadline else {"timeout": self.timeout_s}
        return Collection(self.settings.collection, using=self.alias, **bound)

    def served_model(self, timeout_s: float | None = None) -> Served | None:
        """What the alias points at; None when there is no alias yet (nothing indexed).
        Raises ServiceUnavailable when Milvus does not answer within `timeout_s` (all its
        calls together; an outage is no empty index)."""

        def describe(deadline: Deadline) -> Served | None:
            try:
                collection = self.served(deadline)
            except SchemaNotReadyException:  # no collection of that name: no alias yet
                return None
            # Collection.describe() takes no retry_times (pymilvus 2.3): its connection's
            # describe_collection, which Collection itself calls, does
            described = collection._get_connection().describe_collection(
                self.settings.collection, **left(deadline)
            )
            name = str(described["collection_name"])
            return Served(name, collection.description, self._index_type_of(name, deadline))

        return bounded(self.settings, "a description", describe, self._bound(timeout_s))

    def _index_type_of(self, name: str, deadline: Deadline | None = None) -> str:
        bound = left(deadline) if deadline else {"timeout": self.timeout_s}
        try:
            index = self._named(name, deadline).index(**bound)
        except IndexNotExistException:
            return "FLAT"
        return str(index.params.get("index_type", "FLAT"))

    def upsert(self, name: str, images: Sequence[ImageMetadata], vectors: np.ndarray) -> int:
        """Write vectors, with the fields filters use, into a generation's collection; the
        Milvus timestamp of the write."""
        result = translated(
            self.settings,
            f"{len(images)} vectors for {name}",
            lambda: self._named(name).upsert(
                [
                    [i.image_id for i in images],
                    *scalar_columns(images),
                    PackedVectors(vectors),
                ]
            ),
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

        def read(deadline: Deadline) -> list[dict[str, Any]]:
            target = self._named(collection, deadline) if collection else self.served(deadline)
            return list(
                target.query(
                    f"image_id in {json.dumps(list(image_ids))}",
                    output_fields=["embedding"],
                    **left(deadline),
                    **consistency(guarantee_ts),
                )
            )

        rows = bounded(self.settings, "a read of vectors", read, self._bound(timeout_s))
        return {
            str(row["image_id"]): np.asarray(row["embedding"], dtype=np.float32) for row in rows
        }

    def delete(self, name: str, image_ids: Sequence[str]) -> int:
        """Remove images from one generation's collection; the Milvus timestamp."""
        expression = f"image_id in {json.dumps(list(image_ids))}"
        result = translated(
            self.settings, f"a delete in {name}", lambda: self._named(name).delete(expression)
        )
        return int(result.timestamp)

    def delete_everywhere(self, image_ids: Sequence[str]) -> int:
        """Remove images from every generation's collection (building, live and retired);
        the Milvus timestamp of the last delete."""
        names = translated(
            self.settings, "a listing", lambda: utility.list_collections(using=self.alias)
        )
        timestamp = 0
        for name in names:
            if name.startswith(f"{self.settings.collection}__"):
                timestamp = max(timestamp, self.delete(name, image_ids))
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
        min_score: float | None = None,
    ) -> list[list[Hit]]:
        """The k nearest of each vector in the served collection (or a named one), among
        the entities the boolean `expression` admits, seeing every write up to
        `guarantee_ts` (None: every write so far, which costs Milvus ~200 ms); all its Milvus
        calls within `timeout_s`. `min_score`: a range search (`range_params`)."""
        whole = Deadline(self._bound(timeout_s))
        if collection is None:
            served = self.served_model(whole.remaining())
            if served is None:
                return [[] for _ in vectors]
            collection, index_type = served.collection, index_type or served.index_type
        named = collection

        def search(deadline: Deadline) -> Any:
            kind = index_type or self._index_type_of(named, deadline)
            params = search_params(kind, self.settings.metric_type, self.processors, effort)
            if min_score is not None:
                params["params"] |= range_params(self.settings.metric_type, min_score)
            return self._named(named, deadline).search(
                vectors.astype(np.float32).tolist(),
                "embedding",
                params,
                limit=k,
                expr=expression or None,
                **left(deadline),
                **consistency(guarantee_ts),
            )

        results = bounded(self.settings, "a search", search, whole.remaining())
        return [[Hit(str(hit.id), float(hit.distance)) for hit in hits] for hits in results]

    def count(
        self,
        name: str | None = None,
        image_ids: Sequence[str] | None = None,
        timeout_s: float = 60.0,
    ) -> int:
        """Entities in a collection (the served one by default), strongly consistent: all
        of them, or those of these images (more than one per image: duplicates). Right after
        a restart a strongly consistent read waits for Milvus's log replay: the bound is
        generous."""
        if image_ids is not None and not image_ids:
            return 0
        expression = f"image_id in {json.dumps(list(image_ids))}" if image_ids else ""

        def read(deadline: Deadline) -> int:
            target = self._named(name, deadline) if name else self.served(deadline)
            rows = target.query(
                expression or 'image_id != ""',
                output_fields=["count(*)"],
                consistency_level="Strong",
                **left(deadline),
            )
            return int(rows[0]["count(*)"])

        return bounded(self.settings, "a count", read, timeout_s)

    def close(self) -> None:
        connections.disconnect(self.alias)
