"""The probe-set evaluation of a generation, against fakes of the ports: a collection that
ranks by class scores higher than one that does not, and a probe never finds itself."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from cbir.domain.errors import ReplayError
from cbir.domain.gate import TrainedOn
from cbir.domain.generations import GenerationState
from cbir.domain.images import image_id_of
from cbir.replay.gate import Probe, probe_quality
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
