"""`cbir model export`, in-process: timm models with seeded random weights (the hub is not
reachable here), and the shared MobileNet as your own ONNX file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cbir.domain.gate import TrainedOn
from cbir.models.export import (
    TRAINED_ON_FILE,
    ExportError,
    PcaOptions,
    export_model,
    record_trained_on,
    trained_on,
)
from cbir.models.runtime import OnnxEmbedder, Pooling
from cbir.models.shared_mobilenet import PREPROCESSING as MOBILENET_PREPROCESSING
from cbir.models.shared_mobilenet import export_shared_mobilenet

VIT = "vit_tiny_patch16_224"  # the ViT-B/16 design at a size a test can afford


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def vit_entries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("vit")
    for pooling in ("cls", "gem"):
        export_model(
            repository,
            f"vit_{pooling}",
            1,
            timm_arch=VIT,
            weights="random",
            seed=0,
            pooling=Pooling(pooling),
        )
    return repository


def test_the_same_inputs_give_the_same_entry(
    tmp_path: Path, mobilenet_onnx: Path, vit_entries: Path
) -> None:
    export_shared_mobilenet(tmp_path / "a", mobilenet_onnx)
    export_shared_mobilenet(tmp_path / "b", mobilenet_onnx)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    export_model(
        tmp_path / "c",
        "vit_cls",
        1,
        timm_arch=VIT,
        weights="random",
        seed=0,
        pooling=Pooling("cls"),
    )
    assert tree_digest(tmp_path / "c" / "vit_cls") == tree_digest(vit_entries / "vit_cls")


def test_cls_and_gem_pooling_give_different_descriptors(
    vit_entries: Path, flower_photos: list[Path]
) -> None:
    images = [p.read_bytes() for p in flower_photos]
    cls_vectors, _ = OnnxEmbedder(vit_entries / "vit_cls" / "1").embed(images)
    gem_vectors, _ = OnnxEmbedder(vit_entries / "vit_gem" / "1").embed(images)
    assert cls_vectors.shape == gem_vectors.shape == (len(images), 192)
    np.testing.assert_allclose(np.linalg.norm(gem_vectors, axis=1), 1.0, rtol=1e-5)
    cosines = np.sum(cls_vectors * gem_vectors, axis=1)
    assert np.all(cosines < 0.9), cosines


def test_pca_gives_the_requested_dimension_and_unit_norm(
    tmp_path: Path, mobilenet_onnx: Path, shared_dir: Path, flower_photos: list[Path]
) -> None:
    options = PcaOptions(
        dim=32, whiten=True, images=shared_dir / "data" / "flowers17" / "3", sample=60
    )
    spec = export_model(
        tmp_path,
        "mobilenet_pca",
        1,
        onnx_file=mobilenet_onnx,
        preprocessing=MOBILENET_PREPROCESSING,
        pca=options,
    )
    assert (spec.feature_dim, spec.dim, spec.pca_whiten) == (1024, 32, True)
    assert spec.model_id.startswith("mobilenet_pca:1:32d:gap:")
    vectors, errors = OnnxEmbedder(tmp_path / "mobilenet_pca" / "1").embed(
        [p.read_bytes() for p in flower_photos]
    )
    assert vectors.shape == (len(flower_photos), 32) and not any(errors)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_the_hub_offline_says_how_to_use_a_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without the hub
    with pytest.raises(ExportError, match=r"--weights /path/to/model\.safetensors"):
        export_model(tmp_path, "resnet", 1, timm_arch="resnet18", weights="hub")


def test_a_pooling_that_does_not_fit_the_output_is_an_error(
    tmp_path: Path, mobilenet_onnx: Path
) -> None:
    with pytest.raises(ExportError, match="pooling cls does not fit"):
        export_model(
            tmp_path,
            "bad",
            1,
            onnx_file=mobilenet_onnx,
            preprocessing=MOBILENET_PREPROCESSING,
            pooling=Pooling("cls"),
        )


def test_a_trained_head_makes_an_entry_of_its_own(tmp_path: Path, mobilenet_onnx: Path) -> None:
    from cbir.models.export import export_with_head
    from cbir.models.runtime import Head
    from cbir.training.trainer import embed_with

    base = export_shared_mobilenet(tmp_path, mobilenet_onnx)
    # entries exported before heads existed keep their model id
    assert base.model_id == "mobilenet:1:1024d:gap:0ec2d6d83618"
    rng = np.random.default_rng(0)
    head = Head((rng.normal(size=(64, 1024)).astype(np.float32),), (np.zeros(64, np.float32),))
    # a base exported by an older release carries an older runtime: the new entry does not
    (tmp_path / "mobilenet" / "1" / "embedding_runtime.py").write_text("# an older runtime\n")
    spec = export_with_head(tmp_path, "mobilenet", "mobilenet-trained", 1, head, "a test")
    runtime = Path(__file__).parents[4] / "cbir" / "models" / "runtime.py"
    copied = tmp_path / "mobilenet-trained" / "1" / "embedding_runtime.py"
    assert copied.read_text() == runtime.read_text()
    assert spec.dim == 64 and spec.head == "linear 1024-64"
    assert spec.model_id.startswith("mobilenet-trained:1:64d:gap:")
    assert spec.fingerprint() != base.fingerprint()
    photos = sorted((mobilenet_onnx.parents[1] / "data" / "flowers17" / "0").iterdir())[:3]
    images = [p.read_bytes() for p in photos]
    frozen, _ = OnnxEmbedder(tmp_path / "mobilenet" / "1").embed(images)
    trained, errors = OnnxEmbedder(tmp_path / "mobilenet-trained" / "1").embed(images)
    assert not any(errors)
    np.testing.assert_allclose(trained, embed_with(head, frozen), atol=1e-5)
    with pytest.raises(ExportError, match="a name of its own"):
        export_with_head(tmp_path, "mobilenet", "mobilenet", 1, head, "a test")
    with pytest.raises(ExportError, match="already has a trained head"):
        export_with_head(tmp_path, "mobilenet-trained", "again", 1, head, "a test")


def test_what_an_entry_was_trained_on_is_kept_beside_its_served_version(tmp_path: Path) -> None:
    trained = TrainedOn("flowers17", ("a", "b"), frozenset({"x"}), held_out=1)
    assert trained_on(tmp_path, "flv1") is None  # no such entry
    (tmp_path / "flv1" / "1").mkdir(parents=True)
    assert trained_on(tmp_path, "flv1") is None  # not trained here
    record_trained_on(tmp_path, "flv1", 1, trained)
    assert trained_on(tmp_path, "flv1") == trained
    (tmp_path / "flv1" / "2").mkdir()  # a newer version serves: trained on nothing known
    assert trained_on(tmp_path, "flv1") is None
    (tmp_path / "flv1" / "2" / TRAINED_ON_FILE).write_text("{")
    with pytest.raises(ExportError, match="export the model again"):
        trained_on(tmp_path, "flv1")


def test_the_provider_goes_into_the_entry_config(tmp_path: Path, mobilenet_onnx: Path) -> None:
    export_shared_mobilenet(tmp_path, mobilenet_onnx)
    assert 'key: "provider", value: { string_value: "auto" }' in (
        (tmp_path / "mobilenet" / "config.pbtxt").read_text()
    )
    export_model(
        tmp_path,
        "vit_cpu",
        1,
        timm_arch=VIT,
        weights="random",
        pooling=Pooling("cls"),
        provider="cpu",
    )
    assert 'string_value: "cpu"' in (tmp_path / "vit_cpu" / "config.pbtxt").read_text()
    with pytest.raises(ExportError, match="--provider tpu: say one of auto, cpu, cuda"):
        export_model(tmp_path, "vit_tpu", 1, timm_arch=VIT, weights="random", provider="tpu")
