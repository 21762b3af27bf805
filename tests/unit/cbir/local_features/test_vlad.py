"""VLAD: normalisation, deterministic training, and an exported entry that computes in the
runtime (as Triton runs it) exactly what training describes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbir.local_features.features import Extractor, LocalFeatures
from cbir.local_features.vlad import train
from cbir.models.export import export_vlad
from cbir.models.runtime import LocalSpec, ModelSpec, OnnxEmbedder, vlad_aggregate


@pytest.fixture(scope="module")
def features(flower_photos: list[Path]) -> list[LocalFeatures]:
    return [Extractor(200, 256).extract(p.read_bytes()) for p in flower_photos]


def test_vlad_is_power_and_intra_normalised() -> None:
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(4, 128)).astype(np.float32)
    descriptors = rng.normal(size=(50, 128)).astype(np.float32)
    vlad = vlad_aggregate(descriptors, codebook)
    assert vlad.shape == (4 * 128,)
    assert np.linalg.norm(vlad) == pytest.approx(1, abs=1e-5)
    blocks = np.linalg.norm(vlad.reshape(4, 128), axis=1)
    used = blocks > 0
    assert np.allclose(blocks[used], blocks[used][0], atol=1e-5)  # every block the same length
    assert not vlad_aggregate(np.zeros((0, 128), np.float32), codebook).any()


def test_training_is_deterministic_and_whitens(features: list[LocalFeatures]) -> None:
    first = train(features, words=8, dim=4, seed=3)
    second = train(features, words=8, dim=4, seed=3)
    assert np.array_equal(first.codebook, second.codebook)
    assert np.array_equal(first.projection, second.projection)
    described = np.stack([first.describe(f.rootsift()) for f in features])
    assert described.shape == (len(features), 4)
    assert np.allclose(np.linalg.norm(described, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="at least two images"):
        train(features[:1], words=8, dim=4)


def test_an_exported_vlad_entry_embeds_as_training_describes(
    tmp_path: Path, features: list[LocalFeatures], flower_photos: list[Path]
) -> None:
    model = train(features, words=8, dim=4, seed=1)
    spec = export_vlad(tmp_path, "vlad", 1, model, LocalSpec(200, 256), "test")
    assert spec.model_id.startswith("vlad:1:4d:vlad:")
    stored = ModelSpec.from_json((tmp_path / "vlad" / "1" / "embedding.json").read_text())
    assert stored.model_id == spec.model_id and stored.local == LocalSpec(200, 256)
    assert (tmp_path / "vlad" / "config.pbtxt").exists()
    assert (tmp_path / "vlad" / "1" / "model.py").exists()
    embedder = OnnxEmbedder(tmp_path / "vlad" / "1")
    datas = [p.read_bytes() for p in flower_photos[:3]]
    vectors, errors = embedder.embed([*datas, b"not an image"])
    assert errors[:3] == ["", "", ""] and errors[3]
    expected = np.stack([model.describe(f.rootsift()) for f in features[:3]])
    assert np.allclose(vectors[:3], expected, atol=1e-6)
    assert not vectors[3].any()
