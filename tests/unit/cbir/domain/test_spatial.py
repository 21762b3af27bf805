"""The decisions spatial verification feeds: the re-ranked order and near-duplicate tiers."""

from __future__ import annotations

import numpy as np
import pytest

from cbir.domain.spatial import DuplicatePolicy, DuplicateTier, SpatialPolicy, expanded_query


def test_verified_candidates_rise_by_inliers_and_the_rest_keep_their_order() -> None:
    policy = SpatialPolicy(min_inliers=15, saturation=60, evidence=0.0)
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    inliers = [3, 40, None, 90, 14]
    # 90 and 40 inliers verify (90 saturates to 60 > 40); 3, None and 14 keep global order
    assert policy.order(scores, inliers) == [3, 1, 0, 2, 4]


def test_inliers_below_the_threshold_tip_close_global_scores() -> None:
    policy = SpatialPolicy(min_inliers=10, evidence=0.04)  # 9 inliers: +0.24
    scores = [0.80, 0.78, 0.70, 0.60, 0.50]
    # 9 inliers (6 beyond chance: +0.24) lift 0.60 over 0.80 but stay below a verified one;
    # 3 inliers are what any affine map fits: no evidence; None was not checked
    inliers: list[int | None] = [3, None, 0, 9, 10]
    assert policy.order(scores, inliers) == [4, 3, 0, 1, 2]
    assert policy.adjusted(0.6, 9) == pytest.approx(0.84)
    assert policy.adjusted(0.6, None) == policy.adjusted(0.6, 2) == 0.6


def test_saturated_candidates_are_ordered_by_their_global_score() -> None:
    policy = SpatialPolicy(min_inliers=15, saturation=60)
    assert policy.order([0.5, 0.9], [200, 61]) == [1, 0]


def test_no_verification_changes_nothing() -> None:
    assert SpatialPolicy().order([0.9, 0.9, 0.1], [None, 0, 3]) == [0, 1, 2]
    with pytest.raises(ValueError):
        SpatialPolicy().order([0.9], [])


@pytest.mark.parametrize(
    ("hamming", "cosine", "inliers", "tier", "asked"),
    [
        (2, 0.97, None, DuplicateTier.BOTH, False),  # both tiers: no verification needed
        (30, 0.40, 500, None, False),  # below the floor geometry is not asked
        (4, 0.60, None, None, True),  # the hash alone, not yet verified
        (4, 0.60, 25, DuplicateTier.GEOMETRY, True),
        (30, 0.95, 19, None, True),
        (30, 0.95, 20, DuplicateTier.GEOMETRY, True),
        (30, 0.70, 60, DuplicateTier.GEOMETRY, True),  # neither tier: a crop, verified
        (None, 0.95, 40, DuplicateTier.GEOMETRY, True),  # no hash known
    ],
)
def test_duplicate_tiers(
    hamming: int | None,
    cosine: float,
    inliers: int | None,
    tier: DuplicateTier | None,
    asked: bool,
) -> None:
    policy = DuplicatePolicy(max_hamming=10, min_cosine=0.9, min_inliers=20, geometry_floor=0.5)
    assert policy.decide(hamming, cosine, inliers) == tier
    assert policy.needs_geometry(hamming, cosine) == asked


def test_expansion_averages_the_query_with_the_verified_results_only() -> None:
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    verified = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    expanded = expanded_query(query, verified)
    assert np.allclose(expanded, np.full(3, 1 / np.sqrt(3)), atol=1e-6)
    assert np.isclose(np.linalg.norm(expanded), 1.0)
    # nothing verified: the query as it was
    assert expanded_query(query, np.zeros((0, 3), np.float32)) is query
