"""Which of an image's nearest neighbours are its near-duplicates: the perceptual-hash and
embedding tiers, and spatial verification where they do not both hold (`DuplicatePolicy`).
Used by the query API (`GET /images/{id}/duplicates`) and by the processors' duplicates
stage (the `cbir.duplicates` topic), so that both answer alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cbir.domain.spatial import MIRROR_MIN_COSINE, DuplicatePolicy
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


class DuplicateFinder:
    """`keypoints`: the strongest keypoints of each side that verification matches (a
    near-duplicate shares most of the picture, so its strongest keypoints agree; matching
    costs their product). The store keeps more, for re-ranking. Without a store, it judges
    the features it is handed (a benchmark's)."""

    def __init__(
        self,
        store: FeatureStore | None,
        policy: DuplicatePolicy,
        verifier: Verifier | None = None,
        keypoints: int = 500,
    ) -> None:
        self.store = store
        self.policy = policy
        self.verifier = verifier or Verifier()
        self.keypoints = keypoints

    def judge(
        self,
        query: LocalFeatures | None,
        neighbours: Sequence[Neighbour],
        features: Mapping[str, LocalFeatures | None] | None = None,
    ) -> list[Found]:
        """The near-duplicates among `neighbours` (nearest first), in their order. Without
        the query's features, only the embedding tier can speak, and it alone decides
        nothing: no duplicates. Only neighbours some tier could call duplicates are read
        (from `features` when given: a batch's reads, made once)."""
        if query is None or not neighbours:
            return []
        asked = [n for n in neighbours if self.policy.may_be_duplicate(n.cosine)]
        if features is None:
            features = self.features_store().get_many([(n.image_id, n.object_key) for n in asked])
        distances: dict[str, int] = {}
        geometry: list[tuple[Neighbour, LocalFeatures]] = []
        for neighbour in asked:
            other = features.get(neighbour.image_id)
            if other is None:
                continue
            distances[neighbour.image_id] = hamming(query.phash, other.phash)
            if self.policy.needs_geometry(distances[neighbour.image_id], neighbour.cosine):
                geometry.append((neighbour, other.strongest(self.keypoints)))
        # one descriptor product for all; a mirrored copy keeps a high global similarity:
        # only then is the mirror tried
        verified = self.verifier.verify_many(
            query.strongest(self.keypoints),
            [other for _, other in geometry],
            [n.cosine >= MIRROR_MIN_COSINE for n, _ in geometry],
            self.policy.min_inliers,
        )
        checked = {n.image_id: v for (n, _), v in zip(geometry, verified, strict=True)}
        found = []
        for neighbour in asked:
            distance = distances.get(neighbour.image_id)
            check = checked.get(neighbour.image_id)
            inliers = check.inliers if check is not None else None
            coverage = check.coverage if check is not None else 0.0
            tier = self.policy.decide(distance, neighbour.cosine, inliers, coverage)
            if tier is not None:
                found.append(
                    Found(neighbour.image_id, tier.value, neighbour.cosine, distance, inliers)
                )
        return found

    def judge_batch(
        self, batch: Sequence[tuple[LocalFeatures | None, Sequence[Neighbour]]]
    ) -> list[list[Found]]:
        """Each (query, neighbours) judged, the distinct neighbours' features read once for
        the whole batch (a batch's images share many neighbours)."""
        wanted = {
            n.image_id: n.object_key
            for query, neighbours in batch
            if query is not None
            for n in neighbours
            if self.policy.may_be_duplicate(n.cosine)
        }
        features = self.features_store().get_many(list(wanted.items()))
        return [self.judge(query, neighbours, features) for query, neighbours in batch]

    def features_of(self, image_id: str, object_key: str | None) -> LocalFeatures | None:
        """An image's stored features (extracted from its bytes when missing)."""
        return self.features_store().get(image_id, object_key)

    def features_store(self) -> FeatureStore:
        """Its store; raises ValueError for a finder made without one."""
        if self.store is None:
            raise ValueError("this finder has no feature store: hand it the features")
        return self.store
