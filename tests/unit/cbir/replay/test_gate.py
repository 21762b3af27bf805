"""The gate's checks of a generation, against fakes of the ports: on the probe set, a
collection that ranks by class scores higher than one that does not, and a probe never finds
itself; over the collection, a generation that loses what geometry verifies is refused."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cbir.domain.errors import ReplayError
from cbir.domain.gate import TrainedOn
from cbir.domain.generations import Generation, GenerationState
from cbir.domain.images import image_id_of
from cbir.local_features.geometry import Verification, Verifier
from cbir.replay.gate import CollectionCheck, CollectionJudge, Probe, probe_quality
from schemas.events import ImageMetadata
from tests.fakes import (
    FakeEmbedder,
    FakeEmbedders,
    FakeMetadataStore,
    FakeRegistry,
    FakeVectorIndex,
)

MODEL = "mobilenet:1:8d:gap:aaaaaaaaaaaa"


def image(data: bytes, tag: str) -> ImageMetadata:
    image_id = image_id_of(data)
    return ImageMetadata(
        image_id, "images", f"k/{image_id}", "f.jpg", "t", "image/jpeg", len(data), 1, 1,
        datetime(2026, 1, 1, tzinfo=UTC), (tag,),
    )  # fmt: skip


def test_a_collection_that_ranks_by_class_scores_higher() -> None:
    # the fake embedder one-hots the first byte: class "a" images start with 1, "b" with 2
    stored = [image(bytes([1, i]), "a") for i in range(5)] + [
        image(bytes([2, i]), "b") for i in range(5)
    ]
    metadata, index, registry = FakeMetadataStore(), FakeVectorIndex(), FakeRegistry()
    metadata.upsert_indexed(stored, MODEL, "g")
    good = registry.add(MODEL, "topic", GenerationState.BUILDING)
    bad = registry.add(MODEL, "topic", GenerationState.LIVE)
    for generation in (good, bad):
        index.create(generation.name, MODEL, 8, "FLAT", {})
    truth = np.eye(8, dtype=np.float32)[[1] * 5 + [2] * 5]
    index.upsert(good.name, stored, truth)
    index.upsert(bad.name, stored, truth[::-1].copy())  # every vector under the other class
    embedders = FakeEmbedders(FakeEmbedder(good.model, MODEL))
    # the probes: an indexed image of "a" (left out of its own list) and a new one of "b"
    probe = Probe((("a", bytes([1, 0])), ("b", bytes([2, 99]))), tolerance=0.02, k=4)
    on_good = probe_quality(probe, good, embedders, index, metadata)
    on_bad = probe_quality(probe, bad, embedders, index, metadata)
    assert on_good == pytest.approx(1.0) and on_bad < 0.5


def test_a_probe_folder_needs_classes(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="--probe"):
        Probe.from_folder(tmp_path / "missing")


def test_probe_images_the_model_was_trained_on_are_refused() -> None:
    seen, unseen = bytes([1, 1]), bytes([1, 2])
    trained = TrainedOn("flowers", ("a", "b"), frozenset({image_id_of(seen)}), held_out=1)
    with pytest.raises(ReplayError, match=r"1 of the 2 probe images are images flv1 was trained"):
        Probe((("a", seen), ("a", unseen))).refuse_trained("flv1", trained)
    Probe((("a", unseen),)).refuse_trained("flv1", trained)  # never seen: accepted


class FakeSceneFeatures:
    """Stands for the stored local features: each image's "features" are its scene name."""

    def __init__(self, scenes: dict[str, str]) -> None:
        self.scenes = scenes

    def get_many(self, images: Sequence[tuple[str, str | None]]) -> dict[str, Any]:
        return {image_id: self.scenes.get(image_id) for image_id, _ in images}


class FakeSceneVerifier(Verifier):
    """Geometry as a fake: images of one scene verify with 30 inliers, others with none."""

    def verify_many(
        self, query: Any, candidates: Sequence[Any], mirror: Sequence[bool], at_least: int
    ) -> list[Verification]:
        return [Verification(30, 30 if c == query else 0, None) for c in candidates]


