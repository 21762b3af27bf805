"""Fine-tuning a backbone's last stages with the head, where torch weights exist (a timm
checkpoint, or the hub where reachable).

The network is cut in two: the frozen trunk runs once over every image (its activations
kept for the run, in half precision), and the last `unfreeze` stages, global average
pooling, L2-normalisation and the projection head train on them, so an epoch costs the last
stages alone. Batch normalisation keeps its running statistics (P x K batches are too small
to estimate them), its affine parameters train. The fine-tuned network is exported with the
head as one Triton entry, like every other model.

ResNet-family timm models (stages `layer1` to `layer4`) are supported; others say so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cbir.models.runtime import Preprocessing, decode_image, to_input
from cbir.training.trainer import ProjectionHead, TrainingError, TrainOptions

STAGES = ("layer1", "layer2", "layer3", "layer4")


@dataclass
class Split:
    """A network cut before its last `unfreeze` stages."""

    trunk: nn.Sequential  # frozen
    tail: nn.Sequential  # trained


def split(model: Any, unfreeze: int) -> Split:
    if not all(hasattr(model, stage) for stage in STAGES):
        raise TrainingError(
            f"fine-tuning the last stages needs a ResNet-family timm model (stages "
            f"{', '.join(STAGES)}); {type(model).__name__} is not one: train a head on its "
            "descriptors instead (cbir model export it, then cbir train --model NAME)"
        )
    if not 1 <= unfreeze <= len(STAGES):
        raise TrainingError(f"--unfreeze is 1 to {len(STAGES)} stages, not {unfreeze}")
    stem = [model.conv1, model.bn1, model.act1, model.maxpool]
    stages = [getattr(model, stage) for stage in STAGES]
    trunk = nn.Sequential(*stem, *stages[: len(STAGES) - unfreeze])
    tail = nn.Sequential(*stages[len(STAGES) - unfreeze :])
    for parameter in trunk.parameters():
        parameter.requires_grad_(False)
    return Split(trunk, tail)


class TailAndHead(nn.Module):
    """The trained part: the last stages, GAP, L2, the head (which L2-normalises). What the
    exported entry computes from the trunk's activations, so that training and serving agree:
    the runtime pools (GAP), normalises, then applies the head."""

    def __init__(self, tail: nn.Sequential, head: ProjectionHead) -> None:
        super().__init__()
        self.tail = tail
        self.head = head

    def train(self, mode: bool = True) -> TailAndHead:
        super().train(mode)
        self.tail.eval()  # batch norm keeps its running statistics
        return self

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        pooled = self.tail(activations).mean(dim=(2, 3))
        return self.head(nn.functional.normalize(pooled, dim=1))


def trunk_activations(
    trunk: nn.Sequential,
    images: Sequence[bytes],
    preprocessing: Preprocessing,
    progress: Callable[[int], None] = lambda _: None,
    chunk: int = 16,
) -> np.ndarray:
    """The frozen trunk's output for every image, float16 (N, C, H, W)."""
    trunk.eval()
    side = (
        preprocessing.resize_shorter
        if preprocessing.resize == "shorter_side_crop"
        else preprocessing.input_size
    )
    parts = []
    with torch.no_grad():
        for start in range(0, len(images), chunk):
            batch = np.stack(
                [
                    to_input(decode_image(data, side), preprocessing)
                    for data in images[start : start + chunk]
                ]
            )
            parts.append(trunk(torch.from_numpy(batch)).numpy().astype(np.float16))
            progress(len(batch))
    return np.concatenate(parts)


def tail_and_head(
    split_model: Split, activations: np.ndarray, options: TrainOptions
) -> TailAndHead:
    """The module `training.trainer.train` trains (its `model=`)."""
    with torch.no_grad():
        channels = split_model.tail(torch.from_numpy(activations[:1].astype(np.float32))).shape[1]
    torch.manual_seed(options.seed)
    head = ProjectionHead(options.head, int(channels), options.dim, options.hidden)
    return TailAndHead(split_model.tail, head)
