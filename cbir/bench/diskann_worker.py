"""DiskANN (Microsoft's diskannpy) for the ANN benchmark, run by `cbir bench ann` in a venv of
its own: diskannpy pins numpy 1.25, the project uses 1.26. Needs nothing but numpy and
diskannpy; reads .npy files, writes one JSON document (DiskANN logs on stdout).

Builds a disk index (graph on disk, PQ-compressed vectors in memory for navigation, full
vectors read from disk to re-rank: the algorithm Milvus's DISKANN index runs) unless the
index directory already holds one, then searches with each search list size L: one thread
(query by query: latency and QPS) and every core (a batch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = [
        len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) / k


def main(argv: list[str]) -> int:
    import diskannpy

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--ls", type=int, nargs="+", required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--graph-degree", type=int, default=56)
    parser.add_argument("--build-complexity", type=int, default=100)
    parser.add_argument("--pq-budget-ratio", type=float, default=0.125)
    parser.add_argument("--single-queries", type=int, default=200)
    parser.add_argument("--result", type=Path, required=True, help="where the JSON goes")
    args = parser.parse_args(argv)

    threads = os.cpu_count() or 1
    data = np.load(args.data, mmap_mode="r")
    queries = np.load(args.queries)
    truth = np.load(args.truth)
    built = (args.index_dir / "ann_disk.index").exists()
    build_seconds = None
    if not built:
        args.index_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        diskannpy.build_disk_index(
            data=np.ascontiguousarray(data, dtype=np.float32),
            distance_metric="l2",  # unit vectors: the same order as inner product
            index_directory=str(args.index_dir),
            complexity=args.build_complexity,
            graph_degree=args.graph_degree,
            # the PQ codes kept in memory: Milvus's default budget, 1/8 of the raw vectors
            search_memory_maximum=data.nbytes * args.pq_budget_ratio / 2**30,
            build_memory_maximum=max(1.0, data.nbytes * 3 / 2**30),
            num_threads=threads,
        )
        build_seconds = time.perf_counter() - started
        (args.index_dir / "build_seconds").write_text(f"{build_seconds}\n")
    elif (args.index_dir / "build_seconds").exists():
        build_seconds = float((args.index_dir / "build_seconds").read_text())
    del data
    before = rss_mib()
    index = diskannpy.StaticDiskIndex(
        str(args.index_dir), threads, num_nodes_to_cache=0, distance_metric="l2"
    )
    memory = rss_mib() - before
    size = sum(f.stat().st_size for f in args.index_dir.iterdir() if f.is_file())
    records: list[dict[str, Any]] = []
    for complexity in args.ls:
        single = queries[: args.single_queries]
        latencies = []
        for query in single:
            started = time.perf_counter()
            index.search(query, args.k, complexity)
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        found, _ = index.batch_search(queries, args.k, complexity, threads)
        batch_seconds = time.perf_counter() - started
        ms = np.array(latencies) * 1000
        records.append(
            {
                "index": "DiskANN (diskannpy)",
                "param": "L",
                "value": complexity,
                "recall_at_10": round(recall_at(np.asarray(found), truth, args.k), 4),
                "qps_1_thread": round(len(single) / float(np.sum(latencies)), 1),
                "qps_all_cores": round(len(queries) / batch_seconds, 1),
                "latency_p50_ms": round(float(np.percentile(ms, 50)), 3),
                "latency_p99_ms": round(float(np.percentile(ms, 99)), 3),
                "build_seconds": round(build_seconds, 1) if build_seconds else None,
                "index_bytes_on_disk": size,
                "memory_mib": round(memory, 1),
                "build_params": {
                    "graph_degree": args.graph_degree,
                    "build_complexity": args.build_complexity,
                    "pq_budget_ratio": args.pq_budget_ratio,
                },
            }
        )
    args.result.write_text(json.dumps(records))  # stdout is DiskANN's own log
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
