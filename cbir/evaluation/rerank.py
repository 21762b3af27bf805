"""Re-ranking after the first search (pure numpy), as the published design's online flow does.

- Exact re-scoring: the candidates an approximate index returned are scored again with the
  full-precision vectors and re-sorted. It changes nothing after an index that already scores
  with full vectors (FLAT, HNSW, IVF_FLAT) and repairs the order after a quantised one
  (IVF_SQ8, IVF_PQ, DiskANN's PQ navigation).
- Average query expansion, alpha-QE (Radenovic et al.): the query is replaced by the
  normalised sum of itself and its n best results, each weighted by its similarity to the
  query raised to alpha, and searched again.
"""

from __future__ import annotations

import numpy as np


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def rescore(
    queries: np.ndarray, candidates: np.ndarray, vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (queries, C) of ids into `vectors`, re-sorted by exact inner product with
    their query; the re-sorted ids and scores. Ties keep the index's order; holes (-1, where
    the index returned fewer) stay last."""
    valid = candidates >= 0
    scores = np.einsum("qd,qcd->qc", queries, vectors[np.where(valid, candidates, 0)])
    scores = np.where(valid, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, 1), np.take_along_axis(scores, order, 1)


def alpha_query_expansion(
    queries: np.ndarray,
    neighbours: np.ndarray,
    vectors: np.ndarray,
    n: int = 5,
    alpha: float = 3.0,
) -> np.ndarray:
    """Expanded queries from the first `n` results (ids into `vectors`, best first)."""
    top = vectors[neighbours[:, :n]]  # (queries, n, d)
    similarity = np.clip(np.einsum("qd,qnd->qn", queries, top), 0.0, None)
    weights = similarity**alpha
    return normalise(queries + np.einsum("qn,qnd->qd", weights, top))
