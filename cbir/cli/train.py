"""`cbir train`: a retrieval model learned from your labels (metric learning).

A projection head is trained on the frozen descriptors of a model Triton serves (computed
once through Triton and cached), with the design's triplet loss (per-query mean) or its
contrastive loss (cross-batch memory, KoLeo), then exported as a Triton entry of its own:
the base model's network and the head, with its own model id. `cbir re-embed NAME` then
switches the live index to it with zero downtime.

Needs the stack up (`cbir stack up`) for the base model's descriptors.
"""

from __future__ import annotations

import argparse
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

from rich.progress import Progress

from cbir.domain.errors import CbirError
from cbir.output import console
from cbir.settings import get_settings
from cbir.training import need_torch


class TrainCommandError(CbirError):
    """`cbir train` was asked for something it cannot do; the message says what to change."""


def shrinkage(text: str) -> float | None:
    """`--shrinkage`: a number, or auto (None)."""
    return None if text == "auto" else float(text)


def options_of(args: argparse.Namespace) -> Any:
    from cbir.training.trainer import TrainOptions

    return TrainOptions(
        loss=args.loss,
        mining=args.mining,
        reduction=args.reduction,
        margin=args.margin,
        beta=args.beta,
        memory=args.memory,
        koleo=args.koleo,
        head=args.head,
        dim=args.dim,
        hidden=args.hidden,
        init=args.init,
        shrinkage=args.shrinkage,
        epochs=args.epochs,
        classes_per_batch=args.classes_per_batch,
        per_class=args.per_class,
        lr=args.lr,
        seed=args.seed,
    )


def labelled(args: argparse.Namespace) -> Any:
    """The labelled images' descriptors: a folder per class, or the index's tagged images."""
    from cbir.adapters.embedder import TritonEmbedder
    from cbir.evaluation.run import EvalError, embed, load_dataset
    from cbir.training.sources import Labelled, from_index
    from cbir.wiring import Adapters

    settings = get_settings()
    cache_dir = settings.stack.home / "eval-cache"
    with Progress(console=console, transient=True) as progress:
        if args.from_index:
            adapters = Adapters(settings)
            task = progress.add_task(f"tagged images through {args.model}", total=None)
            return from_index(
                adapters.metadata,
                adapters.objects,
                settings.minio.bucket,
                adapters.embedders(args.model),
                cache_dir,
                partial(progress.advance, task),
                adapters.index,
            )
        try:
            dataset = load_dataset(args.dataset)
        except EvalError as exc:
            raise TrainCommandError(str(exc)) from exc
        task = progress.add_task(f"descriptors from {args.model}", total=len(dataset.paths))
        with closing(TritonEmbedder(settings.triton, args.model)) as embedder:
            features, model_id = embed(
                embedder, dataset, cache_dir, partial(progress.advance, task)
            )
    return Labelled(
        dataset.name,
        dataset.fingerprint,
        features,
        dataset.labels,
        dataset.classes,
        model_id,
        image_ids=content_ids(dataset.paths),
    )


def content_ids(paths: Any) -> tuple[str, ...]:
    from cbir.domain.images import image_id_of

    return tuple(image_id_of(path.read_bytes()) for path in paths)


