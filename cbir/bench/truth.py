"""The exact ground truth of an ANN benchmark: brute-force nearest neighbours by inner
product, shared by the synthetic and the real-descriptor sets."""

from __future__ import annotations

import numpy as np


def exact_neighbours(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The true k nearest (inner product) of each query, best first, by brute force."""
    result = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ base.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        result[start : start + 256] = np.take_along_axis(top, order, 1)
    return result
