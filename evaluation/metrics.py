"""Retrieval metrics on ranked lists, pure numpy.

A ranking is judged by its relevance vector: relevant[i] is True when the item at rank i+1 is
relevant to the query. `total_relevant` counts every relevant item in the collection, retrieved
or not (recall and AP need it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def precision_at_k(relevant: np.ndarray, k: int) -> float:
    return float(np.sum(relevant[:k])) / k


def recall_at_k(relevant: np.ndarray, k: int, total_relevant: int) -> float:
    return float(np.sum(relevant[:k])) / total_relevant if total_relevant else 0.0


def average_precision(relevant: np.ndarray, total_relevant: int) -> float:
    """Mean of the precision at each relevant item's rank, over all relevant items."""
    if total_relevant == 0:
        return 0.0
    hits = np.flatnonzero(relevant)
    precisions = np.arange(1, len(hits) + 1) / (hits + 1)
    return float(precisions.sum()) / total_relevant


@dataclass(frozen=True)
class LeaveOneOut:
    mean_average_precision: float
    precision_at: dict[int, float]


def leave_one_out(
    embeddings: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 10)
) -> LeaveOneOut:
    """Every item queries all the others by cosine similarity (exhaustive search).

    Embeddings must be L2-normalised; ties are broken by index, so results are reproducible.
    """
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :-1]  # the query itself is last
    relevant = labels[order] == labels[:, None]
    totals = relevant.sum(axis=1)
    ap = [average_precision(relevant[i], int(totals[i])) for i in range(len(labels))]
    return LeaveOneOut(
        mean_average_precision=float(np.mean(ap)),
        precision_at={k: float(np.mean([precision_at_k(r, k) for r in relevant])) for k in ks},
    )
