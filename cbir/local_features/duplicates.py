"""Which of an image's nearest neighbours are its near-duplicates: the perceptual-hash and
embedding tiers, and spatial verification where they do not both hold (`DuplicatePolicy`).
Used by the query API (`GET /images/{id}/duplicates`) and by the processors' duplicates
stage (the `cbir.duplicates` topic), so that both answer alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cbir.domain.spatial import DuplicatePolicy
from cbir.local_features.features import LocalFeatures, hamming
from cbir.local_features.geometry import Verifier
from cbir.local_features.store import FeatureStore


@dataclass(frozen=True)
class Neighbour:
    image_id: str
    object_key: str | None  # where its bytes are, to extract features missing from the store
    cosine: float


@dataclass(frozen=True)
class Found:
    image_id: str
    tier: str
    cosine: float
    hamming: int | None
    inliers: int | None


# the global descriptor (GAP over a CNN's features) barely moves under a mirror: a flipped
# copy of the benchmark scores at least 0.9 with its source (bench/results/local_features)
MIRROR_MIN_COSINE = 0.8


class DuplicateFinder:
    def __init__(
        self, store: FeatureStore, policy: DuplicatePolicy, verifier: Verifier | None = None
    ) -> None:
        self.store = store
        self.policy = policy
        self.verifier = verifier or Verifier()

    def judge(self, query: LocalFeatures | None, neighbours: Sequence[Neighbour]) -> list[Found]:
        """The near-duplicates among `neighbours` (nearest first), in their order. Without
        the query's features, only the embedding tier can speak, and it alone decides
        nothing: no duplicates."""
        if query is None or not neighbours:
            return []
        features = self.store.get_many([(n.image_id, n.object_key) for n in neighbours])
        found = []
        for neighbour in neighbours:
            other = features.get(neighbour.image_id)
            distance = hamming(query.phash, other.phash) if other is not None else None
            inliers, coverage = None, 0.0
            if other is not None and self.policy.needs_geometry(distance, neighbour.cosine):
                # a mirrored copy keeps a high global similarity: only then is it tried
                mirror = neighbour.cosine >= MIRROR_MIN_COSINE
                verified = self.verifier.verify(query, other, mirror)
                inliers, coverage = verified.inliers, verified.coverage
            tier = self.policy.decide(distance, neighbour.cosine, inliers, coverage)
            if tier is not None:
                found.append(
                    Found(neighbour.image_id, tier.value, neighbour.cosine, distance, inliers)
                )
        return found
