"""`cbir bench training`: what metric learning buys, on flowers17 and cifar10-test.

The shared MobileNet's descriptors (through Triton, cached) are the frozen baseline; every
variant trains a head on them under two protocols (cbir/training/protocols.py): class-disjoint
(train on half of the classes, evaluate on the others: classes never seen) and same-classes
(train on half of each class's images, evaluate on the rest). Leave-one-out over the
evaluation images: mAP, P@1, P@10, NDCG@10, and the ratio to the frozen mAP. Writes
bench/results/training.json, training.md and training.png (loss and validation mAP per
epoch). Needs the stack up (`cbir stack up`) for the descriptors.
"""

from __future__ import annotations

import argparse
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.progress import Progress

from cbir.adapters.embedder import TritonEmbedder
from cbir.bench.common import RESULTS, publish
from cbir.domain.categories import predict_labels
from cbir.evaluation.report import provenance_line
from cbir.evaluation.run import embed, load_dataset
from cbir.output import console
from cbir.settings import PROJECT_ROOT, get_settings
from cbir.training import need_torch
from cbir.training.splits import PROTOCOLS

if TYPE_CHECKING:
    from cbir.training.trainer import Epoch


TARGETS = {
    "same-classes": "flowers17 mAP >= 0.80",
    "class-disjoint": "mAP >= 1.15 x frozen",
}


def run(args: argparse.Namespace) -> int:
    need_torch()
    from cbir.training.protocols import run_protocol, variants

    settings = get_settings()
    records: list[dict[str, Any]] = []
    categories: list[dict[str, Any]] = []
    for name in args.datasets:
        dataset = load_dataset(args.shared / "data" / name)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{name} through {args.model}", total=len(dataset.paths))
            with closing(TritonEmbedder(settings.triton, args.model)) as embedder:
                features, model_id = embed(
                    embedder,
                    dataset,
                    settings.stack.home / "eval-cache",
                    partial(progress.advance, task),
                )

        accuracy = category_accuracy(features, dataset.labels, dataset.classes, args.k)
        categories.append({"dataset": name, "model_id": model_id, "k": args.k, **accuracy})
        console.print(
            f"{name}: category prediction (leave-one-out, {args.k} neighbours) top-1 "
            f"{accuracy['top1']:.4f}, top-3 {accuracy['top3']:.4f}"
        )

        def epoch_line(variant: str, epoch: Epoch) -> None:
            if epoch.epoch % 10 == 0 or epoch.epoch == 1:
                console.print(
                    f"    {variant:<30} epoch {epoch.epoch:>3} loss {epoch.loss:.4f} "
                    f"validation mAP {epoch.validation_map:.4f}"
                )

        for protocol in args.protocols:
            console.print(f"{name}, {protocol}")
            for record in run_protocol(
                features,
                dataset.labels,
                protocol,
                variants(args.epochs, args.seed),
                args.seed,
                epoch_line,
            ):
                records.append({"dataset": name, "model_id": model_id, **record})
                console.print(
                    f"  {record['variant']:<32} mAP {record['mAP']:.4f} "
                    f"({record['mAP_vs_frozen']:.3f} x frozen)  P@1 {record['P@1']:.3f}  "
                    f"P@10 {record['P@10']:.3f}  NDCG@10 {record['NDCG@10']:.3f}  "
                    f"{record['cpu_s']} CPU-s"
                )
    extra = {
        "protocol": "leave-one-out over the evaluation images; relevant = same class; the "
        "last epoch's head (none chosen on the evaluation images)",
        "targets": TARGETS,
        "epochs": args.epochs,
        "seed": args.seed,
        "category_prediction": categories,
    }
    document = publish("training", records, extra, markdown, args.out)
    plot(document, args.out / "training.png")
    return 0


