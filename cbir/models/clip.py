"""CLIP from open_clip as two Triton entries that share one space: the image tower (`NAME`,
an image model like any other, which `cbir re-embed` indexes with) and the text tower
(`NAME-text`, words in: the tokenizer runs inside it), whose config names the image tower's
model id (`pairs_with`), so that the API searches a collection by words only with the text
tower of the model that made its vectors.

Weights: `random` (a seed; offline tests of the plumbing), a pretrained tag of the arch from
the hub (`hub` takes its first, e.g. ViT-B-32 `laion2b_s34b_b79k`; needs a network), or a
checkpoint file (open_clip_pytorch_model.bin / .safetensors, downloaded elsewhere).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cbir.domain.models import text_entry
from cbir.models.export import ExportError, export_model, file_sha256, install
from cbir.models.runtime import (
    ONNX_FILE,
    PROVIDER_CHOICES,
    SPEC_FILE,
    VOCAB_FILE,
    ClipTokenizer,
    ModelSpec,
    OnnxEmbedder,
    Pooling,
    Preprocessing,
    TextSpec,
)

log = logging.getLogger("cbir.models")
# strings the export tokenizes with open_clip's tokenizer and with ours: they must agree
TOKENIZER_CHECK = ("a photo of a red car at night", "Café & naïve façade, 東京!", "it's 3.14")


def clip_model(arch: str, weights: str, seed: int) -> tuple[Any, str]:
    """An open_clip model in eval mode, and where its weights came from."""
    try:
        import open_clip
        import torch
    except ImportError as exc:
        raise ExportError(
            f"exporting CLIP needs torch and open_clip_torch ({exc}): pip install -e '.[export]'"
        ) from exc
    if arch not in open_clip.list_models():
        raise ExportError(f"--clip {arch}: open_clip has no such model (`open_clip.list_models()`)")
    text_config = (open_clip.get_model_config(arch) or {}).get("text_cfg", {})
    cleaning = (text_config.get("tokenizer_kwargs") or {}).get("clean", "lower")
    if text_config.get("hf_tokenizer_name") or cleaning != "lower":
        raise ExportError(
            f"{arch} tokenizes with {text_config.get('hf_tokenizer_name') or cleaning}: only "
            "CLIP's own BPE tokenizer runs inside the text entry (e.g. ViT-B-32, ViT-B-16, "
            "ViT-L-14, RN50, MobileCLIP-S1)"
        )
    torch.manual_seed(seed)
    if weights == "random":
        pretrained, source = None, f"random seed={seed}"
    elif Path(weights).is_file():
        pretrained, source = weights, f"checkpoint sha256={file_sha256(Path(weights))}"
    else:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        pretrained = tags[0] if weights == "hub" and tags else weights
        if pretrained not in tags:
            raise ExportError(
                f"--weights {weights}: not a file, and {arch} has no pretrained tag of that name "
                f"(it has: {', '.join(tags) or 'none'}; or say random)"
            )
        source = f"hub:{pretrained}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = open_clip.create_model(arch, pretrained=pretrained)
    except Exception as exc:
        raise ExportError(
            f"could not load the {arch} weights {pretrained} ({type(exc).__name__}: {exc}). "
            "Offline? Download the checkpoint (open_clip_pytorch_model.bin) elsewhere and pass "
            "it with --weights /path/to/file"
        ) from exc
    model.eval()
    return model, f"open_clip:{arch} weights={source}"


def clip_preprocessing(model: Any) -> Preprocessing:
    """The image tower's input, from open_clip's own config: the shorter side resized to the
    input size (bicubic), the centre cropped, CLIP's mean and std."""
    config = model.visual.preprocess_cfg
    size = int(config["size"][0] if isinstance(config["size"], tuple | list) else config["size"])
    if config.get("resize_mode", "shortest") != "shortest":
        raise ExportError(f"resize mode {config['resize_mode']}: only 'shortest' is supported")
    return Preprocessing(
        input_size=size,
        resize="shorter_side_crop",
        resize_shorter=size,
        interpolation="bicubic" if config.get("interpolation") == "bicubic" else "bilinear",
        mean=tuple(float(v) for v in config["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in config["std"]),  # type: ignore[arg-type]
    )


def _onnx(module: Any, example: Any, path: Path, input_name: str) -> None:
    import torch

    # nn.MultiheadAttention's fused inference path has no ONNX export: the plain one does
    # the same arithmetic
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=["embedding"],
            dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    torch.backends.mha.set_fastpath_enabled(fastpath)


def export_clip(
    repository: Path,
    name: str,
    version: int,
    arch: str,
    weights: str = "hub",
    seed: int = 0,
    instances: int | None = None,
    provider: str = "auto",
) -> tuple[ModelSpec, ModelSpec]:
    """Write the image tower `repository/name/` and the text tower `repository/name-text/`;
    returns their specs."""
    if provider not in PROVIDER_CHOICES:
        raise ExportError(f"--provider {provider}: say one of {', '.join(PROVIDER_CHOICES)}")
    model, source = clip_model(arch, weights, seed)
    import open_clip
    import torch

    class Tower(torch.nn.Module):
        """One of the model's two encoders, the model a submodule (its weights parameters)."""

        def __init__(self, text: bool) -> None:
            super().__init__()
            self.clip, self.text = model, text

        def forward(self, inputs: Any) -> Any:
            return self.clip.encode_text(inputs) if self.text else self.clip.encode_image(inputs)

    preprocessing = clip_preprocessing(model)
    vocab = Path(open_clip.tokenizer.default_bpe())
    tokenizer = ClipTokenizer(vocab)
    context = int(model.context_length)
    ours = tokenizer(list(TOKENIZER_CHECK), context)
    theirs = open_clip.get_tokenizer(arch)(list(TOKENIZER_CHECK)).numpy()
    if not np.array_equal(ours, theirs):
        raise ExportError(
            f"the runtime's tokenizer differs from open_clip's on {arch}'s vocabulary"
        )
    repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=repository, prefix=f".{name}-clip-") as scratch:
        image_onnx = Path(scratch) / "image.onnx"
        size = preprocessing.input_size
        _onnx(Tower(text=False).eval(), torch.zeros(1, 3, size, size), image_onnx, "pixels")
        image = export_model(
            repository,
            name,
            version,
            onnx_file=image_onnx,
            preprocessing=preprocessing,
            pooling=Pooling("none"),
            instances=instances,
            provider=provider,
            source=source,
        )
        staged = Path(scratch) / str(version)
        staged.mkdir()
        _onnx(Tower(text=True).eval(), torch.from_numpy(ours[:1]), staged / ONNX_FILE, "tokens")
        shutil.copyfile(vocab, staged / VOCAB_FILE)
        text = ModelSpec(
            name=text_entry(name),
            version=version,
            source=f"{source} (text tower)",
            onnx_input="tokens",
            onnx_output="embedding",
            feature_dim=image.dim,
            dim=image.dim,
            pooling=Pooling("none"),
            onnx_sha256=file_sha256(staged / ONNX_FILE),
            text=TextSpec(image.model_id, context, file_sha256(staged / VOCAB_FILE)),
        )
        (staged / SPEC_FILE).write_text(text.to_json())
        served_dim = OnnxEmbedder(staged).embed_texts(["a photo"])[0].shape[1]
        if served_dim != image.dim:
            raise ExportError(
                f"{arch}: the text tower gives {served_dim} dimensions, the image's {image.dim}"
            )
        install(staged, repository / text.name, text, instances, "TEXT", provider)
    log.info("exported CLIP", extra={"image": image.model_id, "text": text.model_id})
    return image, text