def backbone_data(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """For fine-tuning: the timm model, its split, and the frozen trunk's activations of the
    folder's images as the labelled data."""
    from cbir.evaluation.run import EvalError, load_dataset
    from cbir.models.export import ExportError, timm_model, timm_preprocessing
    from cbir.training.backbone import split, trunk_activations
    from cbir.training.sources import Labelled
    from cbir.training.trainer import TrainingError

    if args.from_index:
        raise TrainCommandError("--timm fine-tunes on a folder of images, not --from-index")
    try:
        dataset = load_dataset(args.dataset)
        model, source = timm_model(args.timm, args.weights, args.seed)
        cut = split(model, args.unfreeze)
    except (EvalError, ExportError, TrainingError) as exc:
        raise TrainCommandError(str(exc)) from exc
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("the frozen trunk's activations", total=len(dataset.paths))
        activations = trunk_activations(
            cut.trunk,
            [path.read_bytes() for path in dataset.paths],
            timm_preprocessing(model),
            partial(progress.advance, task),
        )
    base = f"timm:{args.timm} weights={source}, last {args.unfreeze} stage(s) trained"
    data = Labelled(
        dataset.name,
        dataset.fingerprint,
        activations,
        dataset.labels,
        dataset.classes,
        base,
        image_ids=content_ids(dataset.paths),
    )
    return data, model, cut


def _train(args: argparse.Namespace) -> int:
    need_torch()
    import numpy as np

    from cbir.domain.gate import TrainedOn
    from cbir.models.export import (
        TRAINED_ON_FILE,
        ExportError,
        export_model,
        export_with_head,
        record_trained_on,
    )
    from cbir.models.runtime import Pooling
    from cbir.training.backbone import tail_and_head
    from cbir.training.splits import split
    from cbir.training.trainer import Epoch, TrainingError, train

    settings = get_settings()
    options = options_of(args)
    backbone = cut = None
    if args.timm:
        data, backbone, cut = backbone_data(args)
    else:
        data = labelled(args)
    features, labels = data.features, data.labels
    module = tail_and_head(cut, features, options) if cut is not None else None
    if args.validation == "none":
        fit, held = np.arange(len(labels)), None
    else:
        fit, held = split(labels, args.validation, args.seed)
    console.print(
        f"{data.name}: {len(labels)} images, {len(data.classes)} classes; "
        f"base {data.model_id}; training on {len(fit)}"
        + (f", validating on {len(held)} ({args.validation})" if held is not None else "")
    )
    if data.origin:
        console.print(data.origin)
    console.print(f"training: {options.describe()}")
    checkpoint = args.checkpoint or (
        settings.stack.home / "training" / f"{args.name}-{data.fingerprint}.pt"
    )

    def report(epoch: Epoch) -> None:
        score = f"  validation mAP {epoch.validation_map:.4f}" if held is not None else ""
        console.print(f"epoch {epoch.epoch:>3}/{options.epochs}  loss {epoch.loss:.4f}{score}")

    validation = (features[held], labels[held]) if held is not None else None
    try:
        trained = train(features[fit], labels[fit], options, validation, checkpoint, report, module)
    except TrainingError as exc:
        raise TrainCommandError(str(exc)) from exc
    if trained.resumed_from:
        console.print(f"(resumed from epoch {trained.resumed_from}: {checkpoint})")
    if args.no_export:
        return 0
    repository = settings.triton.model_repository
    try:
        if backbone is not None:
            spec = export_model(
                repository,
                args.name,
                args.version,
                timm_arch=args.timm,
                weights=args.weights,
                seed=args.seed,
                pooling=Pooling("gap"),
                model=backbone,
                head=trained.head,
            )
        else:
            spec = export_with_head(
                repository,
                args.model,
                args.name,
                args.version,
                trained.head,
                f"{options.describe()} on {data.name} {data.fingerprint}",
            )
    except ExportError as exc:
        raise TrainCommandError(str(exc)) from exc
    trained_on = TrainedOn(
        data.name,
        tuple(data.classes[int(c)] for c in np.unique(labels[fit])),
        frozenset(data.image_ids[i] for i in fit),
        0 if held is None else len(held),
    )
    record_trained_on(repository, args.name, spec.version, trained_on)
    console.print(f"exported {spec.model_id} to {repository / args.name}")
    from cbir.cli.model import _load_if_served

    _load_if_served(args.name)
    console.print(
        f"trained on {trained_on.describe()}.\n"
        f"switch the live index to it, with zero downtime: cbir re-embed {args.name}. The "
        f"switch is judged by two checks beside the live model: with --probe FOLDER "
        f"(labelled images of the classes it learned) its mAP@10 on them may not fall below "
        f"the live model's by more than --tolerance; and the collection check, label-free, "
        f"samples indexed images outside those classes, searches each in both, judges the "
        f"results same scene or not by local features, and refuses a fall of verified mAP@10 "
        f"beyond --collection-tolerance (a head that helps its classes and harms the rest "
        f"does not go live). The images it was trained on are refused as probes (kept in "
        f"{TRAINED_ON_FILE}): give it images it never saw"
        + (" (the ones --validation held out are such images)" if held is not None else "")
    )
    return 0


def register(areas: Any) -> None:
    parser = areas.add_parser(
        "train",
        help="train a retrieval model on labelled images (metric learning), export it to Triton",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dataset",
        type=Path,
        nargs="?",
        help="a folder with one subfolder of images per class (e.g. ../shared/data/flowers17)",
    )
    parser.add_argument(
        "--from-index",
        action="store_true",
        help="train on the indexed images' tags (first tag = class; bytes from the object "
        "store) instead of a folder",
    )
    parser.add_argument("--model", default="mobilenet", help="the Triton model to build on")
    parser.add_argument(
        "--timm",
        metavar="ARCH",
        help="fine-tune this timm architecture's last stages with the head, from --weights "
        "(a checkpoint file; hub where reachable), instead of a head on --model's descriptors",
    )
    parser.add_argument("--weights", default="hub", help="with --timm: a checkpoint file")
    parser.add_argument(
        "--unfreeze", type=int, default=1, help="with --timm: the last stages trained (1-4)"
    )
    parser.add_argument("--name", default="mobilenet-trained", help="the new model's name")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--loss", choices=["triplet", "contrastive"], default="triplet")
    parser.add_argument("--mining", choices=["all", "semi-hard", "batch-hard"], default="semi-hard")
    parser.add_argument(
        "--reduction",
        choices=["per-query", "plain"],
        default="per-query",
        help="triplet loss: mean per query, then over queries (the design's), or plain",
    )
    parser.add_argument("--margin", type=float, default=0.2, help="triplet margin δ")
    parser.add_argument("--beta", type=float, default=0.5, help="contrastive negative margin β")
    parser.add_argument("--memory", type=int, default=0, help="cross-batch memory size")
    parser.add_argument("--koleo", type=float, default=0.0, help="KoLeo weight λ")
    parser.add_argument("--head", choices=["linear", "mlp"], default="linear")
    parser.add_argument("--dim", type=int, default=256, help="output dimensions")
    parser.add_argument("--hidden", type=int, default=1024, help="the MLP head's width")
    parser.add_argument(
        "--init",
        choices=["orthogonal", "whitening"],
        default="orthogonal",
        help="the linear head's start: random orthogonal, or learned whitening of the labels",
    )
    parser.add_argument(
        "--shrinkage",
        type=shrinkage,
        default=1.0,
        help="learned whitening's; auto: chosen on class splits of the training data",
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--classes-per-batch", type=int, default=8, help="P of a P x K batch")
    parser.add_argument("--per-class", type=int, default=4, help="K of a P x K batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validation",
        choices=["same-classes", "class-disjoint", "none"],
        default="same-classes",
        help="hold out half of each class's images, or half of the classes, for the "
        "validation mAP of each epoch (none: train on everything)",
    )
    parser.add_argument("--checkpoint", type=Path, help="where to keep (and resume) the run")
    parser.add_argument("--no-export", action="store_true", help="train and report only")
    parser.set_defaults(run=_train)
