"""In-memory fakes of the ports (`cbir/ports/`), for unit tests of the logic above them: the
stages, the query engine, the producer. Named as fakes; the pipeline itself is tested
against the real servers in tests/integration/."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np

from cbir.domain.errors import ModelMismatch, ModelNotServed
from cbir.domain.generations import Generation, GenerationState, generation_name
from cbir.domain.models import ModelId, ModelIdentity
from cbir.domain.rows import ANY_TIME, Hit, ImageRow, ImageStatus, Served, TakenWindow
from schemas.events import ImageMetadata


class FakeObjectStore:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.removed: list[tuple[str, str]] = []
        self.looked: list[tuple[str, str]] = []  # what `exists` was asked
        self.fail_next: list[BaseException] = []  # raised by the next calls, in order

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def get(self, bucket: str, key: str) -> bytes | None:
        self._maybe_fail()
        return self.objects.get((bucket, key))

    def exists(self, bucket: str, key: str) -> bool:
        self._maybe_fail()
        self.looked.append((bucket, key))
        return (bucket, key) in self.objects

    def put(
        self, bucket: str, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        self._maybe_fail()
        self.objects[(bucket, key)] = data

    def remove(self, bucket: str, key: str) -> None:
        self._maybe_fail()
        self.objects.pop((bucket, key), None)
        self.removed.append((bucket, key))


class FakeMetadataStore:
    def __init__(self) -> None:
        self.rows: dict[str, ImageRow] = {}
        self.generation = 0
        self.milvus_ts = 0
        self.bumps = 0
        self.fail_upsert: Callable[[Sequence[ImageMetadata]], BaseException | None] = (
            lambda _images: None
        )

    def existing_image_ids(self, image_ids: Sequence[str]) -> set[str]:
        return {i for i in image_ids if i in self.rows}

    def _row(self, image: ImageMetadata, status: ImageStatus, **extra: Any) -> ImageRow:
        return ImageRow(
            image_id=image.image_id,
            object_key=image.object_key,
            file_name=image.file_name,
            source=image.source,
            content_type=image.content_type,
            size_bytes=image.size_bytes,
            width=image.width,
            height=image.height,
            tags=image.tags,
            status=status,
            uploaded_at=image.uploaded_at.replace(tzinfo=None),
            taken_at=image.taken_at,
            camera_make=image.camera_make,
            camera_model=image.camera_model,
            **extra,
        )

    def insert_pending(self, images: Sequence[ImageMetadata]) -> None:
        for image in images:
            self.rows.setdefault(image.image_id, self._row(image, ImageStatus.PENDING))

    def upsert_indexed(
        self, images: Sequence[ImageMetadata], model_id: str, generation: str
    ) -> None:
        error = self.fail_upsert(images)
        if error is not None:
            raise error
        for image in images:
            self.rows[image.image_id] = self._row(
                image, ImageStatus.INDEXED, model_id=model_id, generation=generation
            )

    def mark_failed(self, reasons: Mapping[str, str]) -> None:
        for image_id, reason in reasons.items():
            row = self.rows.get(image_id)
            if row is not None:
                self.rows[image_id] = ImageRow(
                    **{**row.__dict__, "status": ImageStatus.FAILED, "error": reason}
                )

    def delete_images(self, image_ids: Sequence[str]) -> None:
        for image_id in image_ids:
            self.rows.pop(image_id, None)

    def lookup(self, image_ids: Sequence[str]) -> dict[str, ImageRow]:
        return {i: self.rows[i] for i in image_ids if i in self.rows}

    def bump_generation(self, milvus_ts: int) -> None:
        self.generation += 1
        self.bumps += 1
        self.milvus_ts = max(self.milvus_ts, milvus_ts)

    def index_generation(self) -> tuple[int, int]:
        return self.generation, self.milvus_ts

    def recent(
        self, limit: int, offset: int, status: str | None, taken: TakenWindow = ANY_TIME
    ) -> list[ImageRow]:
        rows = [r for r in self.rows.values() if status is None or r.status == status]
        if taken.bounded:
            low, high = taken.after or datetime.min, taken.before or datetime.max
            rows = [r for r in rows if r.taken_at is not None and low <= r.taken_at < high]
        return rows[offset : offset + limit]

    def indexed_after(self, image_id: str, limit: int) -> list[ImageRow]:
        after = sorted(i for i, r in self.rows.items() if r.status == "indexed" and i > image_id)
        return [self.rows[i] for i in after[:limit]]

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def image_ids_for_object(self, object_key: str) -> list[str]:
        return [r.image_id for r in self.rows.values() if r.object_key == object_key]


class FakeRegistry:
    def __init__(self, alias: str = "images") -> None:
        self.alias = alias
        self.generations: dict[int, Generation] = {}
        self._ids = itertools.count(1)

    def add(self, model_id: str, topic: str, state: GenerationState) -> Generation:
        number = next(self._ids)
        generation = Generation(
            id=number,
            name=generation_name(self.alias, number, model_id),
            model=ModelId.parse(model_id).triton_model,
            model_id=model_id,
            dim=ModelId.parse(model_id).dim,
            embeddings_topic=topic,
            index_type="HNSW",
            index_params={},
            state=state,
        )
        self.generations[number] = generation
        return generation

    def active(self) -> list[Generation]:
        return [g for g in self.generations.values() if g.state.written]

    def live(self) -> Generation | None:
        return next((g for g in self.generations.values() if g.live), None)

    def all(self) -> list[Generation]:
        return list(self.generations.values())

    def expired(self) -> list[Generation]:
        return []

    @contextmanager
    def locked(self) -> Iterator[None]:
        yield

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
    ) -> Generation:
        return self.add(model_id, embeddings_topic, state)

    def set_state(self, generation: Generation, state: GenerationState) -> None:
        generation.state.check_move(state)
        self.generations[generation.id] = Generation(**{**generation.__dict__, "state": state})

    def record_evaluation(self, generation: Generation, evaluation: dict[str, Any]) -> None:
        current = self.generations[generation.id]
        self.generations[generation.id] = Generation(
            **{**current.__dict__, "evaluation": evaluation}
        )

    def make_live(self, new: Generation, grace_s: float, milvus_ts: int) -> list[str]:
        retired = [g for g in self.generations.values() if g.live and g.id != new.id]
        for old in retired:
            self.set_state(old, GenerationState.RETIRED)
        self.set_state(new, GenerationState.LIVE)
        return [g.name for g in retired]


class FakeVectorIndex:
    def __init__(self, alias: str = "images") -> None:
        self.alias_name = alias
        self.collections: dict[str, dict[str, np.ndarray]] = {}
        self.models: dict[str, str] = {}
        self.alias: str | None = None
        self.clock = 0
        self.fail_upsert: Callable[[str, Sequence[ImageMetadata]], BaseException | None] = (
            lambda _name, _images: None
        )
        self.searches = 0
        self.read_guarantees: list[int | None] = []  # each vectors_of's guarantee_ts

    def default_params(self, index_type: str) -> dict[str, Any]:
        return {}

    def timestamp_now(self) -> int:
        self.clock += 1
        return self.clock

    def create(
        self, name: str, model_id: str, dim: int, index_type: str, index_params: dict[str, Any]
    ) -> None:
        self.collections.setdefault(name, {})
        self.models[name] = model_id

    def exists(self, name: str) -> bool:
        return name in self.collections

    def switch_alias(self, name: str) -> None:
        self.alias = name

    def aliased(self) -> str | None:
        return self.alias

    def drop(self, name: str) -> None:
        self.collections.pop(name, None)

    def served_model(self, timeout_s: float | None = None) -> Served | None:
        if self.alias is None:
            return None
        return Served(self.alias, self.models[self.alias], "FLAT")

    def upsert(self, name: str, images: Sequence[ImageMetadata], vectors: np.ndarray) -> int:
        error = self.fail_upsert(name, images)
        if error is not None:
            raise error
        for image, vector in zip(images, vectors, strict=True):
            self.collections[name][image.image_id] = np.asarray(vector, dtype=np.float32)
        return self.timestamp_now()

    def delete(self, name: str, image_ids: Sequence[str]) -> int:
        for image_id in image_ids:
            self.collections[name].pop(image_id, None)
        return self.timestamp_now()

    def delete_everywhere(self, image_ids: Sequence[str]) -> int:
        for name in self.collections:
            self.delete(name, image_ids)
        return self.clock

    def vectors_of(
        self,
        image_ids: Sequence[str],
        collection: str | None = None,
        guarantee_ts: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        self.read_guarantees.append(guarantee_ts)
        stored = self.collections[collection or self.alias or ""]
        return {i: stored[i] for i in image_ids if i in stored}

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
        """Exact inner-product search (the expression is not interpreted)."""
        self.searches += 1
        stored = self.collections[collection or self.alias or ""]
        answers = []
        floor = -np.inf if min_score is None else min_score
        for query in vectors:
            scored = sorted(((float(np.dot(query, v)), i) for i, v in stored.items()), reverse=True)
            answers.append([Hit(i, score) for score, i in scored[:k] if score >= floor])
        return answers

    def count(self, name: str | None = None) -> int:
        return len(self.collections[name or self.alias or ""])

    def close(self) -> None:
        pass


class FakeEmbedder:
    """Vectors from the bytes: a one-hot of the first byte, so equal bytes embed equally;
    bytes starting with b"bad" are an image the model cannot read."""

    def __init__(
        self, model: str, model_id: str, pairs_with: str = "", served: bool = True
    ) -> None:
        """`pairs_with`: a text tower's image model; `served` False: Triton has no such model."""
        self.model = model
        self.model_id = model_id
        self.dim = ModelId.parse(model_id).dim
        self.calls = 0
        self.fail_next: list[BaseException] = []
        self.pairs_with = pairs_with
        self.served = served

    def identity(self) -> ModelIdentity:
        if not self.served:
            raise ModelNotServed(f"Triton does not serve {self.model!r}")
        parsed = ModelId.parse(self.model_id)
        return ModelIdentity(
            self.model,
            self.model_id,
            self.dim,
            parsed.pooling,
            parsed.fingerprint,
            32,
            self.pairs_with,
        )

    def expect(self, model_id: str) -> ModelIdentity:
        if model_id != self.model_id:
            raise ModelMismatch(f"serving {self.model_id}, not {model_id}")
        return self.identity()

    def embed(self, images: Sequence[bytes]) -> tuple[np.ndarray, list[str]]:
        self.calls += 1
        if self.fail_next:
            raise self.fail_next.pop(0)
        vectors = np.zeros((len(images), self.dim), dtype=np.float32)
        errors = []
        for row, data in enumerate(images):
            if data.startswith(b"bad"):
                errors.append("cannot identify image file")
            else:
                vectors[row, data[0] % self.dim] = 1.0
                errors.append("")
        return vectors, errors

    def embed_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """As if the text were the bytes of an image: a one-hot of its first character."""
        return self.embed([text.encode() for text in texts])

    def close(self) -> None:
        pass


