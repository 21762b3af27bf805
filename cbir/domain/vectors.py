"""Embeddings as arrays: float32, one row per image."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]  # (N, dim), or (dim,) for one
