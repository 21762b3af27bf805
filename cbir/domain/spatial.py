"""What spatial verification decides, apart from computing it: the order of re-ranked results
and whether two images are near-duplicates. Pure: inlier counts and scores in, decisions out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from cbir.domain.vectors import Vectors

# the global descriptor (GAP over a CNN's features) barely moves under a mirror: a flipped
# copy of the benchmark scores at least 0.9 with its source (bench/results/local_features),
# so the mirrored match (twice the cost) is tried only for candidates at least this similar
MIRROR_MIN_COSINE = 0.8

# any three correspondences fit an affine map exactly: RANSAC finds about this many inliers
# between unrelated pictures (3 to 5 among INRIA Holidays' and flowers17's unrelated pairs)
CHANCE_INLIERS = 3


@dataclass(frozen=True)
class SpatialPolicy:
    """A candidate with at least `min_inliers` inliers is verified: the same object. Verified
    candidates come first, by their inliers (capped at `saturation`, then by global score).
    The others follow by their global score plus `evidence` for each inlier beyond the three
    any affine map fits (`CHANCE_INLIERS`): below the threshold a few inliers do not prove
    the same object, but a viewpoint change that leaves 6 inliers is likelier the same place
    than a pair with none, so they tip close global scores (bench/results/holidays).
    Candidates not checked keep their global score."""

    # 8: of INRIA Holidays' unrelated top-100 pairs about 1 in 2000 reaches it (chance gives
    # 3 to 6); with the evidence below, R = 100 plus expansion 0.883 mAP@100 against 0.880
    # at 10 and about 0.86 at 15; flowers17's species search the same at 8, 9 and 10
    min_inliers: int = 8
    saturation: int = 60
    # 0.02 per inlier (6 beyond chance weigh 0.12 of cosine): on INRIA Holidays at R = 100,
    # mAP@100 0.842 -> 0.869 (0.881 with expansion), flowers17's category search unchanged;
    # 0.03-0.04 lift Holidays to 0.874 but cost flowers17 0.014-0.026 of P@1 (textured
    # petals give 4-6 chance inliers). 0 turns it off.
    evidence: float = 0.02

    def strength(self, inliers: int | None) -> float:
        """0 for unverified, up to 1 at `saturation` inliers."""
        if inliers is None or inliers < self.min_inliers:
            return 0.0
        return min(inliers, self.saturation) / self.saturation

    def fewest_that_count(self) -> int:
        """The fewest inliers that can change an order: a verification that cannot reach
        them need not run RANSAC."""
        return CHANCE_INLIERS + 1 if self.evidence > 0 else self.min_inliers

    def adjusted(self, score: float, inliers: int | None) -> float:
        """An unverified candidate's global score with its inliers' evidence added."""
        if inliers is None:
            return score
        return score + self.evidence * max(inliers - CHANCE_INLIERS, 0)

    def order(self, scores: Sequence[float], inliers: Sequence[int | None]) -> list[int]:
        """The candidates' new order (indices), given global scores (best first) and the
        inliers of those verified (None: not checked, e.g. past the time budget)."""
        if len(scores) != len(inliers):
            raise ValueError("one inlier count (or None) per score")

        def key(i: int) -> tuple[float, float, int]:
            strength = self.strength(inliers[i])
            if strength > 0:
                return (-strength, -scores[i], i)
            return (0.0, -self.adjusted(scores[i], inliers[i]), i)

        return sorted(range(len(scores)), key=key)


class DuplicateTier(StrEnum):
    HASH = "hash"  # perceptual hashes within the Hamming threshold
    EMBEDDING = "embedding"  # global descriptors within the cosine threshold
    BOTH = "both"
    GEOMETRY = "geometry"  # one tier alone, confirmed by spatial verification


@dataclass(frozen=True)
class DuplicatePolicy:
    """Near-duplicates in two tiers plus geometry. Both tiers agreeing (perceptual hashes
    within `max_hamming` bits and descriptors within `min_cosine`) is a duplicate at once.
    Otherwise, where they disagree or neither holds, a neighbour at least `geometry_floor`
    similar is asked of spatial verification, which confirms it with `min_inliers` inliers
    (crops, rotations, screenshots and overlays change the hash and move the descriptor, but
    keep the object's geometry), over at least `min_coverage` of both pictures. Below the
    floor nothing is asked: it costs a verification."""

    max_hamming: int = 10
    min_cosine: float = 0.90
    min_inliers: int = 20  # of the 150 strongest keypoints each side (`DuplicateFinder`)
    geometry_floor: float = 0.6
    # the inliers must span this share of both images (a shared logo, caption or window
    # title bar verifies a few dozen inliers in a sliver of the picture)
    min_coverage: float = 0.1

    def tiers(self, hamming: int | None, cosine: float) -> tuple[bool, bool]:
        return hamming is not None and hamming <= self.max_hamming, cosine >= self.min_cosine

    def may_be_duplicate(self, cosine: float) -> bool:
        """Whether any tier could call a neighbour this similar a duplicate (below it, its
        features need not even be read)."""
        return cosine >= min(self.geometry_floor, self.min_cosine)

    def needs_geometry(self, hamming: int | None, cosine: float) -> bool:
        return not all(self.tiers(hamming, cosine)) and cosine >= self.geometry_floor

    def decide(
        self,
        hamming: int | None,
        cosine: float,
        inliers: int | None = None,
        coverage: float = 1.0,
    ) -> DuplicateTier | None:
        """The tier that makes the pair a near-duplicate, or None when it is not one."""
        by_hash, by_embedding = self.tiers(hamming, cosine)
        if by_hash and by_embedding:
            return DuplicateTier.BOTH
        if cosine < self.geometry_floor or inliers is None or inliers < self.min_inliers:
            return None
        if coverage < self.min_coverage:
            return None
        return DuplicateTier.GEOMETRY


def expanded_query(query: Vectors, verified: Vectors) -> Vectors:
    """Average query expansion from spatially verified results (Chum et al., "Total Recall",
    2007): the query's vector and those of the results verified as the same object, summed
    and L2-normalised. Searched again, it finds views of the object the first vector missed
    (another side, other light); only verified results are added, so a false neighbour
    cannot drag the query away. No verified result: the query unchanged."""
    if len(verified) == 0:
        return query
    summed = query + verified.sum(axis=0)
    return np.asarray(summed / max(float(np.linalg.norm(summed)), 1e-12), dtype=np.float32)
