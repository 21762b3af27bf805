"""VLAD (Jégou et al., 2010; normalisation of Arandjelović and Zisserman, 2013): an image's
local descriptors assigned to their nearest codeword of a k-means codebook, the residuals
summed per codeword, then power-normalised (signed square root), intra-normalised (each
codeword's block to unit length), L2-normalised and PCA-whitened to D dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from local_features.features import DIM, LocalFeatures


def train_codebook(
    descriptors: np.ndarray, words: int, seed: int = 0, attempts: int = 1
) -> np.ndarray:
    """k-means (OpenCV, k-means++ seeding) of RootSIFT descriptors: (words, 128) float32."""
    if len(descriptors) < words:
        raise ValueError(f"{len(descriptors)} descriptors cannot make {words} codewords")
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-4)
    _, _, centres = cv2.kmeans(  # type: ignore[call-overload]  # None: labels are output
        descriptors.astype(np.float32), words, None, criteria, attempts, cv2.KMEANS_PP_CENTERS
    )
    return np.asarray(centres, np.float32)


def aggregate(descriptors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The normalised VLAD of one image's descriptors (n, 128): (words * 128,) float32; zeros
    for an image without keypoints."""
    words = len(codebook)
    vlad = np.zeros((words, DIM), np.float32)
    if len(descriptors):
        distances = (
            (descriptors**2).sum(1)[:, None] - 2 * descriptors @ codebook.T + (codebook**2).sum(1)
        )
        nearest = distances.argmin(1)
        np.add.at(vlad, nearest, descriptors - codebook[nearest])
    vlad = np.sign(vlad) * np.sqrt(np.abs(vlad))
    norms = np.linalg.norm(vlad, axis=1, keepdims=True)
    vlad = vlad / np.maximum(norms, 1e-12)
    flat = vlad.reshape(-1)
    return flat / max(float(np.linalg.norm(flat)), 1e-12)


@dataclass(frozen=True)
class Vlad:
    """A trained codebook and the PCA whitening of its VLADs."""

    codebook: np.ndarray  # (words, 128)
    mean: np.ndarray  # (words * 128,)
    projection: np.ndarray  # (words * 128, dim), whitening folded in

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    @classmethod
    def train(
        cls,
        images: Sequence[LocalFeatures],
        words: int = 64,
        dim: int = 256,
        sample: int = 100_000,
        seed: int = 0,
        shrinkage: float = 0.1,
    ) -> Vlad:
        """The codebook from `sample` descriptors drawn from `images`, then the PCA whitening
        learned on the images' VLADs (eigenvalues shrunk toward their mean by `shrinkage`,
        which keeps the weakest kept components from being amplified into noise)."""
        pool = np.concatenate([f.rootsift() for f in images if len(f)])
        rng = np.random.default_rng(seed)
        if len(pool) > sample:
            pool = pool[rng.choice(len(pool), sample, replace=False)]
        codebook = train_codebook(pool, words, seed)
        vlads = np.stack([aggregate(f.rootsift(), codebook) for f in images])
        dim = min(dim, len(vlads) - 1, vlads.shape[1])
        mean = vlads.mean(0)
        _, singular, vt = np.linalg.svd(vlads - mean, full_matrices=False)
        variances = singular[:dim] ** 2 / max(len(vlads) - 1, 1)
        variances = (1 - shrinkage) * variances + shrinkage * variances.mean()
        projection = (vt[:dim].T / np.sqrt(variances)).astype(np.float32)
        return cls(codebook, mean.astype(np.float32), projection)

    def describe(self, features: LocalFeatures) -> np.ndarray:
        """The whitened, L2-normalised VLAD of one image: (dim,) float32."""
        projected = (aggregate(features.rootsift(), self.codebook) - self.mean) @ self.projection
        return (projected / max(float(np.linalg.norm(projected)), 1e-12)).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, codebook=self.codebook, mean=self.mean, projection=self.projection)

    @classmethod
    def load(cls, path: Path) -> Vlad:
        with np.load(path) as data:
            return cls(data["codebook"], data["mean"], data["projection"])
