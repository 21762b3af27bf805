"""The query engine against fakes: ranking and the join, the two caches and their keys,
invalidation by the index generation, and the errors a user meets."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from cbir.domain.images import image_id_of
from cbir.domain.rows import Hit
from cbir.settings import Settings
from cbir.wiring import query_config
from query_api.context import QueryContext
from query_api.engine import QueryEngine
from query_api.errors import ApiError
from query_api.metrics import ApiMetrics
from query_api.search import SearchRequest
from schemas.events import ImageMetadata
from tests.fakes import (
    FakeCache,
    FakeEmbedder,
    FakeEmbedders,
    FakeMetadataStore,
    FakeObjectStore,
    FakeVectorIndex,
)

MODEL = "mobilenet:1:8d:gap:aaaaaaaaaaaa"
COLLECTION = "images__g1_mobilenet_v1_aaaaaaaa"


class Fixture:
    def __init__(self) -> None:
        self.metadata = FakeMetadataStore()
        self.index = FakeVectorIndex()
        self.cache = FakeCache()
        self.objects = FakeObjectStore()
        self.embedder = FakeEmbedder("mobilenet", MODEL)
        self.engine = QueryEngine(
            QueryContext(
                query_config(Settings()),
                ApiMetrics(),
                self.metadata,
                lambda: self.index,
                FakeEmbedders(self.embedder),
                self.cache,
                self.objects,
            )
        )
        self.index.create(COLLECTION, MODEL, 8, "FLAT", {})
        self.index.switch_alias(COLLECTION)

    def store(self, data: bytes, indexed: bool = True, tags: tuple[str, ...] = ("rose",)) -> str:
        image_id = image_id_of(data)
        image = ImageMetadata(
            image_id,
            "images",
            f"k/{image_id}",
            "f.jpg",
            "t",
            "image/jpeg",
            len(data),
            1,
            1,
            datetime(2026, 1, 1, tzinfo=UTC),
            tags,
        )
        self.objects.objects[("images", image.object_key)] = data
        if indexed:
            vector = np.zeros((1, 8), dtype=np.float32)
            vector[0, data[0] % 8] = 1.0
            self.index.upsert(COLLECTION, [image], vector)
            self.metadata.upsert_indexed([image], MODEL, COLLECTION)
            self.metadata.bump_generation(self.index.clock)
        else:
            self.metadata.insert_pending([image])
        return image_id


@pytest.fixture
def fx() -> Fixture:
    return Fixture()


def test_a_search_ranks_by_similarity_and_joins_the_metadata(fx: Fixture) -> None:
    same, other = fx.store(b"\x01same"), fx.store(b"\x02other")
    outcome = fx.engine.search.by_image(b"\x01query", SearchRequest(2))
    assert [r.image_id for r in outcome.results] == [same, other]
    assert [r.rank for r in outcome.results] == [1, 2]
    assert outcome.results[0].score == 1.0 and outcome.results[0].tags == ["rose"]
    assert (outcome.collection, outcome.model_id) == (COLLECTION, MODEL)


def test_results_and_embeddings_are_cached_until_the_index_changes(fx: Fixture) -> None:
    fx.store(b"\x01a")
    query = b"\x01q"
    first = fx.engine.search.by_image(query, SearchRequest(5))
    again = fx.engine.search.by_image(query, SearchRequest(5))
    assert (first.result_cache, first.embedding_cache) == ("miss", "miss")
    assert again.result_cache == "hit" and again.results == first.results
    assert fx.embedder.calls == 1 and fx.index.searches == 1
    added = fx.store(b"\x01b")  # a write bumps the index generation: the cached list is old
    fresh = fx.engine.search.by_image(query, SearchRequest(5))
    assert (fresh.result_cache, fresh.embedding_cache) == ("miss", "hit")
    assert added in {r.image_id for r in fresh.results}
    assert fx.embedder.calls == 1  # the embedding's key is the model and the bytes alone


def test_bypassing_the_result_cache_searches_again(fx: Fixture) -> None:
    fx.store(b"\x01a")
    fx.engine.search.by_image(b"\x01q", SearchRequest(5))
    bypass = fx.engine.search.by_image(b"\x01q", SearchRequest(5, use_result_cache=False))
    assert bypass.result_cache == "bypass" and fx.index.searches == 2


def test_more_like_this_uses_the_stored_vector_and_says_why_it_cannot(fx: Fixture) -> None:
    stored = fx.store(b"\x03stored")
    outcome = fx.engine.search.similar(stored, SearchRequest(1))
    assert outcome.results[0].image_id == stored and fx.embedder.calls == 0
    pending = fx.store(b"\x04pending", indexed=False)
    with pytest.raises(ApiError) as refused:
        fx.engine.search.similar(pending, SearchRequest(1))
    assert refused.value.status == 409 and "pending" in str(refused.value)
    with pytest.raises(ApiError) as unknown:
        fx.engine.search.similar("0" * 64, SearchRequest(1))
    assert unknown.value.status == 404


def test_an_unreadable_query_image_is_a_422_with_the_reason(fx: Fixture) -> None:
    fx.store(b"\x01a")
    with pytest.raises(ApiError) as refused:
        fx.engine.search.by_image(b"bad image", SearchRequest(5))
    assert refused.value.status == 422 and "cannot identify" in str(refused.value)


def test_nothing_indexed_yet_answers_no_results(fx: Fixture) -> None:
    fx.index.alias = None
    outcome = fx.engine.search.by_image(b"\x01q", SearchRequest(5))
    assert outcome.results == [] and outcome.result_cache == "none"


def test_an_images_bytes_come_from_the_object_store_with_its_type(fx: Fixture) -> None:
    image_id = fx.store(b"\x05bytes")
    assert fx.engine.catalogue.content(image_id) == (b"\x05bytes", "image/jpeg")
    fx.objects.objects.clear()
    with pytest.raises(ApiError) as gone:
        fx.engine.catalogue.content(image_id)
    assert gone.value.status == 404


def test_a_dependency_that_keeps_failing_is_refused_at_once_until_a_probe(fx: Fixture) -> None:
    from cbir.domain.breaker import CircuitOpen
    from cbir.domain.errors import ServiceUnavailable

    fx.store(b"\x01a")
    calls: list[int] = []

    def down() -> tuple[int, int]:
        calls.append(1)
        raise ServiceUnavailable("MySQL", "127.0.0.1:3306", "CBIR_MYSQL__HOST", "timed out")

    fx.metadata.index_generation = down  # type: ignore[method-assign]
    for _ in range(3):  # breaker_failures
        with pytest.raises(ServiceUnavailable):
            fx.engine.search.by_image(b"\x01q", SearchRequest(5))
    with pytest.raises(CircuitOpen, match="MySQL failed 3 times in a row"):
        fx.engine.search.by_image(b"\x01q", SearchRequest(5))
    assert len(calls) == 3  # the fourth request did not wait on MySQL


class SlowReads(FakeVectorIndex):
    """A fake index whose vector reads take `read_s`; it records the bound of each call."""

    def __init__(self, read_s: float) -> None:
        super().__init__()
        self.read_s = read_s
        self.bounds: list[tuple[str, float | None]] = []

    def vectors_of(
        self,
        image_ids: Sequence[str],
        collection: str | None = None,
        guarantee_ts: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        self.bounds.append(("read", timeout_s))
        time.sleep(self.read_s)
        return super().vectors_of(image_ids, collection, guarantee_ts, timeout_s)

    def search(self, *args: Any, **kwargs: Any) -> list[list[Hit]]:
        self.bounds.append(("search", kwargs["timeout_s"]))
        return super().search(*args, **kwargs)


def slow_fixture(read_s: float, bound_s: float) -> tuple[Fixture, SlowReads]:
    fx = Fixture()
    slow = SlowReads(read_s)
    slow.collections, slow.models = fx.index.collections, fx.index.models
    slow.alias = fx.index.alias
    fx.index = slow
    fx.engine.context.config = replace(fx.engine.context.config, timeout_s=bound_s)
    return fx, slow


def test_a_searchs_milvus_calls_share_one_bound() -> None:
    fx, slow = slow_fixture(read_s=0.2, bound_s=0.5)
    image_id = fx.store(b"\x02a")
    fx.engine.search.similar(image_id, SearchRequest(5, use_result_cache=False))
    assert [name for name, _ in slow.bounds] == ["read", "search"]
    (_, read_bound), (_, search_bound) = slow.bounds
    assert read_bound is not None and search_bound is not None
    assert 0.45 < read_bound <= 0.5
    assert search_bound <= read_bound - 0.2  # what the read left, not a fresh bound


def test_a_search_whose_bound_is_spent_is_a_503_naming_the_setting() -> None:
    fx, slow = slow_fixture(read_s=0.3, bound_s=0.2)
    image_id = fx.store(b"\x02a")
    with pytest.raises(ApiError, match="CBIR_API__DEPENDENCY_TIMEOUT_S") as raised:
        fx.engine.search.similar(image_id, SearchRequest(5))
    assert raised.value.status == 503
    assert [name for name, _ in slow.bounds] == ["read"]  # Milvus was not asked to search


def test_a_search_predicts_the_querys_labels_from_its_neighbours(fx: Fixture) -> None:
    for data in (b"\x01a", b"\x01b", b"\x01c"):
        fx.store(data, tags=("rose",))
    fx.store(b"\x01d", tags=("tulip",))
    fx.store(b"\x02far", tags=("daisy",))  # similarity 0: no vote
    outcome = fx.engine.search.by_image(b"\x01q", SearchRequest(5))
    first, second = outcome.predicted()
    assert (first.label, first.confidence, first.neighbours) == ("rose", 0.75, 3)
    assert (second.label, second.confidence) == ("tulip", 0.25)


def test_an_untagged_image_gets_the_tags_its_neighbours_vote(fx: Fixture) -> None:
    for data in (b"\x01a", b"\x01b", b"\x01c"):
        fx.store(data, tags=("rose",))
    fx.store(b"\x01d", tags=("tulip",))
    untagged = fx.store(b"\x01u", tags=())
    detail = fx.engine.catalogue.image(untagged)
    assert detail.predicted_tags is not None
    # itself left out of the vote: 3 of 4 neighbours, not 3 of 5
    assert (detail.predicted_tags[0].label, detail.predicted_tags[0].confidence) == ("rose", 0.75)
    assert fx.engine.catalogue.image(fx.store(b"\x01t", tags=("rose",))).predicted_tags is None


def test_the_metadata_answers_without_a_prediction_while_the_index_cannot(fx: Fixture) -> None:
    from cbir.domain.errors import ServiceUnavailable

    untagged = fx.store(b"\x01u", tags=())

    def down(*args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        raise ServiceUnavailable("Milvus", "127.0.0.1:19530", "CBIR_MILVUS__HOST", "down")

    fx.index.vectors_of = down  # type: ignore[method-assign]
    detail = fx.engine.catalogue.image(untagged)
    assert detail.image_id == untagged and detail.predicted_tags is None


TEXT_MODEL = "mobilenet-text:1:8d:none:bbbbbbbbbbbb"


def test_words_are_embedded_by_the_text_tower_of_the_collections_model(fx: Fixture) -> None:
    tower = FakeEmbedder("mobilenet-text", TEXT_MODEL, pairs_with=MODEL)
    fx.engine.context.embedders = FakeEmbedders(fx.embedder, tower)
    same, other = fx.store(b"\x01same"), fx.store(b"\x02other")
    # the fake tower one-hots the first character: "\x01" lands beside `same`
    outcome = fx.engine.search.by_text("\x01 red car at night", SearchRequest(2))
    assert [r.image_id for r in outcome.results] == [same, other]
    assert (outcome.model_id, outcome.embedding_cache) == (MODEL, "miss")
    again = fx.engine.search.by_text("  \x01 red  car at night ", SearchRequest(2))
    assert (again.result_cache, tower.calls, fx.embedder.calls) == ("hit", 1, 0)


def test_words_without_a_text_tower_are_a_409_that_says_what_to_do(fx: Fixture) -> None:
    fx.store(b"\x01same")
    with pytest.raises(ApiError) as refused:
        fx.engine.search.by_text("a red car", SearchRequest(2))
    assert refused.value.status == 409 and "cbir model export clip --clip" in str(refused.value)
    # a text tower of another model's space is refused too, naming both
    stale = FakeEmbedder("mobilenet-text", TEXT_MODEL, pairs_with="clip:1:8d:none:cccccccccccc")
    fx.engine.context.embedders = FakeEmbedders(fx.embedder, stale)
    with pytest.raises(ApiError) as other:
        fx.engine.search.by_text("a red car", SearchRequest(2))
    assert other.value.status == 409 and "clip:1:8d:none:cccccccccccc" in str(other.value)
    with pytest.raises(ApiError) as empty:
        fx.engine.search.by_text("   ", SearchRequest(2))
    assert empty.value.status == 422


def test_a_score_threshold_keeps_only_close_matches_and_is_its_own_cache_entry(
    fx: Fixture,
) -> None:
    near, far = fx.store(b"\x01near"), fx.store(b"\x02far")
    everything = fx.engine.search.by_image(b"\x01q", SearchRequest(5))
    assert [r.image_id for r in everything.results] == [near, far]
    close = fx.engine.search.by_image(b"\x01q", SearchRequest(5, min_score=0.5))
    # the threshold is asked of the index: fewer than k come back, none below it
    assert [r.image_id for r in close.results] == [near] and close.result_cache == "miss"
    assert all(r.score >= 0.5 for r in close.results)
    none = fx.engine.search.by_image(b"\x03q", SearchRequest(5, min_score=0.5))
    assert none.results == []
