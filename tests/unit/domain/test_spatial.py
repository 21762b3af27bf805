"""The decisions spatial verification feeds: the re-ranked order and near-duplicate tiers."""

from __future__ import annotations

import pytest

from domain.spatial import DuplicatePolicy, DuplicateTier, SpatialPolicy


def test_verified_candidates_rise_by_inliers_and_the_rest_keep_their_order() -> None:
    policy = SpatialPolicy(min_inliers=15, saturation=60)
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    inliers = [3, 40, None, 90, 14]
    # 90 and 40 inliers verify (90 saturates to 60 > 40); 3, None and 14 keep global order
    assert policy.order(scores, inliers) == [3, 1, 0, 2, 4]


def test_saturated_candidates_are_ordered_by_their_global_score() -> None:
    policy = SpatialPolicy(min_inliers=15, saturation=60)
    assert policy.order([0.5, 0.9], [200, 61]) == [1, 0]


def test_no_verification_changes_nothing() -> None:
    assert SpatialPolicy().order([0.9, 0.9, 0.1], [None, 0, 2]) == [0, 1, 2]
    with pytest.raises(ValueError):
        SpatialPolicy().order([0.9], [])


@pytest.mark.parametrize(
    ("hamming", "cosine", "inliers", "tier"),
    [
        (2, 0.97, None, DuplicateTier.BOTH),
        (30, 0.40, 500, None),  # neither tier: geometry is not asked
        (4, 0.50, None, None),  # the hash alone, unconfirmed
        (4, 0.50, 25, DuplicateTier.GEOMETRY),
        (30, 0.95, 19, None),
        (30, 0.95, 20, DuplicateTier.GEOMETRY),
        (None, 0.95, 40, DuplicateTier.GEOMETRY),  # no hash known: the embedding tier alone
    ],
)
def test_duplicate_tiers(
    hamming: int | None, cosine: float, inliers: int | None, tier: DuplicateTier | None
) -> None:
    policy = DuplicatePolicy(max_hamming=10, min_cosine=0.9, min_inliers=20)
    assert policy.decide(hamming, cosine, inliers) == tier
    assert policy.needs_geometry(hamming, cosine) == (
        tier is DuplicateTier.GEOMETRY
        or (tier is None and policy.tiers(hamming, cosine)[0] != policy.tiers(hamming, cosine)[1])
    )
