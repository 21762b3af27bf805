"""Metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cbir.evaluation.metrics import (
    average_precision,
    average_precision_at_k,
    evaluate,
    exhaustive_rankings,
    interpolated_precision,
    leave_one_out,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from cbir.evaluation.rerank import alpha_query_expansion, normalise, rescore


def test_perfect_reversed_and_empty_rankings() -> None:
    perfect = np.array([1, 1, 0, 0], dtype=bool)
    reversed_ = np.array([0, 0, 1, 1], dtype=bool)
    assert average_precision(perfect, 2) == 1.0
    assert average_precision(reversed_, 2) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert average_precision(np.zeros(4, dtype=bool), 0) == 0.0
    assert precision_at_k(reversed_, 2) == 0.0
    assert recall_at_k(reversed_, 3, 2) == 0.5


def test_relevant_items_never_retrieved_lower_ap() -> None:
    ranking = np.array([1, 0, 1], dtype=bool)  # a third relevant item was not retrieved
    assert average_precision(ranking, 3) == pytest.approx((1 + 2 / 3) / 3)


def test_leave_one_out_on_two_clean_clusters() -> None:
    embeddings = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]], dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    result = leave_one_out(embeddings, np.array([0, 0, 1, 1]), ks=(1, 2))
    assert result.mean_average_precision == 1.0
    assert result.precision_at == {1: 1.0, 2: 0.5}


def test_map_at_k_and_ndcg_by_hand() -> None:
    ranking = np.array([0, 1, 1, 0, 1], dtype=bool)  # 3 relevant retrieved, 4 in total
    assert average_precision_at_k(ranking, 3, 4) == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert average_precision_at_k(ranking, 5, 4) == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 4)
    dcg = 1 / np.log2(3) + 1 / np.log2(4)
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert ndcg_at_k(ranking, 3, 4) == pytest.approx(dcg / ideal)
    perfect = np.array([1, 1, 0, 0], dtype=bool)
    assert ndcg_at_k(perfect, 4, 2) == 1.0 and average_precision_at_k(perfect, 1, 2) == 1.0
    assert ndcg_at_k(np.zeros(3, dtype=bool), 3, 0) == 0.0


def test_ties_are_broken_by_index_reproducibly() -> None:
    tied = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    rankings = exhaustive_rankings(tied)
    assert rankings[0].tolist() == [1, 2, 3] and rankings[2].tolist() == [0, 1, 3]


def test_interpolated_precision_curve_by_hand() -> None:
    ranking = np.array([1, 0, 1, 0], dtype=bool)  # precision 1, .5, .67, .5; recall .5, .5, 1, 1
    curve = interpolated_precision(ranking, 2)
    assert curve[0] == 1.0 and curve[5] == 1.0  # recall up to 0.5: best precision after is 1
    assert curve[6] == pytest.approx(2 / 3) and curve[10] == pytest.approx(2 / 3)
    assert interpolated_precision(np.array([0, 1], dtype=bool), 2)[10] == 0.0  # never reached


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_metrics_agree_with_scikit_learn(seed: int) -> None:
    from sklearn.metrics import average_precision_score, ndcg_score

    rng = np.random.default_rng(seed)
    truth = rng.random(50) < 0.3
    scores = rng.random(50)  # distinct: no ties
    order = np.argsort(-scores)
    ranking = truth[order]
    total = int(truth.sum())
    # with every item ranked, AP is scikit-learn's average precision
    assert average_precision(ranking, total) == pytest.approx(
        average_precision_score(truth, scores)
    )
    for k in (1, 5, 10, 50):
        assert ndcg_at_k(ranking, k, total) == pytest.approx(
            ndcg_score(truth[None, :].astype(float), scores[None, :], k=k)
        )


def test_evaluate_reports_every_metric_and_no_relevant_items_count_as_zero() -> None:
    relevant = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)
    report = evaluate(relevant, [2, 0], ks=(1, 4))
    assert report.queries == 2
    assert report.mean_average_precision == pytest.approx(((1 + 2 / 3) / 2 + 0) / 2)
    assert report.precision_at == {1: 0.5, 4: 0.25}
    assert report.recall_at == {1: 0.25, 4: 0.5}
    assert set(report.as_dict()) >= {"mAP", "mAP@1", "P@4", "R@4", "NDCG@4", "pr_curve"}


def test_exact_rescoring_repairs_an_approximate_order() -> None:
    vectors = normalise(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.5, 0.5]], dtype=np.float32))
    query = vectors[:1]
    approximate = np.array([[2, 3, 1]])  # a quantised index got the order wrong
    ids, scores = rescore(query, approximate, vectors)
    assert ids.tolist() == [[1, 3, 2]]
    assert np.all(np.diff(scores[0]) <= 0)
    holes = rescore(query, np.array([[-1, 2, -1, 1]]), vectors)[0]  # the index returned two
    assert holes.tolist() == [[1, 2, -1, -1]]


def test_query_expansion_moves_the_query_towards_its_neighbours() -> None:
    vectors = normalise(np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], dtype=np.float32))
    query = vectors[:1]
    expanded = alpha_query_expansion(query, np.array([[1, 2]]), vectors, n=1, alpha=3.0)
    assert np.linalg.norm(expanded) == pytest.approx(1.0)
    assert float(expanded[0] @ vectors[1]) > float(query[0] @ vectors[1])  # closer to the neighbour
    assert float(expanded[0] @ vectors[2]) == pytest.approx(0.0)  # the second one was not used
    untouched = alpha_query_expansion(query, np.array([[2, 1]]), vectors, n=1)  # orthogonal: 0^3
    assert np.allclose(untouched, query)
