"""Spatial verification: RANSAC recovers a known transform from synthetic matches, unrelated
photographs get next to no inliers, a rotated crop verifies against its source."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from cbir.local_features.features import Extractor
from cbir.local_features.geometry import Verifier


def affine(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    angle = np.radians(angle_deg)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, np.array(shift)[:, None]])


def test_ransac_recovers_a_known_transform_among_outliers() -> None:
    rng = np.random.default_rng(0)
    truth = affine(25, 0.7, (40, -15))
    source = rng.uniform(0, 500, (120, 2)).astype(np.float32)
    target = source @ truth[:, :2].T + truth[:, 2]
    target += rng.normal(0, 0.5, target.shape)  # localisation noise
    outliers = rng.choice(120, 60, replace=False)  # half the matches are wrong
    target[outliers] = rng.uniform(0, 500, (60, 2))
    found = Verifier().fit(source, target.astype(np.float32), 500)
    assert found.transform is not None
    assert np.allclose(found.transform, truth, atol=0.05 * np.abs(truth).max())
    assert 55 <= found.inliers <= 65  # the 60 true matches, give or take a chance fit


def test_random_matches_agree_on_no_transform() -> None:
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 500, (80, 2)).astype(np.float32)
    target = rng.uniform(0, 500, (80, 2)).astype(np.float32)
    assert Verifier().fit(source, target, 500).inliers <= 8


def test_too_few_matches_verify_nothing() -> None:
    points = np.zeros((3, 2), np.float32)
    found = Verifier(min_matches=0).fit(points, points, 100)
    assert (found.inliers, found.transform) == (0, None)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_a_rotated_crop_verifies_against_its_source_and_unrelated_photos_do_not(
    flower_photos: list[Path],
) -> None:
    extractor, verifier = Extractor(), Verifier()
    with Image.open(flower_photos[0]) as opened:
        photo = opened.convert("RGB")
    width, height = photo.size
    crop = photo.crop((width // 5, height // 6, width - width // 8, height - height // 5))
    copy = crop.rotate(20, resample=Image.Resampling.BICUBIC, expand=True)
    source = extractor.extract(jpeg(photo))
    transformed = extractor.extract(jpeg(copy, quality=60))
    same = verifier.verify(transformed, source)
    assert same.inliers >= 40
    assert same.transform is not None
    # the estimated map is a rotation by about 20 degrees (the crop's scale kept)
    angle = np.degrees(np.arctan2(same.transform[1, 0], same.transform[0, 0]))
    assert abs(abs(angle) - 20) < 3
    unrelated = [
        verifier.verify(transformed, extractor.extract(p.read_bytes())) for p in flower_photos[1:]
    ]
    assert max(u.inliers for u in unrelated) < 12


def test_a_mirrored_copy_verifies_through_the_mirrored_features(
    flower_photos: list[Path],
) -> None:
    extractor = Extractor()
    with Image.open(flower_photos[2]) as opened:
        photo = opened.convert("RGB")
    source = extractor.extract(jpeg(photo))
    flipped = extractor.extract(jpeg(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    plain = Verifier(mirror=False).verify(flipped, source)
    either = Verifier(mirror=True).verify(flipped, source)
    assert plain.inliers < 40  # SIFT alone does not see a mirror image as the same
    assert either.inliers >= 5 * max(plain.inliers, 20)
    # mirroring twice is the identity
    twice = source.mirrored().mirrored()
    assert np.array_equal(twice.descriptors, source.descriptors)
    assert np.allclose(twice.points, source.points)


def test_verifying_many_at_once_decides_as_one_by_one(flower_photos: list[Path]) -> None:
    """One descriptor product for all candidates, and RANSAC only where the tentative
    matches can reach the threshold: the same verdicts, and the same counts where it
    verifies; the mirror tried where asked."""
    extractor, verifier = Extractor(), Verifier()
    with Image.open(flower_photos[0]) as opened:
        photo = opened.convert("RGB")
    width, height = photo.size
    crop = photo.crop((width // 6, height // 6, width - width // 6, height - height // 6))
    query = extractor.extract(jpeg(crop.rotate(12, expand=True), quality=70))
    flipped = extractor.extract(jpeg(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    candidates = [extractor.extract(p.read_bytes()) for p in flower_photos[1:]]
    candidates += [extractor.extract(jpeg(photo)), flipped, flipped]
    mirror = [False] * (len(candidates) - 1) + [True]
    at_least = 20
    many = verifier.verify_many(query, candidates, mirror, at_least)
    one = [verifier.verify(query, c, m) for c, m in zip(candidates, mirror, strict=True)]
    assert [m.inliers >= at_least for m in many] == [o.inliers >= at_least for o in one]
    assert [m.inliers >= at_least for m in many][-3:] == [True, False, True]
    for m, o in zip(many, one, strict=True):
        if o.inliers >= at_least:
            assert (m.inliers, m.matches) == (o.inliers, o.matches)
    assert verifier.verify_many(query, [], [], at_least) == []
