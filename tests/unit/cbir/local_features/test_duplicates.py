"""The near-duplicate finder's reads: only neighbours a tier could call duplicates, and a
batch's distinct neighbours once; its verdicts do not depend on how it read them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from cbir.domain.spatial import DuplicatePolicy
from cbir.local_features.duplicates import DuplicateFinder, Neighbour
from cbir.local_features.features import Extractor, LocalFeatures
from cbir.local_features.store import FeatureStore
from tests.fakes import FakeObjectStore
from tests.images import half_size


class CountingStore(FeatureStore):
    def __init__(self) -> None:
        super().__init__(FakeObjectStore(), None, "features", Extractor(300, 320))
        self.read: list[str] = []

    def get(self, image_id: str, object_key: str | None = None) -> LocalFeatures | None:
        self.read.append(image_id)
        return super().get(image_id, object_key)


def test_a_batch_reads_each_neighbour_once_and_none_below_the_floor(
    flower_photos: list[Path],
) -> None:
    store = CountingStore()
    for name, photo in (("source", flower_photos[0]), ("other", flower_photos[4])):
        store.put(name, store.extract(photo.read_bytes()))
    store.put("far", store.extract(flower_photos[2].read_bytes()))
    copy = store.extract(half_size(flower_photos[0]))
    unrelated = store.extract(flower_photos[5].read_bytes())
    policy = DuplicatePolicy()  # geometry floor 0.5
    neighbours: Sequence[Neighbour] = [
        Neighbour("source", None, 0.95),
        Neighbour("other", None, 0.7),
        Neighbour("far", None, 0.3),  # below the floor: no tier can call it a duplicate
    ]
    finder = DuplicateFinder(store, policy)
    batch = finder.judge_batch([(copy, neighbours), (unrelated, neighbours), (None, neighbours)])
    assert sorted(store.read) == ["other", "source"]
    assert [[f.image_id for f in found] for found in batch] == [["source"], [], []]
    assert batch[0][0].tier == "both"
    # judged alone, the same verdicts
    assert finder.judge(copy, neighbours) == batch[0]
    assert finder.judge(unrelated, neighbours) == batch[1]


def test_verification_reads_only_the_strongest_keypoints(flower_photos: list[Path]) -> None:
    store = CountingStore()
    source = store.extract(flower_photos[0].read_bytes())
    store.put("source", source)
    assert source.ranked and len(source) > 100
    strongest = source.strongest(100)
    assert len(strongest) == 100 and (strongest.points == source.points[:100]).all()
    unranked = LocalFeatures.from_bytes(
        LocalFeatures(source.points, source.descriptors, 1, 1, 0, ranked=False).to_bytes()
    )
    assert not unranked.ranked and len(unranked.strongest(100)) == len(source)
    # a rotated crop's strongest 150 still verify it (rotated: the hash tier cannot speak)
    with Image.open(flower_photos[0]) as opened:
        image = opened.convert("RGB")
    w, h = image.size
    turned = image.crop((w // 8, h // 8, w - w // 8, h - h // 8)).rotate(10, expand=True)
    out = io.BytesIO()
    turned.save(out, "JPEG", quality=80)
    crop = store.extract(out.getvalue())
    finder = DuplicateFinder(store, DuplicatePolicy(min_inliers=15), keypoints=150)
    (found,) = finder.judge(crop, [Neighbour("source", None, 0.8)])
    assert found.tier == "geometry" and found.inliers is not None and found.inliers >= 15
