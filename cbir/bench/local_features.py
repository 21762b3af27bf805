"""`cbir bench local-features`: what local features add, on the same-object set and flowers17.

The same-object set (cbir/bench/same_object.py, made once and cached): `--sources` flowers17
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
import json
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import numpy as np
from rich.progress import Progress

from cbir.bench.common import RESULTS, publish
from cbir.bench.same_object import TRANSFORMS, Copy, make_copies
from cbir.domain.images import image_id_of
from cbir.domain.spatial import DuplicatePolicy, SpatialPolicy
from cbir.evaluation.metrics import evaluate
from cbir.evaluation.report import provenance_line
from cbir.evaluation.run import load_dataset
from cbir.local_features.features import Extractor, LocalFeatures, hamming
from cbir.local_features.geometry import Verifier
from cbir.local_features.vlad import train as train_vlad
from cbir.models.runtime import OnnxEmbedder
from cbir.models.shared_mobilenet import export_shared_mobilenet
from cbir.output import console
from cbir.settings import get_settings

DEPTHS = (20, 50, 100)
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
    parser.add_argument(
        "--api",
        action="store_true",
        help="also index the set through a fresh stack of the pipeline and measure the API: "
        "rerank=spatial latency side by side with plain searches, and the duplicates it finds",
    )
    parser.add_argument("--api-queries", type=int, default=100, help="copies asked, per mode")
    parser.add_argument(
        "--api-only",
        action="store_true",
        help="measure the API part alone, merged into the last full run's results in --out",
    )
    parser.add_argument("--port-offset", type=int, default=11000, help="the API stack's ports")
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
    features = cached_features(folder, extractor, datas, args.workers)
    keypoints = [len(f) for f in features]
    photograph, identical = same_photographs(embeddings[:originals], features[:originals])
    groups = np.concatenate([photograph, photograph[[c.source for c in copies]]])
    if args.api_only:
        return api_only(args, paths, copies, originals, groups)
    console.print(f"local features: {np.mean(keypoints):.0f} keypoints per image on average")

    records: list[dict[str, Any]] = []
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    rankings = np.argsort(-similarity[queries], axis=1, kind="stable")[:, :-1]
    verified = verify_top(features, queries, rankings[:, : max(DEPTHS)], args.workers)
    inliers = verified.inliers
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
    candidates = get_settings().local_features.duplicate_candidates
    duplicates = near_duplicates(
        similarity,
        features,
        groups,
        queries,
        rankings,
        verified,
        originals,
        transforms,
        candidates,
    )
    # VLAD as the candidate list: SIFT-based, it ranks rotated copies far higher
    vlad_verified = verify_top(features, queries, vlad_rankings[:, :candidates], args.workers)
    # its cosines are not MobileNet's: no floor (CBIR_LOCAL_FEATURES__DUPLICATE_GEOMETRY_FLOOR)
    vlad_policy = DuplicatePolicy(geometry_floor=-1.0)
    duplicates["with VLAD candidates"] = {
        "policy": asdict(vlad_policy),
        **near_duplicates(
            vlad_similarity,
            features,
            groups,
            queries,
            vlad_rankings,
            vlad_verified,
            originals,
            transforms,
            candidates,
            vlad_policy,
        )["default"]["combined"],
    }
    labels = dataset.labels
    category = np.argsort(-vlad_similarity[:originals, :originals], axis=1, kind="stable")[:, :-1]
    records.append(
        record(
            "flowers17 (category)",
            f"VLAD ({args.words} words, {vlad.dim}-d)",
            report(category, labels, np.arange(originals)),
            [],
            category,
            labels,
            np.arange(originals),
        )
    )

    same = {r["method"]: r for r in records if r["dataset"] == "same-object"}
    gain = same["global + spatial R=50"]["mAP"] - same["global (MobileNet)"]["mAP"]
    drop = flowers[0]["mAP"] - flowers[1]["mAP"]
    combined = duplicates["default"]["combined"]
    extra: dict[str, Any] = {
        "targets": TARGETS,
        "verdicts": {
            "spatial_gain": {"value": round(gain, 4), "met": gain >= 0.10},
            "flowers17_drop": {"value": round(drop, 4), "met": drop <= 0.01},
            "latency": {
                "p50_ms": same["global + spatial R=50"]["latency_ms"]["p50"],
                "where": "in-process: the query's extraction and R verifications",
                "met": same["global + spatial R=50"]["latency_ms"]["p50"] < 300,
            },
            "duplicates": {
                "precision": combined["precision"],
                "recall": combined["recall"],
                "met": combined["precision"] >= 0.95 and combined["recall"] >= 0.90,
                "with_vlad_candidates": {
                    k: duplicates["with VLAD candidates"][k] for k in ("precision", "recall")
                },
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
            "verify_ms_per_pair": round(verified.ms_per_pair, 2),
            "identical_photograph_pairs": identical,
        },
        "settings": {
            "extractor": {"max_keypoints": args.max_keypoints, "max_side": args.max_side},
            "verifier": asdict(Verifier()),
            "spatial": asdict(SpatialPolicy()),
            "duplicates": asdict(DuplicatePolicy()),
        },
        "duplicates": duplicates,
    }
    if args.api:
        api = through_the_api(args, paths, copies, originals, groups)
        extra["api"] = api
        extra["verdicts"]["latency"] = {
            "p50_ms": api["spatial_R50_p50_ms"],
            "where": "the API, uncached, embedding included",
            "in_process_p50_ms": extra["verdicts"]["latency"]["p50_ms"],
            "met": api["spatial_R50_p50_ms"] < 300,
        }
    document = publish("local_features", records, extra, markdown, args.out)
    plot(document, args.out / "local_features.png")
    for name, verdict in document["verdicts"].items():
        console.print(f"{name}: {verdict}")
    return 0


def api_only(
    args: argparse.Namespace,
    paths: list[Path],
    copies: list[Copy],
    originals: int,
    groups: np.ndarray,
) -> int:
    """The API part again, merged into the results of the last full run (which it names)."""
    previous = json.loads((args.out / "local_features.json").read_text())
    api = through_the_api(args, paths, copies, originals, groups)
    kept = ("benchmark", "date", "command", "commit", "machine", "records")
    extra = {k: v for k, v in previous.items() if k not in kept}
    extra["in_process_part"] = {k: previous[k] for k in ("date", "command", "commit")}
    extra["api"] = api
    extra["verdicts"]["latency"] = {
        "p50_ms": api["spatial_R50_p50_ms"],
        "where": "the API, uncached, embedding included",
        "in_process_p50_ms": extra["verdicts"]["latency"].get(
            "in_process_p50_ms", extra["verdicts"]["latency"]["p50_ms"]
        ),
        "met": api["spatial_R50_p50_ms"] < 300,
    }
    document = publish("local_features", previous["records"], extra, markdown, args.out)
    plot(document, args.out / "local_features.png")
    for name, verdict in document["verdicts"].items():
        console.print(f"{name}: {verdict}")
    return 0


def same_photographs(
    embeddings: np.ndarray, features: list[LocalFeatures]
) -> tuple[np.ndarray, int]:
    """Each photograph's group: flowers17 holds the same photograph more than once (descriptors
    within cosine 0.99 and perceptual hashes within 6 bits), and a copy of one is a copy of
    the other. The groups, and how many such pairs there are."""
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, 0)
    parent = list(range(len(embeddings)))

    def root(item: int) -> int:
        while parent[item] != item:
            item = parent[item]
        return item

    pairs = 0
    for a, b in np.argwhere(np.triu(similarity) >= 0.99):
        if hamming(features[a].phash, features[b].phash) <= 6:
            pairs += 1
            parent[root(int(a))] = root(int(b))
    return np.array([root(i) for i in range(len(embeddings))]), pairs


def through_the_api(
    args: argparse.Namespace,
    paths: list[Path],
    copies: list[Copy],
    originals: int,
    groups: np.ndarray,
) -> dict[str, Any]:
    """A fresh stack indexes the photographs and the copies through the pipeline (local
    features extracted by the processors, near-duplicates recorded on the topic); then copies
    query the API uncached (`Cache-Control: no-cache`, each image once, so its embedding is
    computed too), plain and `rerank=spatial` R = 50 interleaved, and ask for their
    duplicates."""
    from cbir.adapters.event_log import KafkaEventLog
    from cbir.bench.indexed_stack import indexed_stack
    from cbir.replay.duplicates import read_records

    folders = [args.shared / "data" / "flowers17", copies[0].path.parent]
    with indexed_stack(args.shared, folders, args.port_offset) as stack:
        settings = stack.settings
        wanted, ingest_s, drained_s = stack.images, stack.indexed_s, stack.caught_up_s
        ids = [image_id_of(p.read_bytes()) for p in paths]
        # one photograph: its source, or a photograph flowers17 holds twice
        groups_of = {image_id: int(groups[i]) for i, image_id in enumerate(ids)}
        originals_ids = set(ids[:originals])
        rng = np.random.default_rng(args.seed)
        picked = rng.choice(len(copies), 2 * args.api_queries, replace=False)
        api = settings.api
        plain_ms, spatial_ms, first_source, dup_found, dup_ms = [], [], [], [], []
        with httpx.Client(base_url=f"http://{api.host}:{api.port}", timeout=60) as client:
            for n, index in enumerate(picked):
                copy = copies[index]
                data = copy.path.read_bytes()
                form = {"k": "10"}
                if n % 2:
                    form |= {"rerank": "spatial", "depth": "50"}
                began = time.perf_counter()
                response = client.post(
                    "/search",
                    files={"image": ("q", data)},
                    data=form,
                    headers={"Cache-Control": "no-cache"},
                )
                spent = 1000 * (time.perf_counter() - began)
                response.raise_for_status()
                # the copy itself is indexed too: the first other result must be its source
                others = [
                    r["image_id"]
                    for r in response.json()["results"]
                    if r["image_id"] != image_id_of(data)
                ]
                source = ids[copy.source]
                hit = bool(others) and groups_of[others[0]] == groups_of[source]
                if n % 2:
                    spatial_ms.append(spent)
                    first_source.append(hit)
                else:
                    plain_ms.append(spent)
                began = time.perf_counter()
                listed = client.get(f"/images/{image_id_of(data)}/duplicates")
                dup_ms.append(1000 * (time.perf_counter() - began))
                listed.raise_for_status()
                found = {
                    groups_of[d["image_id"]]
                    for d in listed.json()["duplicates"]
                    if d["image_id"] in originals_ids
                }
                dup_found.append(groups_of[source] in found)
        records = read_records(KafkaEventLog(settings.kafka), settings.kafka.duplicates_topic)
        copy_ids = {image_id_of(c.path.read_bytes()): ids[c.source] for c in copies}
        on_topic = [
            groups_of[source]
            in {
                groups_of[link.image_id]
                for link in records[copy_id].links
                if link.image_id in originals_ids
            }
            for copy_id, source in copy_ids.items()
            if copy_id in records
        ]

    def pct(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 1)

    return {
        "indexed": wanted,
        "ingest_s": round(ingest_s, 1),
        "ingest_images_per_s": round(wanted / ingest_s, 1),
        "duplicates_caught_up_s": round(drained_s, 1),
        "plain_p50_ms": pct(plain_ms, 50),
        "plain_p95_ms": pct(plain_ms, 95),
        "spatial_R50_p50_ms": pct(spatial_ms, 50),
        "spatial_R50_p95_ms": pct(spatial_ms, 95),
        "spatial_P@1": round(float(np.mean(first_source)), 3),
        "duplicates_endpoint_p50_ms": pct(dup_ms, 50),
        "duplicates_endpoint_source_found": round(float(np.mean(dup_found)), 3),
        "duplicates_topic_records": len(records),
        "duplicates_topic_source_found": round(float(np.mean(on_topic)), 3) if on_topic else None,
        "queries_per_mode": args.api_queries,
    }


def global_embeddings(onnx: Path, datas: Sequence[bytes]) -> np.ndarray:
    """The shared MobileNet's embeddings, computed by the runtime Triton runs (in-process)."""
    with TemporaryDirectory() as scratch:
        spec = export_shared_mobilenet(Path(scratch), onnx)
        embedder = OnnxEmbedder(Path(scratch) / spec.name / str(spec.version), intra_op_threads=2)
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


