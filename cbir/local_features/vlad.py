"""VLAD (Jégou et al., 2010; normalisation of Arandjelović and Zisserman, 2013): an image's
local descriptors assigned to their nearest codeword of a k-means codebook, the residuals
summed per codeword, then power-normalised (signed square root), intra-normalised (each
codeword's block to unit length), L2-normalised and PCA-whitened to D dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cbir.local_features.features import LocalFeatures
from cbir.models.runtime import VladModel, vlad_aggregate


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


def train(
    images: Sequence[LocalFeatures],
    words: int = 64,
    dim: int = 256,
    sample: int = 100_000,
    seed: int = 0,
    shrinkage: float = 0.1,
) -> VladModel:
    """The codebook from `sample` descriptors drawn from `images`, then the PCA whitening
    learned on the images' VLADs (eigenvalues shrunk toward their mean by `shrinkage`, which
    keeps the weakest kept components from being amplified into noise)."""
    with_keypoints = [f for f in images if len(f)]
    if len(with_keypoints) < 2:
        raise ValueError("VLAD needs the local features of at least two images with keypoints")
    pool = np.concatenate([f.rootsift() for f in with_keypoints])
    rng = np.random.default_rng(seed)
    if len(pool) > sample:
        pool = pool[rng.choice(len(pool), sample, replace=False)]
    codebook = train_codebook(pool, words, seed)
    vlads = np.stack([vlad_aggregate(f.rootsift(), codebook) for f in images])
    dim = min(dim, len(vlads) - 1, vlads.shape[1])
    mean = vlads.mean(0)
    _, singular, vt = np.linalg.svd(vlads - mean, full_matrices=False)
    # each component's sign fixed, so that a refit on the same data gives the same bytes
    signs = np.sign(vt[np.arange(dim), np.argmax(np.abs(vt[:dim]), axis=1)])
    variances = singular[:dim] ** 2 / max(len(vlads) - 1, 1)
    variances = (1 - shrinkage) * variances + shrinkage * variances.mean()
    projection = (vt[:dim].T * signs / np.sqrt(variances)).astype(np.float32)
    return VladModel(codebook, mean.astype(np.float32), projection)


def describe(model: VladModel, features: LocalFeatures) -> np.ndarray:
    return model.describe(features.rootsift())
