"""Fine-tuning a backbone's last stage with the head (ResNet-18, seeded random weights: the
hub is not reachable here): the trunk frozen, the stage trained, and the exported entry
computing exactly what was trained."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cbir.models.export import export_model, timm_model, timm_preprocessing
from cbir.models.runtime import OnnxEmbedder, Pooling, decode_image, to_input
from cbir.training.backbone import split, tail_and_head, trunk_activations
from cbir.training.trainer import TrainingError, TrainOptions, embedded_by, train

OPTIONS = TrainOptions(epochs=2, dim=16, classes_per_batch=2, per_class=4, lr=1e-3)


def photos(shared_dir: Path) -> tuple[list[bytes], np.ndarray]:
    images, labels = [], []
    for label, species in enumerate(("0", "1")):
        for path in sorted((shared_dir / "data" / "flowers17" / species).iterdir())[:6]:
            images.append(path.read_bytes())
            labels.append(label)
    return images, np.array(labels)


def test_the_last_stage_trains_and_the_entry_computes_what_was_trained(
    shared_dir: Path, tmp_path: Path
) -> None:
    images, labels = photos(shared_dir)
    model, _ = timm_model("resnet18", "random", seed=0)
    preprocessing = timm_preprocessing(model)
    cut = split(model, unfreeze=1)
    trunk_before = [p.detach().clone() for p in cut.trunk.parameters()]
    tail_before = [p.detach().clone() for p in cut.tail.parameters()]
    activations = trunk_activations(cut.trunk, images, preprocessing)
    assert activations.dtype == np.float16 and activations.shape[:2] == (12, 256)

    module = tail_and_head(cut, activations, OPTIONS)
    trained = train(activations, labels, OPTIONS, model=module)
    assert len(trained.history) == 2
    assert all(torch.equal(a, b) for a, b in zip(trunk_before, cut.trunk.parameters(), strict=True))
    assert any(
        not torch.equal(a, b) for a, b in zip(tail_before, cut.tail.parameters(), strict=True)
    )

    spec = export_model(
        tmp_path, "ft", 1, timm_arch="resnet18", weights="random", seed=0,
        pooling=Pooling("gap"), model=model, head=trained.head,
    )  # fmt: skip
    assert spec.dim == 16 and spec.head == "linear 512-16"
    served, errors = OnnxEmbedder(tmp_path / "ft" / "1").embed(images[:3])
    assert not any(errors)
    side = preprocessing.resize_shorter
    with torch.no_grad():
        exact = cut.trunk(
            torch.from_numpy(
                np.stack([to_input(decode_image(d, side), preprocessing) for d in images[:3]])
            )
        ).numpy()
    np.testing.assert_allclose(served, embedded_by(module, exact), atol=1e-4)


def test_what_cannot_be_fine_tuned_says_what_to_do() -> None:
    vit, _ = timm_model("vit_tiny_patch16_224", "random", seed=0)
    with pytest.raises(TrainingError, match="ResNet-family"):
        split(vit, 1)
    resnet, _ = timm_model("resnet18", "random", seed=0)
    with pytest.raises(TrainingError, match="--unfreeze"):
        split(resnet, 5)
    cut = split(resnet, 1)
    module = tail_and_head(cut, np.zeros((1, 256, 14, 14), np.float16), OPTIONS)
    with pytest.raises(TrainingError, match="head alone"):
        train(
            np.zeros((8, 256, 14, 14), np.float32), np.array([0, 0, 0, 0, 1, 1, 1, 1]),
            replace(OPTIONS, init="whitening"), model=module,
        )  # fmt: skip
