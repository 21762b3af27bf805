"""The same-object benchmark's orderings: verified results first, the expanded query's
neighbours after them, the query itself never."""

from __future__ import annotations

import numpy as np

from cbir.bench.holidays import expanded_ranking, quality, spatial_order


def test_spatial_order_moves_verified_candidates_first_and_keeps_the_rest() -> None:
    ranking = np.array([5, 3, 8, 1, 9])
    scores = np.linspace(1.0, 0.0, 10)
    inliers = {5: 2, 3: 40, 8: 20}  # 5 below the threshold: it verifies nothing
    assert spatial_order(ranking, scores, inliers, depth=3).tolist() == [3, 8, 5, 1, 9]


def test_expansion_puts_verified_first_then_the_expanded_querys_neighbours() -> None:
    # 0 is the query; 1 is verified; 2 is close to 1 but not to 0; 3 close to nothing
    embeddings = np.array(
        [[1, 0, 0], [0.6, 0.8, 0], [0, 1, 0], [0, 0, 1], [0.7, 0, 0.7]], dtype=np.float32
    )
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    scores = embeddings @ embeddings[0]
    row, expanded = expanded_ranking(0, embeddings, [1], {1: 50}, scores, length=4)
    assert row.tolist() == [1, 4, 2, 3]  # verified, then by the expanded query; never 0
    # the expanded query is nearer to 2 (a view the first vector missed) than the first was
    assert expanded[2] > scores[2]


def test_quality_counts_only_same_scene_photographs_as_relevant() -> None:
    labels = np.array([0, 0, 1, 2])
    rankings = np.array([[1, 2, 3], [2, 0, 3]])
    found = quality(
        np.pad(rankings, ((0, 0), (0, 97)), constant_values=3), labels, np.array([0, 1])
    )
    assert found["P@1"] == 0.5 and found["R@100"] == 1.0
