"""Learned whitening (Radenović, Tolias and Chum, 2018): a closed-form linear metric learned
from labels. Whiten by the within-class covariance (shrunk towards a multiple of the
identity, which is what lets it carry over to classes it has not seen), then rotate to the
principal directions of the whitened data and keep `dim` of them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbir.evaluation.metrics import leave_one_out
from cbir.training.splits import split


def learned_whitening(
    features: np.ndarray, labels: np.ndarray, dim: int, shrinkage: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(weight (dim, d), bias (dim,)) of the projection x -> weight @ x + bias."""
    data = features.astype(np.float64)
    if dim > data.shape[1]:
        raise ValueError(f"whitening to {dim} dimensions needs {dim} features, not {data.shape[1]}")
    mean = data.mean(axis=0)
    within = np.concatenate(
        [data[labels == c] - data[labels == c].mean(0) for c in np.unique(labels)]
    )
    covariance = within.T @ within / max(1, len(within))
    scale = np.trace(covariance) / covariance.shape[0]
    values, vectors = np.linalg.eigh(covariance + shrinkage * scale * np.eye(len(covariance)))
    whiten = vectors / np.sqrt(values)[None, :]  # (d, d): the within-class covariance^-1/2
    spread, directions = np.linalg.eigh(np.cov(((data - mean) @ whiten).T))
    order = np.argsort(spread)[::-1][:dim]
    rotation = directions[:, order]
    # a fixed sign per direction, so that the same data gives the same bytes
    rotation *= np.sign(rotation[np.argmax(np.abs(rotation), axis=0), np.arange(dim)])
    weight = (whiten @ rotation).T
    return weight.astype(np.float32), (-weight @ mean).astype(np.float32)


SHRINKAGES = (0.3, 1.0, 3.0, 10.0)


def choose_shrinkage(
    features: np.ndarray,
    labels: np.ndarray,
    dim: int,
    candidates: Sequence[float] = SHRINKAGES,
    folds: int = 3,
    seed: int = 0,
) -> float:
    """The shrinkage that carries over best to classes it was not fitted on, judged on the
    training data alone: each candidate is fitted on half of the training classes and scored
    (mAP over the unwhitened mAP) on the other half, over `folds` class splits."""

    def whitened(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        out = x @ weight.T + bias
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    folds_made = [split(labels, "class-disjoint", seed + 100 + fold) for fold in range(folds)]
    best, best_score = candidates[0], -np.inf
    for shrinkage in candidates:
        ratios = []
        for fit, held in folds_made:
            weight, bias = learned_whitening(features[fit], labels[fit], dim, shrinkage)
            before = leave_one_out(features[held], labels[held]).mean_average_precision
            after = leave_one_out(whitened(features[held], weight, bias), labels[held])
            ratios.append(after.mean_average_precision / max(before, 1e-12))
        score = float(np.mean(ratios))
        if score > best_score:
            best, best_score = shrinkage, score
    return best
