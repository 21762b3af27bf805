"""The real-descriptor set of the ANN table: augmented shared photographs through MobileNet."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from cbir.bench.ann_real import augment, real_dataset


def test_an_augmentation_is_seeded_and_squashed_to_the_input_size() -> None:
    image = Image.new("RGB", (320, 200), (120, 60, 30))
    first = augment(image, np.random.default_rng((1, 2)), 224)
    again = augment(image, np.random.default_rng((1, 2)), 224)
    other = augment(image, np.random.default_rng((1, 3)), 224)
    assert first.size == (224, 224)
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_the_set_is_cached_unit_vectors_with_exact_truth_and_copies_near_each_other(
    tmp_path: Path, mobilenet_entry: Path, shared_dir: Path
) -> None:
    sources = tmp_path / "sources" / "flowers"
    sources.mkdir(parents=True)
    photos = sorted((shared_dir / "data" / "flowers17").rglob("*.jpg"))
    for path in photos[::110][:12]:  # 12 photographs of different classes
        shutil.copy(path, sources / path.name)
    files = real_dataset(tmp_path / "cache", mobilenet_entry, [sources], 96, 12, seed=3)
    base, queries, truth = (np.load(files[n]) for n in ("base", "queries", "truth"))
    assert base.shape == (96, 1024) and queries.shape == (12, 1024) and truth.shape == (12, 95)
    assert np.allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-4)
    expected = np.argsort(-(queries @ base.T), axis=1, kind="stable")
    assert np.array_equal(truth[:, :10], expected[:, :10])
    # base i is a copy of source i % 12: a query's nearest are copies of its own source
    chosen = np.random.default_rng((3, 1)).integers(0, 12, size=12)
    assert np.mean(truth[:, 0] % 12 == chosen) >= 0.9
    assert np.mean(truth[:, :8] % 12 == chosen[:, None]) >= 0.6
    stamp = files["base"].stat().st_mtime_ns
    again = real_dataset(tmp_path / "cache", mobilenet_entry, [sources], 96, 12, seed=3)
    assert again == files and files["base"].stat().st_mtime_ns == stamp  # reused
