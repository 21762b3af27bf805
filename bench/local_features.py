"""`cbir bench local-features`: what local features add, on the same-object set and flowers17.

The same-object set (bench/same_object.py, made once and cached): `--sources` flowers17
photographs, ten transformed copies each, mixed into all 1360 flowers17 images as
distractors. Every copy queries the collection (itself left out); its source and the
source's other copies are the relevant answers. Measured:
- mAP and P@1 for the global descriptor alone (the shared MobileNet, the runtime Triton runs,
  here in-process), VLAD of RootSIFT, and global + spatial re-ranking of the top R = 20, 50,
  100, with the time re-ranking takes per query (the query's extraction and R verifications
  on one core; the API's fetch of R feature blobs comes on top, see `bench query`);
- per transform, P@1 of global and re-ranked;
- near-duplicates (every copy against its 10 nearest global neighbours): precision and recall
  of the hash tier, the embedding tier, and both with geometry deciding disagreements, at the
  default thresholds and over a sweep;
- flowers17's category search (leave-one-out, class labels) with spatial re-ranking at
  R = 50, against global alone: it must not hurt.
Writes bench/results/local_features.{json,md,png}.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
from rich.progress import Progress

from bench.common import RESULTS, publish
from bench.same_object import TRANSFORMS, make_copies
from cbir.output import console
from cbir.settings import get_settings
from domain.spatial import DuplicatePolicy, SpatialPolicy
from embedding_models.runtime import Embedder
from embedding_models.shared_mobilenet import export_shared_mobilenet
from evaluation.metrics import evaluate
from evaluation.report import provenance_line
from evaluation.run import load_dataset
from local_features.features import Extractor, LocalFeatures, hamming
from local_features.geometry import Verifier
from local_features.vlad import train as train_vlad

DEPTHS = (20, 50, 100)
NEIGHBOURS = 10  # near-duplicate candidates per copy
TARGETS = {
    "spatial_gain": "mAP +0.10 over global on the same-object set",
    "flowers17_drop": "flowers17 mAP lowered by at most 0.01",
    "latency": "rerank=spatial R=50 p50 < 300 ms",
    "duplicates": "precision >= 0.95 at recall >= 0.90",
}

# the worker processes' view of the features (set before the pool forks)
_FEATURES: list[LocalFeatures] = []
_VERIFIER = Verifier()


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "local-features", help="same-object search: global, VLAD, spatial re-ranking, duplicates"
    )
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--sources", type=int, default=200, help="source photographs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-keypoints", type=int, default=500)
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--words", type=int, default=64, help="VLAD codebook size")
    parser.add_argument("--vlad-dim", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    cache = settings.stack.home / "bench-cache"
    dataset = load_dataset(args.shared / "data" / "flowers17")
    originals = len(dataset.paths)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("same-object copies", total=args.sources)
        copies = make_copies(
            list(dataset.paths), args.sources, args.seed, cache, lambda: progress.advance(task)
        )
    paths = list(dataset.paths) + [c.path for c in copies]
    groups = np.concatenate([np.arange(originals), [c.source for c in copies]])
    transforms = [c.transform for c in copies]
    queries = np.arange(originals, len(paths))
    console.print(f"{originals} photographs + {len(copies)} copies of {args.sources} sources")

    datas = [p.read_bytes() for p in paths]
    folder = copies[0].path.parent  # the set's cache folder: what it computes is kept there
    global_file = folder / "global-mobilenet.npy"
    if global_file.exists():
        embeddings = np.load(global_file)
    else:
        embeddings = global_embeddings(args.shared / "models" / "mobilenet_v1_embed.onnx", datas)
        np.save(global_file, embeddings)
    extractor = Extractor(args.max_keypoints, args.max_side)
    features_file = folder / f"features-{args.max_keypoints}-{args.max_side}.npz"
    if features_file.exists():
        with np.load(features_file) as stored:
            blobs, ends = stored["blobs"].tobytes(), stored["ends"]
        starts = np.concatenate([[0], ends[:-1]])
        features = [LocalFeatures.from_bytes(blobs[a:b]) for a, b in zip(starts, ends, strict=True)]
    else:
        features = extract_all(extractor, datas, args.workers)
        encoded = [f.to_bytes() for f in features]
        np.savez(
            features_file,
            blobs=np.frombuffer(b"".join(encoded), np.uint8),
            ends=np.cumsum([len(b) for b in encoded]),
        )
    keypoints = [len(f) for f in features]
    console.print(f"local features: {np.mean(keypoints):.0f} keypoints per image on average")

    records: list[dict[str, Any]] = []
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    rankings = np.argsort(-similarity[queries], axis=1, kind="stable")[:, :-1]
    inliers, verify_ms = verify_top(features, queries, rankings[:, : max(DEPTHS)], args.workers)
    query_ms = single_query_times(extractor, datas, features, queries, rankings, args.seed)

    global_report = report(rankings, groups, queries)
    records.append(
        record(
            "same-object",
            "global (MobileNet)",
            global_report,
            transforms,
            rankings,
            groups,
            queries,
        )
    )
    for depth in DEPTHS:
        reranked = rerank(rankings, similarity[queries], inliers, depth)
        rec = record(
            "same-object",
            f"global + spatial R={depth}",
            report(reranked, groups, queries),
            transforms,
            reranked,
            groups,
            queries,
        )
        rec["latency_ms"] = latency(query_ms, depth)
        records.append(rec)

    vlad = train_vlad(features[:originals], args.words, args.vlad_dim, seed=args.seed)
    vlads = np.stack([vlad.describe(f.rootsift()) for f in features])
    vlad_similarity = vlads @ vlads.T
    np.fill_diagonal(vlad_similarity, -np.inf)
    vlad_rankings = np.argsort(-vlad_similarity[queries], axis=1, kind="stable")[:, :-1]
    records.append(
        record(
            "same-object",
            f"VLAD ({args.words} words, {vlad.dim}-d)",
            report(vlad_rankings, groups, queries),
            transforms,
            vlad_rankings,
            groups,
            queries,
        )
    )

    flowers = flowers_category(
        embeddings[:originals], features[:originals], dataset.labels, args.workers
    )
    records += flowers
    duplicates = near_duplicates(
        similarity, features, groups, queries, rankings, inliers, originals, transforms
    )

    same = {r["method"]: r for r in records if r["dataset"] == "same-object"}
    gain = same["global + spatial R=50"]["mAP"] - same["global (MobileNet)"]["mAP"]
    drop = flowers[0]["mAP"] - flowers[1]["mAP"]
    combined = duplicates["default"]["combined"]
    extra = {
        "targets": TARGETS,
        "verdicts": {
            "spatial_gain": {"value": round(gain, 4), "met": gain >= 0.10},
            "flowers17_drop": {"value": round(drop, 4), "met": drop <= 0.01},
            "latency": {
                "p50_ms": same["global + spatial R=50"]["latency_ms"]["p50"],
                "met": same["global + spatial R=50"]["latency_ms"]["p50"] < 300,
            },
            "duplicates": {
                "precision": combined["precision"],
                "recall": combined["recall"],
                "met": combined["precision"] >= 0.95 and combined["recall"] >= 0.90,
            },
        },
        "set": {
            "photographs": originals,
            "sources": args.sources,
            "copies": len(copies),
            "transforms": list(TRANSFORMS),
            "seed": args.seed,
            "keypoints_mean": round(float(np.mean(keypoints)), 1),
            "extract_ms_per_query_p50": same["global + spatial R=50"]["latency_ms"]["extract_p50"],
            "verify_ms_per_pair": round(verify_ms, 2),
        },
        "settings": {
            "extractor": {"max_keypoints": args.max_keypoints, "max_side": args.max_side},
            "verifier": asdict(Verifier()),
            "spatial": asdict(SpatialPolicy()),
            "duplicates": asdict(DuplicatePolicy()),
        },
        "duplicates": duplicates,
    }
    document = publish("local_features", records, extra, markdown, args.out)
    plot(document, args.out / "local_features.png")
    for name, verdict in document["verdicts"].items():
        console.print(f"{name}: {verdict}")
    return 0


def global_embeddings(onnx: Path, datas: Sequence[bytes]) -> np.ndarray:
    """The shared MobileNet's embeddings, computed by the runtime Triton runs (in-process)."""
    with TemporaryDirectory() as scratch:
        spec = export_shared_mobilenet(Path(scratch), onnx)
        embedder = Embedder(Path(scratch) / spec.name / str(spec.version), intra_op_threads=2)
        chunks = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("global embeddings", total=len(datas))
            for start in range(0, len(datas), 32):
                vectors, errors = embedder.embed(list(datas[start : start + 32]))
                if any(errors):
                    raise RuntimeError(f"unreadable benchmark image: {errors}")
                chunks.append(vectors)
                progress.advance(task, len(vectors))
    return np.concatenate(chunks)


