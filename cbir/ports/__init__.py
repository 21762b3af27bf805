"""The ports: one small protocol per service role. The stages, the query engine, the replay
and the producer are written against these; `cbir/adapters/` holds one adapter per
service that implements them, and `tests/fakes.py` in-memory fakes for unit tests.

Every adapter raises `domain.errors.ServiceUnavailable` (transient) when its service does not
answer and `domain.errors.Rejected` (permanent) when it refuses a value for good; what else
it raises is unexpected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from cbir.domain.generations import Generation, GenerationState
from cbir.domain.log import LogMessage
from cbir.domain.models import ModelIdentity
from cbir.domain.rows import ANY_TIME, Hit, ImageRow, Served, TakenWindow
from cbir.domain.vectors import Vectors
from schemas.events import ImageMetadata


class ObjectStore(Protocol):
    """The image bytes (MinIO or any S3 server)."""

    def get(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes, or None when it is gone."""
        ...

    def exists(self, bucket: str, key: str) -> bool:
        """Whether the object is there (its metadata asked, no byte read)."""
        ...

    def put(
        self, bucket: str, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> None: ...

    def remove(self, bucket: str, key: str) -> None:
        """Remove an object; removing one that is gone is not an error."""
        ...


class MetadataStore(Protocol):
    """Image rows and the index generation counter (MySQL)."""

    def existing_image_ids(self, image_ids: Sequence[str]) -> set[str]: ...
    def insert_pending(self, images: Sequence[ImageMetadata]) -> None: ...
    def upsert_indexed(
        self, images: Sequence[ImageMetadata], model_id: str, generation: str
    ) -> None: ...
    def mark_failed(self, reasons: Mapping[str, str]) -> None: ...
    def delete_images(self, image_ids: Sequence[str]) -> None: ...
    def lookup(self, image_ids: Sequence[str]) -> dict[str, ImageRow]: ...
    def bump_generation(self, milvus_ts: int) -> None: ...
    def index_generation(self) -> tuple[int, int]: ...
    def recent(
        self, limit: int, offset: int, status: str | None, taken: TakenWindow = ANY_TIME
    ) -> list[ImageRow]:
        """Newest uploads first; with a bounded `taken` window, those photographs, latest
        taken first."""
        ...

    def indexed_after(self, image_id: str, limit: int) -> list[ImageRow]:
        """Indexed rows in image id order, from just after `image_id` (keyset pages). Ids
        are content hashes, so any run of them is a uniform sample of the collection."""
        ...

    def status_counts(self) -> dict[str, int]: ...
    def image_ids_for_object(self, object_key: str) -> list[str]: ...


class GenerationRegistry(Protocol):
    """The index generations (MySQL, beside the metadata)."""

    def active(self) -> list[Generation]: ...
    def live(self) -> Generation | None: ...
    def all(self) -> list[Generation]: ...
    def expired(self) -> list[Generation]: ...
    def locked(self) -> AbstractContextManager[None]: ...
    def register(
        self,
        *,
        alias: str,
        model: str,
        model_id: str,
        dim: int,
        embeddings_topic: str,
        index_type: str,
        index_params: dict[str, Any],
        state: GenerationState,
        taken: Callable[[str], bool],
    ) -> Generation: ...
    def set_state(self, generation: Generation, state: GenerationState) -> None: ...
    def record_evaluation(self, generation: Generation, evaluation: dict[str, Any]) -> None:
        """Store the probe-set evaluation of the switch gate with the generation."""

    def make_live(self, new: Generation, grace_s: float, milvus_ts: int) -> list[str]: ...


class VectorIndex(Protocol):
    """The generations' collections and the alias that queries search (Milvus)."""

    def default_params(self, index_type: str) -> dict[str, Any]: ...
    def timestamp_now(self) -> int:
        """A timestamp of this moment: a search guaranteed to it sees every write before."""
        ...

    def create(
        self, name: str, model_id: str, dim: int, index_type: str, index_params: dict[str, Any]
    ) -> None: ...
    def exists(self, name: str) -> bool: ...
    def switch_alias(self, name: str) -> None: ...
    def aliased(self) -> str | None: ...
    def drop(self, name: str) -> None: ...
    def served_model(self, timeout_s: float | None = None) -> Served | None: ...
    def upsert(self, name: str, images: Sequence[ImageMetadata], vectors: Vectors) -> int: ...
    def delete(self, name: str, image_ids: Sequence[str]) -> int: ...
    def delete_everywhere(self, image_ids: Sequence[str]) -> int: ...
    def vectors_of(
        self,
        image_ids: Sequence[str],
        collection: str | None = None,
        guarantee_ts: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Vectors]: ...
    def search(
        self,
        vectors: Vectors,
        k: int,
        effort: int | None = None,
        expression: str | None = None,
        collection: str | None = None,
        guarantee_ts: int | None = None,
        timeout_s: float | None = None,
        index_type: str | None = None,
        min_score: float | None = None,
    ) -> list[list[Hit]]:
        """The k nearest of each vector; with `min_score`, only those at least that similar
        (a range search inside the index: fewer than k when fewer are that close)."""
        ...

    def count(self, name: str | None = None) -> int: ...
    def close(self) -> None: ...


class Embedder(Protocol):
    """One served embedding model (Triton)."""

    model: str

    def identity(self) -> ModelIdentity: ...
    def expect(self, model_id: str) -> ModelIdentity: ...
    def embed(self, images: Sequence[bytes]) -> tuple[Vectors, list[str]]:
        """Embeddings (N, dim) and per image '' or why it was rejected (its row is zeros)."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> tuple[Vectors, list[str]]:
        """A text tower's embeddings (N, dim) and per text '' or why it was rejected."""
        ...

    def close(self) -> None: ...


# the embedder of a Triton model, by name (one client per model, kept)
Embedders = Callable[[str], Embedder]


class ScratchIndex(Protocol):
    """A throw-away collection of vectors with int ids 0..n-1, for measurements
    (evaluation, benchmarks): filled, indexed, searched, dropped; never served."""

    def insert(self, vectors: Vectors) -> None: ...
    def build_index(self, index_type: str, params: dict[str, Any], wait_s: float) -> str:
        """'' when built and loaded, else why the server refused it."""
        ...

    def search_batch(self, queries: Vectors, limit: int, params: dict[str, Any]) -> Vectors:
        """Ids of the `limit` best per query, -1 where fewer came; reads every insert."""
        ...

    def drop(self) -> None: ...


class Cache(Protocol):
    """The query cache (Redis): never fails, a miss when it is away."""

    available: bool

    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes, ttl_s: int) -> None: ...
    def get_vector(self, key: str) -> Vectors | None: ...
    def put_vector(self, key: str, vector: Vectors, ttl_s: int) -> None: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...