def cached_features(
    folder: Path, extractor: Extractor, datas: Sequence[bytes], workers: int
) -> list[LocalFeatures]:
    """Every image's local features, extracted once per extractor setting and kept in
    `folder` as one blob file."""
    path = folder / f"features-{extractor.max_keypoints}-{extractor.max_side}.npz"
    if path.exists():
        with np.load(path) as stored:
            blobs, ends = stored["blobs"].tobytes(), stored["ends"]
        starts = np.concatenate([[0], ends[:-1]])
        return [LocalFeatures.from_bytes(blobs[a:b]) for a, b in zip(starts, ends, strict=True)]
    features = extract_all(extractor, datas, workers)
    encoded = [f.to_bytes() for f in features]
    np.savez(
        path,
        blobs=np.frombuffer(b"".join(encoded), np.uint8),
        ends=np.cumsum([len(b) for b in encoded]),
    )
    return features


def _verify_row(job: tuple[int, list[int]]) -> tuple[list[tuple[int, float]], float]:
    query, candidates = job
    started = time.perf_counter()
    found = [_VERIFIER.verify(_FEATURES[query], _FEATURES[c]) for c in candidates]
    return [(f.inliers, f.coverage) for f in found], time.perf_counter() - started


@dataclass(frozen=True)
class Verified:
    inliers: np.ndarray  # (queries, candidates)
    coverage: np.ndarray
    ms_per_pair: float