def _extract(job: tuple[Extractor, bytes]) -> bytes:
    extractor, data = job
    return extractor.extract(data).to_bytes()


def extract_all(extractor: Extractor, datas: Sequence[bytes], workers: int) -> list[LocalFeatures]:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("local features", total=len(datas))
        blobs = []
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for blob in pool.imap(_extract, [(extractor, d) for d in datas], chunksize=8):
                blobs.append(blob)
                progress.advance(task)
    return [LocalFeatures.from_bytes(b) for b in blobs]


def _verify_row(job: tuple[int, list[int]]) -> tuple[list[int], float]:
    query, candidates = job
    started = time.perf_counter()
    counts = [_VERIFIER.verify(_FEATURES[query], _FEATURES[c]).inliers for c in candidates]
    return counts, time.perf_counter() - started


def verify_top(
    features: list[LocalFeatures], queries: np.ndarray, candidates: np.ndarray, workers: int
) -> tuple[np.ndarray, float]:
    """Inliers of every query against each of its candidates; ms per verified pair."""
    global _FEATURES
    _FEATURES = features
    jobs = [(int(q), [int(c) for c in row]) for q, row in zip(queries, candidates, strict=True)]
    rows, seconds = [], 0.0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("spatial verification", total=len(jobs))
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for counts, spent in pool.imap(_verify_row, jobs, chunksize=4):
                rows.append(counts)
                seconds += spent
                progress.advance(task)
    return np.array(rows), 1000 * seconds / max(1, candidates.size)


