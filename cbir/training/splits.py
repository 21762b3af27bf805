"""The two splits of the evaluation protocols (numpy only: no torch needed to name them).

- class-disjoint: train on half of the classes, evaluate on the other half;
- same-classes: train on half of each class's images, evaluate on the rest.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SplitProtocol = Literal["class-disjoint", "same-classes"]
PROTOCOLS: tuple[SplitProtocol, ...] = ("class-disjoint", "same-classes")


def split(
    labels: np.ndarray, protocol: SplitProtocol, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, evaluation indices)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if protocol == "class-disjoint":
        trained = rng.permutation(classes)[: len(classes) // 2]
        inside = np.isin(labels, trained)
        return np.flatnonzero(inside), np.flatnonzero(~inside)
    train_part, test_part = [], []
    for label in classes:
        members = rng.permutation(np.flatnonzero(labels == label))
        half = len(members) // 2
        train_part.append(members[:half])
        test_part.append(members[half:])
    return np.sort(np.concatenate(train_part)), np.sort(np.concatenate(test_part))
