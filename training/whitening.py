"""Learned whitening (Radenović, Tolias and Chum, 2018): a closed-form linear metric learned
from labels. Whiten by the within-class covariance (shrunk towards a multiple of the
identity, which is what lets it carry over to classes it has not seen), then rotate to the
principal directions of the whitened data and keep `dim` of them."""

from __future__ import annotations

import numpy as np


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