class EventWriter(Protocol):
    """Produces messages (Kafka), acknowledged by every replica before `send` returns."""

    def send(
        self, messages: Sequence[tuple[str, bytes | None, bytes | None]], timeout_s: float = 60
    ) -> list[str | None]:
        """(topic, key, value) in order; per message None when acknowledged, else why not."""
        ...

    def close(self) -> None: ...


class TopicReader(Protocol):
    """One topic read from its start by a consumer group of its own (a replay), partitions
    assigned; offsets committed only by `commit`."""

    topic: str
    positions: dict[int, int]

    def read(self, max_messages: int, wait_s: float) -> list[LogMessage]: ...
    def commit(self, next_offsets: Mapping[int, int]) -> None: ...
    def end_offsets(self, fresh: bool) -> dict[int, int]: ...
    def close(self) -> None: ...


class EventLog(Protocol):
    """What a replay asks of the log (Kafka): readers and writers, topics, consumer lag."""

    def writer(self) -> EventWriter: ...
    def reader(self, topic: str, group: str) -> TopicReader: ...
    def topics(self) -> dict[str, int]:
        """Every topic with its partition count."""
        ...

    def ensure_embeddings_topic(self, name: str) -> None: ...
    def delete_topic(self, name: str) -> None: ...
    def delete_consumer_group(self, group: str) -> bool: ...
    def lag(self, group: str, topics: Sequence[str]) -> int: ...
    def first_match(self, topic: str, pick: Callable[[bytes], Any], wait_s: float = 30) -> Any: ...