class FakeEmbedders:
    def __init__(self, *embedders: FakeEmbedder) -> None:
        self.by_model = {e.model: e for e in embedders}

    def __call__(self, model: str) -> FakeEmbedder:
        """Like Triton's: any name has a client; one not served says so when used."""
        if model not in self.by_model:
            return FakeEmbedder(model, "absent:1:8d:gap:000000000000", served=False)
        return self.by_model[model]


class FakeCache:
    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.available = True

    def get(self, key: str) -> bytes | None:
        return self.entries.get(key)

    def put(self, key: str, value: bytes, ttl_s: int) -> None:
        self.entries[key] = value

    def get_vector(self, key: str) -> np.ndarray | None:
        raw = self.get(key)
        return None if raw is None else np.frombuffer(raw, dtype=np.float32).copy()

    def put_vector(self, key: str, vector: np.ndarray, ttl_s: int) -> None:
        self.put(key, np.asarray(vector, dtype=np.float32).tobytes(), ttl_s)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


class FakeWriter:
    """Acknowledges every message, keeping them in order (or refuses those `refuse` picks)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.refuse: Callable[[bytes | None], bool] = lambda _key: False

    def send(
        self, messages: Sequence[tuple[str, bytes | None, bytes | None]], timeout_s: float = 60
    ) -> list[str | None]:
        outcome: list[str | None] = []
        for message in messages:
            if self.refuse(message[1]):
                outcome.append("Kafka refused it: MSG_SIZE_TOO_LARGE")
            else:
                self.sent.append(message)
                outcome.append(None)
        return outcome

    def close(self) -> None:
        pass