def single_query_times(
    extractor: Extractor,
    datas: Sequence[bytes],
    features: list[LocalFeatures],
    queries: np.ndarray,
    rankings: np.ndarray,
    seed: int,
    samples: int = 60,
) -> np.ndarray:
    """(samples, max depth + 1): per sampled query, the ms of its extraction followed by the
    cumulative ms of verifying its candidates one after another, on this one core."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(queries), min(samples, len(queries)), replace=False)
    verifier = Verifier()
    rows = []
    for i in picked:
        started = time.perf_counter()
        query = extractor.extract(datas[queries[i]])
        times = [time.perf_counter()]
        for candidate in rankings[i, : max(DEPTHS)]:
            verifier.verify(query, features[candidate])
            times.append(time.perf_counter())
        rows.append([1000 * (t - started) for t in times])
    return np.array(rows)


def latency(query_ms: np.ndarray, depth: int) -> dict[str, float]:
    spent = query_ms[:, depth]
    return {
        "p50": round(float(np.percentile(spent, 50)), 1),
        "p95": round(float(np.percentile(spent, 95)), 1),
        "extract_p50": round(float(np.percentile(query_ms[:, 0], 50)), 1),
    }


def rerank(
    rankings: np.ndarray, similarity: np.ndarray, inliers: np.ndarray, depth: int
) -> np.ndarray:
    policy = SpatialPolicy()
    out = rankings.copy()
    for row in range(len(rankings)):
        top = rankings[row, :depth]
        order = policy.order(similarity[row, top].tolist(), inliers[row, :depth].tolist())
        out[row, :depth] = top[order]
    return out


def report(rankings: np.ndarray, groups: np.ndarray, queries: np.ndarray) -> Any:
    relevant = groups[rankings] == groups[queries][:, None]
    totals = np.bincount(groups)[groups[queries]] - 1
    return evaluate(relevant, totals, (1, 10, 100))


def record(
    dataset: str,
    method: str,
    quality: Any,
    transforms: Sequence[str],
    rankings: np.ndarray,
    groups: np.ndarray,
    queries: np.ndarray,
) -> dict[str, Any]:
    values = quality.as_dict()
    out: dict[str, Any] = {
        "dataset": dataset,
        "method": method,
        "mAP": values["mAP"],
        "P@1": values["P@1"],
        "P@10": values["P@10"],
        "R@100": values["R@100"],
        "pr_curve": values["pr_curve"],
    }
    if transforms:
        first = groups[rankings[:, 0]] == groups[queries]
        names = np.array(transforms)
        out["P@1_by_transform"] = {
            name: round(float(first[names == name].mean()), 3) for name in TRANSFORMS
        }
    return out


def flowers_category(
    embeddings: np.ndarray, features: list[LocalFeatures], labels: np.ndarray, workers: int
) -> list[dict[str, Any]]:
    """Leave-one-out category search on flowers17, global alone and re-ranked at R = 50."""
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    queries = np.arange(len(labels))
    rankings = np.argsort(-similarity, axis=1, kind="stable")[:, :-1]
    inliers, _ = verify_top(features, queries, rankings[:, :50], workers)
    reranked = rerank(rankings, similarity, inliers, 50)
    out = []
    for method, ranked in (("global (MobileNet)", rankings), ("global + spatial R=50", reranked)):
        out.append(
            record(
                "flowers17 (category)",
                method,
                report(ranked, labels, queries),
                [],
                ranked,
                labels,
                queries,
            )
        )
    return out


def near_duplicates(
    similarity: np.ndarray,
    features: list[LocalFeatures],
    groups: np.ndarray,
    queries: np.ndarray,
    rankings: np.ndarray,
    inliers: np.ndarray,
    originals: int,
    transforms: Sequence[str],
) -> dict[str, Any]:
    """Every copy against its NEIGHBOURS nearest global neighbours, as the API does. Recall:
    the share of copies whose source photograph is found a near-duplicate. Precision: the
    share of pairs found that truly derive from one photograph (a copy and its source, or
    two copies of one source)."""
    pairs = []  # (hamming, cosine, inliers, same photograph, candidate is the source)
    for row, query in enumerate(queries):
        for rank in range(NEIGHBOURS):
            candidate = rankings[row, rank]
            pairs.append(
                (
                    hamming(features[query].phash, features[candidate].phash),
                    float(similarity[query, candidate]),
                    int(inliers[row, rank]),
                    bool(groups[candidate] == groups[query]),
                    bool(candidate < originals and groups[candidate] == groups[query]),
                    row,
                )
            )
    names = np.array(transforms)

    def score(decide: Callable[[int, float, int], bool]) -> dict[str, Any]:
        chosen = [p for p in pairs if decide(p[0], p[1], p[2])]
        correct = sum(p[3] for p in chosen)
        found_rows = {p[5] for p in chosen if p[4]}
        per_transform = {
            t: round(len([r for r in found_rows if names[r] == t]) / int((names == t).sum()), 3)
            for t in TRANSFORMS
        }
        return {
            "precision": round(correct / len(chosen), 4) if chosen else 1.0,
            "recall": round(len(found_rows) / len(queries), 4),
            "pairs": len(chosen),
            "recall_by_transform": per_transform,
        }

    def tiers(p: DuplicatePolicy) -> dict[str, dict[str, Any]]:
        return {
            "hash": score(lambda h, c, i: h <= p.max_hamming),
            "embedding": score(lambda h, c, i: c >= p.min_cosine),
            "geometry": score(lambda h, c, i: c >= p.geometry_floor and i >= p.min_inliers),
            "combined": score(lambda h, c, i: p.decide(h, c, i) is not None),
        }

    sweep = []
    for min_inliers in (12, 15, 20, 25, 30, 40):
        for floor in (0.3, 0.5, 0.7):
            p = DuplicatePolicy(geometry_floor=floor, min_inliers=min_inliers)
            combined = tiers(p)["combined"]
            combined.pop("recall_by_transform")
            sweep.append({**asdict(p), **combined})
    return {"copies": len(queries), "default": tiers(DuplicatePolicy()), "sweep": sweep}


def markdown(document: dict[str, Any]) -> str:
    lines = [
        provenance_line(document),
        "",
        "| dataset | method | mAP | P@1 | P@10 | R@100 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in document["records"]:
        lat = r.get("latency_ms", {})
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['mAP']:.3f} | {r['P@1']:.3f} | {r['P@10']:.3f} "
            f"| {r['R@100']:.3f} | {lat.get('p50', '')} | {lat.get('p95', '')} |"
        )
    lines += [
        "",
        "P@1 per transform (same-object set):",
        "",
        "| method | " + " | ".join(TRANSFORMS) + " |",
        "|---|" + "---|" * len(TRANSFORMS),
    ]
    for r in document["records"]:
        if "P@1_by_transform" in r:
            cells = " | ".join(f"{r['P@1_by_transform'][t]:.2f}" for t in TRANSFORMS)
            lines.append(f"| {r['method']} | {cells} |")
    dup = document["duplicates"]
    lines += [
        "",
        f"Near-duplicates ({dup['copies']} copies, each against its {NEIGHBOURS} nearest; "
        "recall: copies whose source is found), default thresholds:",
        "",
        "| tier | precision | recall | pairs | " + " | ".join(TRANSFORMS) + " |",
        "|---|---|---|---|" + "---|" * len(TRANSFORMS),
    ]
    for tier, s in dup["default"].items():
        cells = " | ".join(f"{s['recall_by_transform'][t]:.2f}" for t in TRANSFORMS)
        lines.append(
            f"| {tier} | {s['precision']:.3f} | {s['recall']:.3f} | {s['pairs']} | {cells} |"
        )
    lines += ["", "Targets:", ""]
    for name, verdict in document["verdicts"].items():
        lines.append(f"- {document['targets'][name]}: {verdict}")
    return "\n".join(lines) + "\n"


def plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5), dpi=120)
    for r in document["records"]:
        curve = r["pr_curve"]
        axes.plot(
            curve["recall"],
            curve["precision"],
            marker=".",
            label=f"{r['dataset']} · {r['method']} (mAP {r['mAP']:.3f})",
        )
    axes.set_xlabel("recall")
    axes.set_ylabel("interpolated precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title("Same-object search and flowers17 categories: precision-recall")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