def scene_collection(
    metadata: FakeMetadataStore, index: FakeVectorIndex, registry: FakeRegistry
) -> tuple[Generation, Generation, dict[str, str]]:
    """30 photographs of 10 scenes (3 each) and 10 flowers; two generations: one whose vectors
    group each scene, one whose vectors are noise."""
    scenes = {f"{s}-{i}": f"scene{s}" for s in range(10) for i in range(3)}
    stored = [image(name.encode(), scene) for name, scene in scenes.items()]
    stored += [image(f"flower{i}".encode(), "daisy") for i in range(10)]
    metadata.upsert_indexed(stored, MODEL, "g")
    rng = np.random.default_rng(0)
    grouped = np.zeros((len(stored), 16), np.float32)
    for row, meta in enumerate(stored):
        grouped[row, int(meta.tags[0][5:]) if meta.tags[0] != "daisy" else 15] = 1.0
    grouped += rng.normal(0, 0.05, grouped.shape).astype(np.float32)
    noise = rng.normal(0, 1, grouped.shape).astype(np.float32)
    live = registry.add(MODEL, "topic", GenerationState.LIVE)
    building = registry.add(MODEL, "topic", GenerationState.BUILDING)
    for generation, vectors in ((live, grouped), (building, noise)):
        index.create(generation.name, MODEL, 16, "FLAT", {})
        index.upsert(generation.name, stored, vectors / np.linalg.norm(vectors, axis=1)[:, None])
    return live, building, {m.image_id: m.tags[0] for m in stored}


def test_the_collection_check_refuses_a_generation_that_loses_the_scenes() -> None:
    metadata, index, registry = FakeMetadataStore(), FakeVectorIndex(), FakeRegistry()
    live, building, scene_of = scene_collection(metadata, index, registry)
    features = FakeSceneFeatures(scene_of)
    judge = CollectionJudge(metadata, index, features, FakeSceneVerifier(), 8)
    check = CollectionCheck(sample=100, k=5, tolerance=0.03, skip_tags=frozenset({"daisy"}))

    worse = judge.evaluate(check, building, live)
    assert worse.check == "collection" and not worse.passed
    # every scene photograph was judged (each has two verified partners), no flower was
    assert worse.probes == 30 and "on 30 of 30 sampled images outside" in worse.detail
    assert worse.live_value == pytest.approx(1.0) and worse.value is not None
    assert worse.value < 0.5
    # the other way round it passes: the same queries and pool, judged alike
    better = judge.evaluate(check, live, building)
    assert better.passed and better.value == pytest.approx(1.0)


def test_the_collection_check_says_why_it_cannot_judge() -> None:
    metadata, index, registry = FakeMetadataStore(), FakeVectorIndex(), FakeRegistry()
    live, building, scene_of = scene_collection(metadata, index, registry)
    check = CollectionCheck(sample=100, k=5)
    off = CollectionJudge(metadata, index, None, FakeSceneVerifier(), 8).evaluate(
        check, building, live
    )
    assert off.passed and off.value is None and "local features are off" in off.detail
    judge = CollectionJudge(metadata, index, FakeSceneFeatures(scene_of), FakeSceneVerifier(), 8)
    assert "nothing live" in judge.evaluate(check, building, None).detail
    only_flowers = CollectionCheck(sample=100, k=5, skip_tags=frozenset(scene_of.values()))
    nothing = judge.evaluate(only_flowers, building, live)
    assert nothing.value is None and "no indexed image outside" in nothing.detail
    # ten flowers alone have no same-scene partner: too few judged, skipped, not refused
    few = CollectionCheck(sample=100, k=5, skip_tags=frozenset(f"scene{s}" for s in range(10)))
    skipped = judge.evaluate(few, building, live)
    assert skipped.passed and "0 of 10 sampled images" in skipped.detail
