"""`cbir bench duplicates`: the near-duplicate check's quality and CPU per image, before and
after its cheap tiers, side by side in one run on the transformed-copies set.

The set (cbir/bench/same_object.py, made once and cached): `--sources` flowers17 photographs,
ten transformed copies each (crop, rotate, scale, perspective, jpeg, colour, text, flip,
screenshot, combo), among all 1360 flowers17 photographs. Every copy is judged against its
`--candidates` nearest neighbours by the global descriptor (the shared MobileNet), as the
duplicates stage judges a new image. Precision: the share of pairs called duplicates that
show one photograph; recall: the share of copies whose source is called a duplicate.

- before: what the stage did until now: SIFT on the image at 512 px, every neighbour's
  features read, and every neighbour at least 0.5 similar verified one by one with all of
  its keypoints (30 inliers over 20 % of both pictures);
- after (the settings' defaults): SIFT at `local_features.max_side`, only neighbours a tier
  could call duplicates read, their `duplicate_keypoints` strongest keypoints compared in one
  product for all, and RANSAC only where the tentative matches can reach the inlier
  threshold (`Verifier.verify_many`).

CPU-ms per image is the judging alone (reads from the store and the Milvus search come on
top: `cbir bench ingest --local-features on` measures the pipeline), on one thread; the
extraction's CPU-ms per image at each size is measured on a sample. Writes
bench/results/duplicates.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cbir.bench.common import RESULTS, publish
from cbir.bench.local_features import cached_features, global_embeddings, same_photographs
from cbir.bench.same_object import TRANSFORMS, make_copies
from cbir.domain.spatial import MIRROR_MIN_COSINE, DuplicatePolicy
from cbir.evaluation.report import provenance_line
from cbir.evaluation.run import load_dataset
from cbir.local_features.duplicates import DuplicateFinder, Neighbour
from cbir.local_features.features import Extractor, LocalFeatures, hamming
from cbir.local_features.geometry import Verifier
from cbir.output import console
from cbir.settings import get_settings

BEFORE_POLICY = DuplicatePolicy(min_inliers=30, geometry_floor=0.5, min_coverage=0.2)
BEFORE: dict[str, Any] = {"max_side": 512, "keypoints": 500, "policy": BEFORE_POLICY}
TARGETS = {
    "quality": "precision >= 0.95 at recall >= 0.90",
    "cost": "near-duplicate judging <= 10 CPU-ms per image",
}
Judge = Callable[[LocalFeatures, list[Neighbour], dict[str, LocalFeatures]], list[str]]


def judge_before(policy: DuplicatePolicy) -> Judge:
    """The check as it was: every neighbour read, each verified one by one, all keypoints."""
    verifier = Verifier()

    def judge(
        query: LocalFeatures, neighbours: list[Neighbour], features: dict[str, LocalFeatures]
    ) -> list[str]:
        found = []
        for neighbour in neighbours:
            other = features[neighbour.image_id]
            distance = hamming(query.phash, other.phash)
            inliers, coverage = None, 0.0
            if policy.needs_geometry(distance, neighbour.cosine):
                verified = verifier.verify(query, other, neighbour.cosine >= MIRROR_MIN_COSINE)
                inliers, coverage = verified.inliers, verified.coverage
            if policy.decide(distance, neighbour.cosine, inliers, coverage) is not None:
                found.append(neighbour.image_id)
        return found

    return judge


def judge_after(finder: DuplicateFinder) -> Judge:
    def judge(
        query: LocalFeatures, neighbours: list[Neighbour], features: dict[str, LocalFeatures]
    ) -> list[str]:
        # only the neighbours a tier could call duplicates are handed over (as read)
        asked = {n.image_id: features[n.image_id] for n in neighbours}
        return [f.image_id for f in finder.judge(query, neighbours, asked)]

    return judge


def measure(
    judge: Judge,
    features: list[LocalFeatures],
    similarity: np.ndarray,
    rankings: np.ndarray,
    queries: np.ndarray,
    groups: np.ndarray,
    originals: int,
    transforms: list[str],
    may_read: Callable[[float], bool],
) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    chosen = correct = reads = 0
    found_rows: list[int] = []
    spent = 0.0
    with threadpool_limits(1):  # one thread: its CPU is the stage's
        for row, query in enumerate(queries):
            neighbours = [
                Neighbour(str(c), None, float(similarity[query, c])) for c in rankings[row]
            ]
            started = time.process_time()
            readable = [n for n in neighbours if may_read(n.cosine)]
            by_id = {n.image_id: features[int(n.image_id)] for n in readable}
            found = judge(features[query], readable, by_id)
            spent += time.process_time() - started
            reads += len(readable)
            chosen += len(found)
            correct += sum(groups[int(f)] == groups[query] for f in found)
            if any(groups[int(f)] == groups[query] and int(f) < originals for f in found):
                found_rows.append(row)
    names = np.array(transforms)
    return {
        "precision": round(correct / chosen, 4) if chosen else 1.0,
        "recall": round(len(found_rows) / len(queries), 4),
        "pairs": chosen,
        "reads_per_image": round(reads / len(queries), 1),
        "judge_cpu_ms_per_image": round(1000 * spent / len(queries), 2),
        "recall_by_transform": {
            t: round(sum(names[r] == t for r in found_rows) / int((names == t).sum()), 3)
            for t in TRANSFORMS
        },
    }


def extraction_ms(extractor: Extractor, datas: list[bytes]) -> float:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        extractor.extract(datas[0])
        started = time.process_time()
        for data in datas:
            extractor.extract(data)
        return 1000 * (time.process_time() - started) / len(datas)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    local = settings.local_features
    dataset = load_dataset(args.shared / "data" / "flowers17")
    originals = len(dataset.paths)
    cache = settings.stack.home / "bench-cache"
    copies = make_copies(list(dataset.paths), args.sources, args.seed, cache, lambda: None)
    paths = list(dataset.paths) + [c.path for c in copies]
    datas = [p.read_bytes() for p in paths]
    folder = copies[0].path.parent
    global_file = folder / "global-mobilenet.npy"
    if global_file.exists():
        embeddings = np.load(global_file)
    else:
        embeddings = global_embeddings(args.shared / "models" / "mobilenet_v1_embed.onnx", datas)
        np.save(global_file, embeddings)
    queries = np.arange(originals, len(paths))
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    rankings = np.argsort(-similarity[queries], axis=1, kind="stable")[:, : args.candidates]
    transforms = [c.transform for c in copies]
    sample = datas[:: max(1, len(datas) // 100)][:100]

    after_policy = DuplicatePolicy(
        local.duplicate_max_hamming,
        local.duplicate_min_cosine,
        local.duplicate_min_inliers,
        local.duplicate_geometry_floor,
        local.duplicate_min_coverage,
    )
    after = {"max_side": local.max_side, "keypoints": local.duplicate_keypoints}
    runs: list[tuple[str, dict[str, Any], DuplicatePolicy, Callable[[], Judge], bool]] = [
        ("before", BEFORE, BEFORE_POLICY, lambda: judge_before(BEFORE_POLICY), False),
        (
            "after",
            {**after, "policy": after_policy},
            after_policy,
            lambda: judge_after(
                DuplicateFinder(None, after_policy, keypoints=local.duplicate_keypoints)
            ),
            True,
        ),
    ]
    records = []
    for name, config, policy, make, cheap_reads in runs:
        extractor = Extractor(local.max_keypoints, config["max_side"])
        features = cached_features(folder, extractor, datas, args.workers)
        photograph, _ = same_photographs(embeddings[:originals], features[:originals])
        groups = np.concatenate([photograph, photograph[[c.source for c in copies]]])
        console.print(f"{name}: judging {len(queries)} copies")
        result = measure(
            make(),
            features,
            similarity,
            rankings,
            queries,
            groups,
            originals,
            transforms,
            policy.may_be_duplicate if cheap_reads else (lambda _cosine: True),
        )
        records.append(
            {
                "check": name,
                "max_side": config["max_side"],
                "keypoints_matched": config["keypoints"],
                "policy": asdict(policy),
                "extract_cpu_ms_per_image": round(extraction_ms(extractor, sample), 1),
                **result,
            }
        )
        console.print(records[-1])
    after_record = records[-1]
    extra = {
        "copies": len(queries),
        "sources": args.sources,
        "candidates": args.candidates,
        "targets": {
            "quality": {
                "precision": after_record["precision"],
                "recall": after_record["recall"],
                "met": after_record["precision"] >= 0.95 and after_record["recall"] >= 0.90,
            },
            "cost": {
                "judge_cpu_ms_per_image": after_record["judge_cpu_ms_per_image"],
                "met": after_record["judge_cpu_ms_per_image"] <= 10,
            },
        },
    }
    publish("duplicates", records, extra, markdown, args.out)
    return 0


def markdown(document: dict[str, Any]) -> str:
    lines = [
        provenance_line(document),
        "",
        f"{document['copies']} transformed copies of {document['sources']} flowers17 "
        f"photographs, each judged against its {document['candidates']} nearest neighbours "
        "(global descriptor), among all 1360 photographs.",
        "",
        "| check | SIFT side | keypoints matched | floor | inliers | coverage | precision "
        "| recall | neighbours read / image | judging CPU-ms / image | SIFT CPU-ms / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in document["records"]:
        p = r["policy"]
        lines.append(
            f"| {r['check']} | {r['max_side']} | {r['keypoints_matched']} "
            f"| {p['geometry_floor']} | {p['min_inliers']} | {p['min_coverage']} "
            f"| {r['precision']} | {r['recall']} | {r['reads_per_image']} "
            f"| {r['judge_cpu_ms_per_image']} | {r['extract_cpu_ms_per_image']} |"
        )
    lines += ["", "Recall per transform:", ""]
    lines.append("| check | " + " | ".join(TRANSFORMS) + " |")
    lines.append("|---|" + "---|" * len(TRANSFORMS))
    for r in document["records"]:
        row = r["recall_by_transform"]
        lines.append(f"| {r['check']} | " + " | ".join(str(row[t]) for t in TRANSFORMS) + " |")
    lines += ["", "Targets:", ""]
    for key, value in document["targets"].items():
        lines.append(f"- {TARGETS[key]}: {value}")
    return "\n".join(lines) + "\n"


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser(
        "duplicates", help="near-duplicate quality and CPU per image, before and after"
    )
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--sources", type=int, default=200, help="source photographs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--candidates", type=int, default=50, help="neighbours judged")
    parser.add_argument("--workers", type=int, default=2, help="extraction processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.set_defaults(run=run)
