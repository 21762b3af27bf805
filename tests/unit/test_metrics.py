"""Metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.metrics import average_precision, leave_one_out, precision_at_k, recall_at_k


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