def category_accuracy(
    features: np.ndarray, labels: np.ndarray, classes: list[str], k: int
) -> dict[str, Any]:
    """Leave-one-out: each image's label predicted by the vote of its k nearest others
    (domain.categories, as the API does); top-1 and top-3 accuracy."""
    top1 = top3 = 0
    for start in range(0, len(features), 1000):
        similarity = features[start : start + 1000] @ features.T
        rows = np.arange(similarity.shape[0])
        similarity[rows, rows + start] = -np.inf  # not itself
        nearest = np.argpartition(-similarity, k, axis=1)[:, :k]
        for row, candidates in enumerate(nearest):
            order = candidates[np.argsort(-similarity[row, candidates])]
            votes = [([classes[labels[j]]], float(similarity[row, j])) for j in order]
            predicted = [p.label for p in predict_labels(votes, top=3)]
            truth = classes[labels[start + row]]
            top1 += bool(predicted) and predicted[0] == truth
            top3 += truth in predicted
    return {
        "images": len(features),
        "top1": round(top1 / len(features), 4),
        "top3": round(top3 / len(features), 4),
    }


def markdown(document: dict[str, Any]) -> str:
    lines = [provenance_line(document), ""]
    lines.append(f"Targets: {'; '.join(f'{k}: {v}' for k, v in document['targets'].items())}.")
    lines.append("")
    header = "| dataset | protocol | variant | mAP | x frozen | P@1 | P@10 | NDCG@10 | CPU-s |"
    lines += [header, "|---|---|---|---|---|---|---|---|---|"]
    for r in document["records"]:
        lines.append(
            f"| {r['dataset']} | {r['protocol']} | {r['variant']} | {r['mAP']:.4f} | "
            f"{r['mAP_vs_frozen']:.3f} | {r['P@1']:.3f} | {r['P@10']:.3f} | "
            f"{r['NDCG@10']:.3f} | {r['cpu_s']} |"
        )
    lines.append("")
    lines.append("Category prediction (leave-one-out: the vote of the k nearest others' labels):")
    lines.append("")
    lines += ["| dataset | images | k | top-1 | top-3 |", "|---|---|---|---|---|"]
    for c in document["category_prediction"]:
        lines.append(
            f"| {c['dataset']} | {c['images']} | {c['k']} | {c['top1']:.4f} | {c['top3']:.4f} |"
        )
    lines.append("")
    lines.append("Training of each variant (the rows' `training` field in training.json):")
    lines.append("")
    seen = set()
    for r in document["records"]:
        if r["variant"] not in seen:
            seen.add(r["variant"])
            lines.append(f"- {r['variant']}: {r['training']}")
    return "\n".join(lines) + "\n"


def plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dataset"], r["protocol"]) for r in document["records"]})
    figure, axes = plt.subplots(
        2, len(panels), figsize=(4.5 * len(panels), 7), squeeze=False, sharex="col"
    )
    for column, (dataset, protocol) in enumerate(panels):
        loss_axis, map_axis = axes[0][column], axes[1][column]
        for r in document["records"]:
            if (r["dataset"], r["protocol"]) != (dataset, protocol):
                continue
            if not r["history"]:
                map_axis.axhline(r["mAP"], linestyle=":", color="grey", label=r["variant"])
                continue
            epochs = [e["epoch"] for e in r["history"]]
            loss_axis.plot(epochs, [e["loss"] for e in r["history"]], label=r["variant"])
            map_axis.plot(epochs, [e["validation_map"] for e in r["history"]], label=r["variant"])
        loss_axis.set_title(f"{dataset}, {protocol}")
        loss_axis.set_ylabel("training loss (log)")
        loss_axis.set_yscale("log")
        map_axis.set_ylabel("validation mAP")
        map_axis.set_xlabel("epoch")
    axes[1][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def register(actions: Any) -> None:
    parser = actions.add_parser(
        "training", help="metric learning against frozen features", description=__doc__
    )
    parser.add_argument("--datasets", nargs="+", default=["flowers17", "cifar10-test"])
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--model", default="mobilenet", help="the Triton model to build on")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=10, help="neighbours of the category vote")
    parser.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.set_defaults(run=run)
