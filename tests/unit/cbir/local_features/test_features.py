"""Local features: extraction bounds, the blob's round trip and guards, the perceptual hash."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbir.local_features.features import (
    Extractor,
    FeaturesUnreadable,
    ImageRejected,
    LocalFeatures,
    hamming,
    perceptual_hash,
)


def test_extraction_keeps_at_most_the_asked_keypoints_within_the_working_image(
    flower_photos: list[Path],
) -> None:
    features = Extractor(max_keypoints=200, max_side=320).extract(flower_photos[3].read_bytes())
    assert 100 <= len(features) <= 200
    assert max(features.width, features.height) == 320
    assert (features.points >= 0).all()
    assert (features.points[:, 0] < features.width).all()
    assert (features.points[:, 1] < features.height).all()
    norms = np.linalg.norm(features.rootsift(), axis=1)
    assert np.allclose(norms, 1, atol=0.05)  # RootSIFT is unit length, quantised


def test_the_blob_round_trips_and_refuses_what_it_is_not(flower_photos: list[Path]) -> None:
    features = Extractor().extract(flower_photos[5].read_bytes())
    blob = features.to_bytes()
    again = LocalFeatures.from_bytes(blob)
    assert np.array_equal(again.points, features.points)
    assert np.array_equal(again.descriptors, features.descriptors)
    assert (again.width, again.height, again.phash) == (
        features.width,
        features.height,
        features.phash,
    )
    for bad in (b"", b"garbage" * 10, blob[:-1], b"CBLF\x09" + blob[5:]):
        with pytest.raises(FeaturesUnreadable):
            LocalFeatures.from_bytes(bad)


def test_a_flat_image_has_no_keypoints_and_garbage_is_rejected() -> None:
    out = io.BytesIO()
    Image.new("RGB", (200, 150), "grey").save(out, "PNG")
    flat = Extractor().extract(out.getvalue())
    assert len(flat) == 0 and LocalFeatures.from_bytes(flat.to_bytes()).descriptors.shape == (
        0,
        128,
    )
    with pytest.raises(ImageRejected):
        Extractor().extract(b"not an image at all")


def test_the_perceptual_hash_survives_rescaling_and_compression_but_not_another_photo(
    flower_photos: list[Path],
) -> None:
    def hash_of(image: Image.Image) -> int:
        return perceptual_hash(np.asarray(image.convert("L")))

    with Image.open(flower_photos[0]) as opened:
        photo = opened.convert("RGB")
    small = photo.resize((photo.width // 3, photo.height // 3))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=25)
    recompressed = Image.open(io.BytesIO(out.getvalue()))
    assert hamming(hash_of(photo), hash_of(recompressed)) <= 6
    others = [hamming(hash_of(photo), hash_of(Image.open(p))) for p in flower_photos[-5:]]
    assert min(others) > 14
