"""`cbir bench holidays`: same-object search on real photographs of the same place.

INRIA Holidays (../shared/data/holidays: 811 photographs of 300 scenes, each scene taken 2 to
10 times from other viewpoints, angles and light) mixed with distractors (flowers17 by
default). Every Holidays photograph queries the whole collection, itself left out; the
relevant answers are the other photographs of its scene. k = 100: mAP@100 and P@1, and the
shortlist's recall R@100 (the ceiling of anything that re-orders the top 100). Methods, each
on the same descriptors and features (in-process: the runtime Triton runs, and the
extraction and verification the API runs):

- global: the shared MobileNet alone;
- + spatial R: the top R verified by RANSAC on SIFT matches, verified ones first, the others
  by their global score tipped by their inliers (`--evidence`; 0: global order);
- + expansion: the query's vector averaged with those of its verified results
  (`cbir.domain.spatial.expanded_query`) and searched again over the whole collection,
  verified results first, then the new order (reaches views the first shortlist missed);
- + expansion, verified again: the expanded shortlist's top R verified where the first pass
  had not, then ordered like the first pass.

With flowers17 among the distractors, its category search too (each flowers17 photograph a
query, its species relevant), global and re-ranked at the API's default R: a policy that lifts
the same place must not reorder the same kind of thing.

Per method, the time a query costs on one core: its extraction and its verifications (the
API reads the candidates' stored features on top). `--max-keypoints` and `--max-side` say
what the features are made of; each setting is cached. Writes bench/results/holidays.json
and .md.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cbir.bench.common import PROJECT_ROOT, RESULTS, publish
from cbir.bench.local_features import (
    cached_features,
    global_embeddings,
    verify_jobs,
    verify_top,
)
from cbir.domain.spatial import SpatialPolicy, expanded_query
from cbir.evaluation.metrics import evaluate
from cbir.evaluation.report import provenance_line
from cbir.evaluation.run import load_dataset
from cbir.local_features.features import Extractor, LocalFeatures
from cbir.local_features.geometry import Verifier
from cbir.output import console
from cbir.settings import LocalFeaturesSettings, get_settings

K = 100
TARGETS = {"mAP@100": "re-ranked mAP@100 >= 0.88 with R = 100 plus expansion, p50 <= 300 ms"}


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "holidays", help="same-object search on real photographs (INRIA Holidays)"
    )
    parser.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared")
    parser.add_argument(
        "--distractors",
        nargs="*",
        default=["flowers17"],
        help="datasets under ../shared/data mixed in, never relevant",
    )
    parser.add_argument("--depths", type=int, nargs="+", default=[50, 100])
    parser.add_argument(
        "--min-inliers",
        type=int,
        nargs="+",
        default=[SpatialPolicy().min_inliers],
        help="inliers that verify a candidate (CBIR_LOCAL_FEATURES__MIN_INLIERS)",
    )
    parser.add_argument(
        "--evidence",
        type=float,
        nargs="+",
        default=[SpatialPolicy().evidence],
        help="cosine added per inlier beyond chance below the threshold "
        "(CBIR_LOCAL_FEATURES__INLIER_EVIDENCE)",
    )
    defaults = LocalFeaturesSettings()  # what the pipeline extracts
    parser.add_argument("--max-keypoints", type=int, default=defaults.max_keypoints)
    parser.add_argument("--max-side", type=int, default=defaults.max_side)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default="holidays", help="results file name")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.set_defaults(run=run)


def cached(path: Path, make: Any) -> np.ndarray:
    if path.exists():
        return np.load(path)
    value = np.asarray(make())
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, value)
    return value


def quality(rankings: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    relevant = labels[rankings[:, :K]] == labels[queries][:, None]
    totals = np.bincount(labels)[labels[queries]] - 1
    report = evaluate(relevant, totals, (1, K))
    return {
        "mAP@100": round(report.map_at[K], 4),
        "P@1": round(report.precision_at[1], 4),
        "R@100": round(report.recall_at[K], 4),
    }


def spatial_order(
    ranking: np.ndarray,
    scores: np.ndarray,
    inliers: dict[int, int],
    depth: int,
    policy: SpatialPolicy = SpatialPolicy(),  # noqa: B008 (frozen)
) -> np.ndarray:
    """The top `depth` of a ranking ordered as the API's re-ranking orders it (verified
    first by inliers, then global score), the rest as it was."""
    top = ranking[:depth]
    order = policy.order([float(scores[c]) for c in top], [inliers.get(int(c)) for c in top])
    return np.concatenate([top[order], ranking[depth:]])


def expanded_ranking(
    query: int,
    embeddings: np.ndarray,
    verified: list[int],
    inliers: dict[int, int],
    scores: np.ndarray,
    length: int = K + 100,
    policy: SpatialPolicy = SpatialPolicy(),  # noqa: B008 (frozen)
) -> tuple[np.ndarray, np.ndarray]:
    """As the API expands: the verified results first (as re-ranked), then the collection
    by the expanded query's similarity, tipped by the inliers the first pass found; and
    those similarities."""
    vector = expanded_query(embeddings[query], embeddings[verified])
    expanded = embeddings @ vector
    expanded[query] = -np.inf
    first = set(verified)
    rest = np.argsort(-expanded, kind="stable")
    rest = rest[~np.isin(rest, [*verified, query])][:length]
    candidates = [*verified, *(int(c) for c in rest)]
    order = policy.order(
        [float(scores[c] if c in first else expanded[c]) for c in candidates],
        [inliers.get(c) for c in candidates],
    )
    return np.array([candidates[i] for i in order], dtype=np.int64)[:length], expanded


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    holidays = load_dataset(args.shared / "data" / "holidays")
    paths = list(holidays.paths)
    labels = list(holidays.labels)
    for name in args.distractors:
        distractor = load_dataset(args.shared / "data" / name)
        paths += list(distractor.paths)
        labels += [-1] * len(distractor.paths)
    # a distractor is relevant to nothing: a label of its own each
    count = len(holidays.classes)
    labels_array = np.array([lab if lab >= 0 else count + i for i, lab in enumerate(labels)])
    queries = np.arange(len(holidays.paths))
    fingerprint = f"{len(paths)}-{'-'.join(args.distractors) or 'none'}"
    cache = settings.stack.home / "bench-cache" / f"holidays-{fingerprint}"
    cache.mkdir(parents=True, exist_ok=True)
    datas = [p.read_bytes() for p in paths]
    console.print(f"{len(queries)} holidays photographs, {len(paths) - len(queries)} distractors")
    onnx = args.shared / "models" / "mobilenet_v1_embed.onnx"
    embeddings = cached(cache / "global-mobilenet.npy", lambda: global_embeddings(onnx, datas))
    extractor = Extractor(args.max_keypoints, args.max_side)
    features = cached_features(cache, extractor, datas, args.workers)
    keypoints = float(np.mean([len(f) for f in features]))
    console.print(f"{keypoints:.0f} keypoints per image on average")

    similarity = embeddings[queries] @ embeddings.T
    similarity[queries, queries] = -np.inf
    rankings = np.argsort(-similarity, axis=1, kind="stable")[:, : K + 100]
    depth_max = max(args.depths)
    first = verify_top(features, queries, rankings[:, :depth_max], args.workers)
    ms_pair = first.ms_per_pair
    extract_ms = extraction_ms(extractor, datas, queries)
    records = [{"method": "global (MobileNet)", **quality(rankings, labels_array, queries)}]
    for min_inliers, evidence, depth in itertools.product(
        args.min_inliers, args.evidence, args.depths
    ):
        policy = SpatialPolicy(min_inliers=min_inliers, evidence=evidence)
        label = (
            f"R={depth}"
            + (f", {min_inliers} inliers" if len(args.min_inliers) > 1 else "")
            + (f", evidence {evidence}" if len(args.evidence) > 1 else "")
        )
        inliers = [
            {
                int(c): int(n)
                for c, n in zip(rankings[i, :depth], first.inliers[i, :depth], strict=True)
            }
            for i in range(len(queries))
        ]
        spatial = np.stack(
            [
                spatial_order(rankings[i], similarity[i], inliers[i], depth, policy)
                for i in range(len(queries))
            ]
        )
        cost = extract_ms + depth * ms_pair
        records.append(
            {
                "method": f"+ spatial {label}",
                **quality(spatial, labels_array, queries),
                "ms": round(cost, 1),
            }
        )
        expanded_rows, again_rows, extra_pairs = [], [], 0
        second_jobs: list[tuple[int, list[int]]] = []
        expanded_scores = []
        for i, query in enumerate(queries):
            verified = [c for c, n in inliers[i].items() if n >= policy.min_inliers]
            row, scores = expanded_ranking(
                int(query), embeddings, verified, inliers[i], similarity[i], policy=policy
            )
            expanded_rows.append(row)
            expanded_scores.append(scores)
            fresh = [int(c) for c in row[:depth] if int(c) not in inliers[i]]
            second_jobs.append((int(query), fresh))
            extra_pairs += len(fresh)
        records.append(
            {
                "method": f"+ spatial {label} + expansion",
                **quality(np.stack(expanded_rows), labels_array, queries),
                "ms": round(cost, 1),
            }
        )
        second = verify_pairs(features, second_jobs, args.workers)
        for i in range(len(queries)):
            both = {**inliers[i], **second[i]}
            again_rows.append(
                spatial_order(expanded_rows[i], expanded_scores[i], both, depth, policy)
            )
        records.append(
            {
                "method": f"+ spatial {label} + expansion, verified again",
                **quality(np.stack(again_rows), labels_array, queries),
                "ms": round(cost + extra_pairs / len(queries) * ms_pair, 1),
            }
        )
    if "flowers17" in args.distractors:
        records += flowers_categories(
            embeddings, features, paths, args.shared / "data" / "flowers17", args
        )
    for r in records:
        console.print(
            f"  {r['method']:<44} mAP@100 {r['mAP@100']:.4f}  P@1 {r['P@1']:.4f}  "
            f"R@100 {r['R@100']:.4f}  {r.get('ms', '')} ms"
        )
    extra: dict[str, Any] = {
        "targets": TARGETS,
        "set": {
            "queries": len(queries),
            "collection": len(paths),
            "distractors": args.distractors,
            "keypoints_mean": round(keypoints, 1),
            "extract_ms_p50": round(extract_ms, 1),
            "verify_ms_per_pair": round(ms_pair, 2),
        },
        "settings": {
            "extractor": {"max_keypoints": args.max_keypoints, "max_side": args.max_side},
            "verifier": asdict(Verifier()),
            "spatial": asdict(SpatialPolicy())
            | {"min_inliers": args.min_inliers, "evidence": args.evidence},
        },
    }
    publish(args.name, records, extra, markdown, args.out)
    return 0


def flowers_categories(
    embeddings: np.ndarray,
    features: list[LocalFeatures],
    paths: list[Path],
    folder: Path,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """What re-ranking does to a search for the same kind of thing, not the same thing:
    every flowers17 photograph queries the collection, relevant its species, global alone
    and re-ranked at the API's default R with each policy asked for (a few chance inliers
    between textured petals must not reorder it)."""
    flowers = load_dataset(folder)
    species = dict(zip(flowers.paths, flowers.labels, strict=True))
    queries = np.array([i for i, path in enumerate(paths) if path in species])
    groups = np.array([species.get(p, -1) for p in paths])
    groups[groups < 0] = groups.max() + 1 + np.arange(int((groups < 0).sum()))
    similarity = embeddings[queries] @ embeddings.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    rankings = np.argsort(-similarity, axis=1, kind="stable")[:, : K + 100]
    depth = LocalFeaturesSettings().rerank_depth
    found = verify_top(features, queries, rankings[:, :depth], args.workers)
    rows = [{"method": "flowers17 species: global", **quality(rankings, groups, queries)}]
    for min_inliers, evidence in itertools.product(args.min_inliers, args.evidence):
        policy = SpatialPolicy(min_inliers=min_inliers, evidence=evidence)
        label = f"R={depth}" + (f", {min_inliers} inliers" if len(args.min_inliers) > 1 else "")
        label += f", evidence {evidence}" if len(args.evidence) > 1 else ""
        ordered = np.stack(
            [
                spatial_order(
                    rankings[i],
                    similarity[i],
                    dict(zip(rankings[i, :depth].tolist(), found.inliers[i].tolist(), strict=True)),
                    depth,
                    policy,
                )
                for i in range(len(queries))
            ]
        )
        rows.append(
            {"method": f"flowers17 species: + spatial {label}", **quality(ordered, groups, queries)}
        )
    return rows


def extraction_ms(extractor: Extractor, datas: Sequence[bytes], queries: np.ndarray) -> float:
    """The median ms of one query's extraction, on this one core (40 queries)."""
    spent = []
    for query in queries[:: max(1, len(queries) // 40)]:
        started = time.perf_counter()
        extractor.extract(datas[query])
        spent.append(1000 * (time.perf_counter() - started))
    return float(np.median(spent))


def verify_pairs(
    features: list[LocalFeatures], jobs: list[tuple[int, list[int]]], workers: int
) -> list[dict[int, int]]:
    """Each query's inliers with the candidates named for it."""
    rows, _ = verify_jobs(features, jobs, workers)
    return [
        {c: int(inliers) for c, (inliers, _) in zip(candidates, row, strict=True)}
        for (_, candidates), row in zip(jobs, rows, strict=True)
    ]


def markdown(document: dict[str, Any]) -> str:
    info = document["set"]
    lines = [
        provenance_line(document),
        "",
        f"{info['queries']} queries among {info['collection']} images "
        f"({', '.join(info['distractors']) or 'no'} distractors); "
        f"{info['keypoints_mean']} keypoints per image; extraction "
        f"{info['extract_ms_p50']} ms, a verification {info['verify_ms_per_pair']} ms (one core).",
        "",
        "| method | mAP@100 | P@1 | R@100 | ms per query (one core) |",
        "|---|---|---|---|---|",
    ]
    for r in document["records"]:
        lines.append(
            f"| {r['method']} | {r['mAP@100']} | {r['P@1']} | {r['R@100']} | {r.get('ms', '-')} |"
        )
    return "\n".join(lines) + "\n"
