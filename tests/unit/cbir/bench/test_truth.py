"""The ANN benchmarks' ground truth is exact."""

from __future__ import annotations

import numpy as np

from cbir.bench.ann import clustered_vectors
from cbir.bench.truth import exact_neighbours


def test_the_ground_truth_is_exact() -> None:
    base = clustered_vectors(500, 32, seed=1)
    queries = clustered_vectors(20, 32, seed=2)
    truth = exact_neighbours(base, queries, 5)
    expected = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :5]
    assert np.array_equal(truth, expected)
    assert np.allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
