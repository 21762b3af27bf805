"""`cbir eval`: retrieval quality on a labelled dataset (see cbir/evaluation/run.py)."""

from __future__ import annotations

import argparse
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

from rich.progress import Progress

from cbir.output import console
from cbir.settings import get_settings


def _eval(args: argparse.Namespace) -> int:
    from cbir.adapters.embedder import TritonEmbedder
    from cbir.adapters.vector_index import ScratchCollection
    from cbir.bench.common import RESULTS, publish
    from cbir.evaluation.report import pr_plot, quality_markdown
    from cbir.evaluation.run import (
        RERANKINGS,
        EvalError,
        IndexSpec,
        embed,
        evaluate_dataset,
        exhaustive_map,
        load_dataset,
    )

    settings = get_settings()
    try:
        dataset = load_dataset(args.dataset, args.classes, args.per_class)
        specs = [IndexSpec.parse(text) for text in ["exhaustive", *args.index]]
        unknown = [r for r in args.rerank if r not in RERANKINGS]
        if unknown:
            raise EvalError(f"unknown re-ranking {unknown}: choose among {', '.join(RERANKINGS)}")
    except EvalError as exc:
        console.print(f"[red]error[/]: {exc}")
        return 2
    out = args.out or RESULTS
    cache_dir = settings.stack.home / "eval-cache"
    records: list[dict[str, Any]] = []
    references = {}
    for model in args.model:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"embedding with {model}", total=len(dataset.paths))
            with closing(TritonEmbedder(settings.triton, model)) as embedder:
                vectors, model_id = embed(
                    embedder, dataset, cache_dir, partial(progress.advance, task)
                )
        references[model] = round(exhaustive_map(vectors, dataset.labels), 4)
        console.print(
            f"{model}: {len(vectors)} images, {len(dataset.classes)} classes, "
            f"exhaustive full-ranking mAP {references[model]}"
        )
        for record in evaluate_dataset(
            lambda dim: ScratchCollection(settings.milvus, "eval", dim),
            vectors,
            dataset.labels,
            specs,
            args.rerank,
            args.depth,
            qe_n=args.qe_n,
            qe_alpha=args.qe_alpha,
        ):
            record = {"dataset": dataset.name, "model": model, "model_id": model_id, **record}
            records.append(record)
            console.print(
                f"  {record['index']:<32} {record['rerank']:<6} mAP {record['mAP']:.4f}  "
                f"P@1 {record['P@1']:.3f}  P@10 {record['P@10']:.3f}  "
                f"NDCG@10 {record['NDCG@10']:.3f}"
            )
    extra = {
        "dataset": {
            "name": dataset.name,
            "images": len(dataset.paths),
            "classes": dataset.classes,
            "per_class": args.per_class,
        },
        "exhaustive_full_ranking_map": references,
        "protocol": "leave-one-out: every image queries all the others; relevant = same class",
        "query_expansion": {"n": args.qe_n, "alpha": args.qe_alpha},
    }
    document = publish(args.name, records, extra, quality_markdown, out)
    pr_plot(document, out / f"{args.name}_pr.png")
    console.print(f"and {args.name}_pr.png")
    return 0


def register(areas: Any) -> None:
    evaluate = areas.add_parser(
        "eval",
        help="retrieval quality on a labelled dataset (mAP, P@k, R@k, NDCG, PR curve)",
        description=__doc__,
    )
    evaluate.add_argument(
        "dataset",
        type=Path,
        nargs="?",
        help="a folder with one subfolder of images per class (e.g. ../shared/data/flowers17)",
    )
    evaluate.add_argument(
        "--model", nargs="+", default=["mobilenet"], help="Triton models to compare"
    )
    evaluate.add_argument(
        "--index",
        nargs="*",
        default=["FLAT", "HNSW:M=16,efConstruction=200,ef=64", "IVF_SQ8:nlist=64,nprobe=16"],
        help="Milvus indexes beside the exhaustive reference, TYPE[:key=value,...]",
    )
    evaluate.add_argument("--rerank", nargs="+", default=["none", "exact", "qe"])
    evaluate.add_argument(
        "--depth", type=int, help="results per query (default: the whole collection)"
    )
    evaluate.add_argument("--qe-n", type=int, default=5, help="results averaged into the query")
    evaluate.add_argument("--qe-alpha", type=float, default=3.0, help="their weight's exponent")
    evaluate.add_argument("--classes", nargs="+", help="only these class folders")
    evaluate.add_argument("--per-class", type=int, help="only the first N images of each class")
    evaluate.add_argument("--out", type=Path, help="folder for the outputs (bench/results)")
    evaluate.add_argument("--name", default="quality", help="file name of the outputs")
    evaluate.set_defaults(run=_eval)