def verify_jobs(
    features: list[LocalFeatures], jobs: list[tuple[int, list[int]]], workers: int
) -> tuple[list[list[tuple[int, float]]], float]:
    """Each job's query verified against its candidates, in worker processes: per job the
    (inliers, coverage) of each candidate, and the seconds the verifications took."""
    global _FEATURES
    _FEATURES = features
    rows, seconds = [], 0.0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("spatial verification", total=len(jobs))
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for found, spent in pool.imap(_verify_row, jobs, chunksize=4):
                rows.append(found)
                seconds += spent
                progress.advance(task)
    return rows, seconds


def verify_top(
    features: list[LocalFeatures], queries: np.ndarray, candidates: np.ndarray, workers: int
) -> Verified:
    """Every query verified against each of its candidates."""
    jobs = [(int(q), [int(c) for c in row]) for q, row in zip(queries, candidates, strict=True)]
    rows, seconds = verify_jobs(features, jobs, workers)
    table = np.array(rows, dtype=np.float64).reshape(len(jobs), candidates.shape[1], 2)
    return Verified(
        table[..., 0].astype(int), table[..., 1], 1000 * seconds / max(1, candidates.size)
    )


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
    inliers = verify_top(features, queries, rankings[:, :50], workers).inliers
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
    verified: Verified,
    originals: int,
    transforms: Sequence[str],
    candidates: int,
    policy: DuplicatePolicy | None = None,
) -> dict[str, Any]:
    """Every copy against its `candidates` nearest neighbours (by `similarity`, as ranked by
    `rankings`), as the pipeline judges them. Recall: the share of copies whose source
    photograph is found a near-duplicate. Precision: the share of pairs found that truly
    show one photograph (a copy and its source, or two copies of one source)."""
    pairs = []  # (hamming, cosine, inliers, coverage, same photograph, is the source, row)
    available = verified.inliers.shape[1]  # the sweep looks deeper than `candidates`
    for row, query in enumerate(queries):
        for rank in range(available):
            candidate = rankings[row, rank]
            same = bool(groups[candidate] == groups[query])
            pairs.append(
                (
                    hamming(features[query].phash, features[candidate].phash),
                    float(similarity[query, candidate]),
                    int(verified.inliers[row, rank]),
                    float(verified.coverage[row, rank]),
                    same,
                    same and candidate < originals,
                    rank,
                    row,
                )
            )
    names = np.array(transforms)

    def score(p: DuplicatePolicy, depth: int = candidates) -> dict[str, Any]:
        chosen = [x for x in pairs if x[6] < depth and p.decide(x[0], x[1], x[2], x[3]) is not None]
        correct = sum(x[4] for x in chosen)
        found_rows = {x[7] for x in chosen if x[5]}
        return {
            "precision": round(correct / len(chosen), 4) if chosen else 1.0,
            "recall": round(len(found_rows) / len(queries), 4),
            "pairs": len(chosen),
            "recall_by_transform": {
                t: round(len([r for r in found_rows if names[r] == t]) / int((names == t).sum()), 3)
                for t in TRANSFORMS
            },
        }

    default = policy or DuplicatePolicy()
    never = 10**6
    tiers = {
        "hash": score(DuplicatePolicy(min_cosine=-1.0, min_inliers=never)),
        "embedding": score(DuplicatePolicy(max_hamming=64, min_inliers=never)),
        "geometry": score(DuplicatePolicy(max_hamming=-1)),
        "combined": score(default),
    }
    sweep = []
    for depth in sorted(d for d in {10, 20, 50, candidates} if d <= available):
        for min_inliers in (15, 20, 30):
            for coverage in (0.0, 0.1, 0.2, 0.3):
                policy = DuplicatePolicy(min_inliers=min_inliers, min_coverage=coverage)
                found = score(policy, depth)
                found.pop("recall_by_transform")
                sweep.append({"candidates": depth, **asdict(policy), **found})
    return {"copies": len(queries), "candidates": candidates, "default": tiers, "sweep": sweep}


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
        f"Near-duplicates ({dup['copies']} copies, each against its {dup['candidates']} nearest; "
        "recall: copies whose source is found), default thresholds:",
        "",
        "| tier | precision | recall | pairs | " + " | ".join(TRANSFORMS) + " |",
        "|---|---|---|---|" + "---|" * len(TRANSFORMS),
    ]
    rows = [*dup["default"].items(), ("combined, VLAD candidates", dup["with VLAD candidates"])]
    for tier, s in rows:
        cells = " | ".join(f"{s['recall_by_transform'][t]:.2f}" for t in TRANSFORMS)
        lines.append(
            f"| {tier} | {s['precision']:.3f} | {s['recall']:.3f} | {s['pairs']} | {cells} |"
        )
    api = document.get("api")
    if api:
        lines += [
            "",
            f"Through the API (a fresh stack indexed the {api['indexed']} images through the "
            f"pipeline in {api['ingest_s']} s, {api['ingest_images_per_s']} images/s with local "
            f"features; its duplicates agent caught up at {api['duplicates_caught_up_s']} s; "
            f"then {api['queries_per_mode']} copies per mode, uncached):",
            "",
            "| search | p50 ms | p95 ms |",
            "|---|---|---|",
            f"| plain | {api['plain_p50_ms']} | {api['plain_p95_ms']} |",
            f"| rerank=spatial R=50 | {api['spatial_R50_p50_ms']} | {api['spatial_R50_p95_ms']} |",
            "",
            f"rerank=spatial P@1 (source first): {api['spatial_P@1']}; "
            f"GET /images/{{copy}}/duplicates lists the source for "
            f"{api['duplicates_endpoint_source_found']:.1%} of copies "
            f"(p50 {api['duplicates_endpoint_p50_ms']} ms); the duplicates topic "
            f"({api['duplicates_topic_records']} records) for "
            f"{api['duplicates_topic_source_found']:.1%} of copies.",
        ]
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
