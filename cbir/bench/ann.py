"""`cbir bench ann`: the ANN table of the published design, on our system: recall@10 and
queries per second against the search list size L, on 100K vectors of 2048 dimensions.

Vectors: a clustered synthetic set, documented as such (no real 2048-d model can be had
offline here: ResNet-50's pretrained weights come from a hub). Unit vectors in two levels of
clusters: super-clusters of 10 sub-clusters of about 100 vectors. At 100K a query's 10 true
neighbours lie at cosine 0.84 (its sub-cluster; the 1st and the 10th differ by 0.005, so
the exact top 10 is a fine distinction), the 100th at 0.68 (a sibling sub-cluster), unrelated
vectors at 0.0. Queries are drawn from the same distribution and are not in the base set.
Exact ground truth by brute force (numpy). Everything is cached outside the repository
(`~/.cache/cbir-stack/ann`) and reused.

Indexes: Milvus FLAT, IVF_FLAT (nprobe swept), HNSW (ef = L) and, when the server has it (the
compose setup's Milvus 2.5), DISKANN (search_list = L); and DiskANN itself through diskannpy
(Microsoft's implementation of the algorithm Milvus's DISKANN runs) with L swept, in a venv
of its own (diskannpy pins numpy 1.25). Per setting: recall@10 over every query; QPS with one
thread (queries one by one: latency p50 / p99 too) and with every core; build time; index
size on disk (DiskANN) and memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cbir.bench.common import PROJECT_ROOT, RESULTS, publish
from cbir.bench.truth import exact_neighbours
from cbir.evaluation.report import provenance_line
from cbir.output import console
from cbir.settings import Settings, get_settings

DISKANN_REQUIREMENTS = ("numpy==1.25.0", "diskannpy==0.7.0")
PUBLISHED = {"L": 10, "recall_at_10": 0.90, "vectors": "100K x 2048"}
MILVUS_INDEXES = ("FLAT", "IVF_FLAT", "HNSW", "DISKANN")
ALL_INDEXES = (*MILVUS_INDEXES, "diskannpy")
K = 10


class AnnError(RuntimeError):
    """The benchmark cannot go on; the message says what to do."""


# -- the data --------------------------------------------------------------------------------


def clustered_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors in super-clusters of sub-clusters (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    supers = max(2, count // 1000)
    subs_per_super = 10
    super_centres = rng.standard_normal((supers, dim)).astype(np.float32)
    sub_centres = super_centres[:, None, :] + 0.9 * rng.standard_normal(
        (supers, subs_per_super, dim)
    ).astype(np.float32)
    sub_centres = sub_centres.reshape(-1, dim)
    chosen = rng.integers(0, len(sub_centres), size=count)
    vectors = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 10_000):
        part = chosen[start : start + 10_000]
        noise = rng.standard_normal((len(part), dim)).astype(np.float32)
        vectors[start : start + len(part)] = sub_centres[part] + 0.6 * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    hits = [
        len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) / k


def dataset(cache: Path, size: int, dim: int, queries: int, seed: int) -> dict[str, Path]:
    """Base vectors, queries and ground truth as .npy files, made once and reused."""
    folder = cache / f"clustered-{size}x{dim}-q{queries}-s{seed}"
    files = {name: folder / f"{name}.npy" for name in ("base", "queries", "truth")}
    if all(path.exists() for path in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    console.print(f"making {size} x {dim} clustered vectors and {queries} queries")
    everything = clustered_vectors(size + queries, dim, seed)
    base, held_out = everything[:size], everything[size:]
    started = time.perf_counter()
    truth = exact_neighbours(base, held_out, 100)
    console.print(f"exact ground truth by brute force in {time.perf_counter() - started:.1f} s")
    for name, array in (("base", base), ("queries", held_out), ("truth", truth)):
        np.save(files[name], array)
    return files


# -- timing ----------------------------------------------------------------------------------


def timed_runs(
    search_one: Callable[[int], list[int]], queries: int, single: int, threads: int
) -> dict[str, Any]:
    """One thread over the first `single` queries (latencies), then every query on
    `threads` threads at once (QPS; their results give the recall)."""
    latencies = []
    for i in range(min(single, queries)):
        started = time.perf_counter()
        search_one(i)
        latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(search_one, range(queries)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    padded = np.array([(f + [-1] * K)[:K] for f in found])
    return {
        "found": padded,
        "qps_1_thread": round(len(latencies) / float(np.sum(latencies)), 1),
        "qps_all_cores": round(queries / wall, 1),
        "latency_p50_ms": round(float(np.percentile(ms, 50)), 3),
        "latency_p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


# -- Milvus ----------------------------------------------------------------------------------


def milvus_settings(
    kind: str, size: int, ls: Sequence[int]
) -> tuple[dict[str, Any], str, list[int]]:
    """Build parameters, the swept search parameter and its values."""
    nlist = int(min(4096, max(16, 4 * np.sqrt(size))))
    if kind == "FLAT":
        return {}, "", [0]
    if kind == "IVF_FLAT":
        return {"nlist": nlist}, "nprobe", [p for p in (1, 2, 4, 8, 16, 32, 64) if p <= nlist]
    if kind == "HNSW":
        return {"M": 16, "efConstruction": 200}, "ef", list(ls)
    if kind == "DISKANN":
        return {}, "search_list", list(ls)
    raise AnnError(f"unknown Milvus index {kind!r}: choose among {', '.join(MILVUS_INDEXES)}")


def run_milvus(
    settings: Settings,
    kind: str,
    files: dict[str, Path],
    ls: Sequence[int],
    single: int,
    threads: int,
) -> list[dict[str, Any]]:
    from cbir.adapters.vector_index import ScratchCollection

    base = np.load(files["base"], mmap_mode="r")
    queries, truth = np.load(files["queries"]), np.load(files["truth"])
    build, swept, values = milvus_settings(kind, len(base), ls)
    dim = int(base.shape[1])
    if kind == "DISKANN":
        refused = diskann_refused(settings, dim)
        if refused:
            return [{"index": "Milvus DISKANN", "skipped": refused}]
    scratch = ScratchCollection(settings.milvus, "ann", dim)
    try:
        started = time.perf_counter()
        scratch.insert(base)
        inserted = time.perf_counter() - started
        started = time.perf_counter()
        refused = scratch.build_index(kind, build, wait_s=7200)
        if refused:
            return [{"index": f"Milvus {kind}", "skipped": refused}]
        build_seconds = time.perf_counter() - started
        memory = scratch.memory_mib()  # the embedded server reports 0: not measured
        records = []
        for value in values:
            params = {swept: value} if swept else {}

            def search_one(i: int, params: dict[str, Any] = params) -> list[int]:
                return scratch.search_ids(queries[i], K, params)

            figures = timed_runs(search_one, len(queries), single, threads)
            found = figures.pop("found")
            record = {
                "index": f"Milvus {kind}",
                "param": swept or "-",
                "value": value if swept else None,
                "recall_at_10": round(recall_at_k(found, truth), 4),
                **figures,
                "build_seconds": round(build_seconds, 1),
                "insert_seconds": round(inserted, 1),
                "index_bytes_on_disk": None,  # inside Milvus's storage, not separable here
                "memory_mib": round(memory, 1) if memory else None,
                "build_params": build,
            }
            records.append(record)
            console.print(summary_line(record))
        return records
    finally:
        scratch.drop()


def diskann_refused(settings: Settings, dim: int, wait_s: float = 90.0) -> str:
    """Why this Milvus cannot build a DISKANN index ('' when it can), tried on 2000 vectors
    first: the embedded 2.3.5 server accepts the request, then fails in its index node
    ("bad_function_call") and retries forever, which a wait on the full set would not see."""
    from cbir.adapters.vector_index import ScratchCollection

    scratch = ScratchCollection(settings.milvus, "ann_probe", dim)
    try:
        scratch.insert(clustered_vectors(2000, dim, seed=0))
        refused = scratch.probe_index("DISKANN", 2000, wait_s)
    finally:
        scratch.drop()
    if refused and "within" in refused:
        refused += (
            " (the embedded 2.3.5 server fails in its index node: bad_function_call); run the "
            "benchmark against the compose setup's Milvus 2.5 for Milvus DISKANN"
        )
    return refused


# -- DiskANN through diskannpy ---------------------------------------------------------------


def diskann_python(home: Path) -> Path:
    """The venv with diskannpy (made once; about 20 s from PyPI)."""
    from cbir.stack.install import base_python

    venv = home / "ann-venv"
    python = venv / "bin" / "python"
    marker = venv / ".cbir-requirements"
    wanted = " ".join(DISKANN_REQUIREMENTS)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    console.print(f"installing {wanted} into {venv}")
    commands = [
        [str(base_python()), "-m", "venv", str(venv)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *DISKANN_REQUIREMENTS,
        ],
    ]
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise AnnError(
                f"could not set up diskannpy ({' '.join(command[:3])} ...): "
                f"{done.stderr.strip()[-500:]}; check that PyPI is reachable and run again"
            )
    marker.write_text(wanted)
    return python


def run_diskannpy(
    home: Path, files: dict[str, Path], ls: Sequence[int], single: int
) -> list[dict[str, Any]]:
    python = diskann_python(home)
    index_dir = files["base"].parent / "diskann-R56-L100"
    result = files["base"].parent / "diskann-result.json"
    command = [
        str(python),
        str(Path(__file__).with_name("diskann_worker.py")),
        "--data", str(files["base"]),
        "--queries", str(files["queries"]),
        "--truth", str(files["truth"]),
        "--index-dir", str(index_dir),
        "--single-queries", str(single),
        "--ls", *map(str, ls),
        "--result", str(result),
    ]  # fmt: skip
    result.unlink(missing_ok=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-1500:]
        raise AnnError(f"the DiskANN run failed: {output}")
    records: list[dict[str, Any]] = json.loads(result.read_text())
    for record in records:
        console.print(summary_line(record))
    return records


# -- the benchmark ---------------------------------------------------------------------------


def summary_line(r: dict[str, Any]) -> str:
    setting = f"{r['param']}={r['value']}" if r.get("value") is not None else ""
    return (
        f"{r['index']:<22} {setting:<14} recall@10 {r['recall_at_10']:.4f}  "
        f"QPS {r['qps_1_thread']:8.1f} (1 thread) {r['qps_all_cores']:8.1f} (all cores)  "
        f"p50 {r['latency_p50_ms']:.2f} ms  p99 {r['latency_p99_ms']:.2f} ms"
    )


def real_files(
    settings: Settings, cache: Path, shared: Path, size: int, queries: int, seed: int
) -> dict[str, Path]:
    """The real-descriptor set (cbir/bench/ann_real.py) with the shared MobileNet, exported once."""
    from cbir.bench.ann_real import real_dataset
    from cbir.models.shared_mobilenet import export_shared_mobilenet

    onnx = shared / "models" / "mobilenet_v1_embed.onnx"
    if not onnx.exists():
        raise AnnError(f"{onnx}: not found; pass --shared with the shared models and data")
    repository = cache / "models"
    if not (repository / "mobilenet" / "1").exists():
        export_shared_mobilenet(repository, onnx)
    folders = [shared / "data" / "flowers17", shared / "data" / "cifar10-test"]
    return real_dataset(cache, repository / "mobilenet" / "1", folders, size, queries, seed)


def run_benchmark(
    settings: Settings,
    size: int,
    dim: int,
    queries: int,
    ls: Sequence[int],
    indexes: Sequence[str],
    single: int,
    seed: int = 7,
    cache: Path | None = None,
    real_from: Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The sweep on synthetic vectors, or with `real_from` (the shared folder) on real
    descriptors of augmented photographs (then `dim` is the model's)."""
    cache = cache or settings.stack.home / "ann"
    if real_from is None:
        files = dataset(cache, size, dim, queries, seed)
        kind = "clustered synthetic unit vectors (see the notes)"
        notes = __doc__ or ""
    else:
        from cbir.bench import ann_real

        files = real_files(settings, cache, real_from, size, queries, seed)
        kind = "real descriptors: augmented shared photographs through MobileNet (see the notes)"
        notes = ann_real.__doc__ or ""
    dim = int(np.load(files["base"], mmap_mode="r").shape[1])
    threads = os.cpu_count() or 1
    records: list[dict[str, Any]] = []
    for index in indexes:
        console.print(f"{index}: building on {size} x {dim}")
        if index == "diskannpy":
            records += run_diskannpy(settings.stack.home, files, ls, single)
        else:
            records += run_milvus(settings, index, files, ls, single, threads)
    extra = {
        "vectors": {"kind": kind, "size": size, "dim": dim, "queries": queries, "seed": seed},
        "published": PUBLISHED,
        "threads_all_cores": threads,
        "notes": notes.strip().splitlines(),
    }
    return records, extra


def ann_markdown(document: dict[str, Any]) -> str:
    records = [r for r in document["records"] if "skipped" not in r]
    vectors = document["vectors"]
    lines = [
        provenance_line(document),
        f"{vectors['size']} x {vectors['dim']} {vectors['kind']}; {vectors['queries']} queries.",
        "",
        "| L | published DiskANN recall@10 | DiskANN (diskannpy) recall@10 | QPS, 1 thread "
        "| QPS, all cores | Milvus HNSW (ef = L) recall@10 | QPS, 1 thread | QPS, all cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["index"], r.get("value")): r for r in records}
    for value in sorted({r["value"] for r in records if r["param"] == "L"}):
        disk = by.get(("DiskANN (diskannpy)", value), {})
        hnsw = by.get(("Milvus HNSW", value), {})
        published = f">= {PUBLISHED['recall_at_10']}" if value == PUBLISHED["L"] else ""
        lines.append(
            f"| {value} | {published} | {disk.get('recall_at_10', '')} "
            f"| {disk.get('qps_1_thread', '')} | {disk.get('qps_all_cores', '')} "
            f"| {hnsw.get('recall_at_10', '')} | {hnsw.get('qps_1_thread', '')} "
            f"| {hnsw.get('qps_all_cores', '')} |"
        )
    lines += [
        "",
        "| index | setting | recall@10 | QPS 1 thread | QPS all cores | p50, ms | p99, ms "
        "| build, s | on disk, MiB | memory, MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        setting = f"{r['param']}={r['value']}" if r.get("value") is not None else ""
        disk = r.get("index_bytes_on_disk")
        lines.append(
            f"| {r['index']} | {setting} | {r['recall_at_10']} | {r['qps_1_thread']} "
            f"| {r['qps_all_cores']} | {r['latency_p50_ms']} | {r['latency_p99_ms']} "
            f"| {r.get('build_seconds')} | {round(disk / 2**20, 1) if disk else 'n/a'} "
            f"| {r.get('memory_mib') or 'n/a'} |"
        )
    for r in document["records"]:
        if "skipped" in r:
            lines.append(f"\n{r['index']}: skipped, {r['skipped']}")
    return "\n".join(lines) + "\n"


def comparison_markdown(synthetic: dict[str, Any], real: dict[str, Any]) -> str:
    """recall@10 against L on both sets side by side, with the published figure."""

    def recall(document: dict[str, Any], index: str, value: int) -> str:
        for r in document["records"]:
            if r["index"] == index and r.get("value") == value and "skipped" not in r:
                return str(r["recall_at_10"])
        return ""

    def size(document: dict[str, Any]) -> str:
        v = document["vectors"]
        return f"{v['size'] // 1000}K x {v['dim']}"

    s, r = size(synthetic), size(real)
    lines = [
        f"| L | published DiskANN ({PUBLISHED['vectors']}, real) | DiskANN, synthetic {s} "
        f"| DiskANN, real {r} | HNSW (ef = L), synthetic {s} | HNSW (ef = L), real {r} |",
        "|---|---|---|---|---|---|",
    ]
    values = sorted(
        {x["value"] for d in (synthetic, real) for x in d["records"] if x.get("param") == "L"}
    )
    for value in values:
        published = f">= {PUBLISHED['recall_at_10']}" if value == PUBLISHED["L"] else ""
        lines.append(
            f"| {value} | {published} | {recall(synthetic, 'DiskANN (diskannpy)', value)} "
            f"| {recall(real, 'DiskANN (diskannpy)', value)} "
            f"| {recall(synthetic, 'Milvus HNSW', value)} | {recall(real, 'Milvus HNSW', value)} |"
        )
    return "\n".join(lines) + "\n"


def ann_plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in document["records"]:
        if "skipped" not in r:
            groups.setdefault(r["index"], []).append(r)
    for axis, key, title in (
        (axes[0], "qps_1_thread", "one thread"),
        (axes[1], "qps_all_cores", f"all cores ({document['threads_all_cores']})"),
    ):
        for name, rows in groups.items():
            axis.plot(
                [r["recall_at_10"] for r in rows], [r[key] for r in rows], marker="o", label=name
            )
        axis.set_xlabel("recall@10")
        axis.set_ylabel("queries per second")
        axis.set_yscale("log")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    vectors = document["vectors"]
    kind = vectors["kind"].split(" (")[0]
    figure.suptitle(f"Recall vs QPS, {vectors['size']} x {vectors['dim']}, {kind}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.install_only:
        diskann_python(settings.stack.home)
        return 0
    try:
        records, extra = run_benchmark(
            settings,
            args.size,
            args.dim,
            args.queries,
            args.ls,
            args.indexes,
            args.single,
            real_from=args.shared if args.vectors == "real" else None,
        )
    except AnnError as exc:
        console.print(f"[red]error[/]: {exc}")
        return 2
    out = args.out or RESULTS
    synthetic = out / "ann.json"
    render = ann_markdown
    if args.vectors == "real" and synthetic.exists():
        earlier = json.loads(synthetic.read_text())

        def render(document: dict[str, Any]) -> str:
            return (
                ann_markdown(document) + f"\nBeside the synthetic set ({synthetic.name}: measured "
                f"{earlier['date'][:10]}, commit {earlier['commit']}), recall@10:\n\n"
                + comparison_markdown(earlier, document)
            )

    document = publish(args.name, records, extra, render, out)
    ann_plot(document, out / f"{args.name}_recall_qps.png")
    console.print(f"and {args.name}_recall_qps.png")
    return 0


def register(actions: Any) -> None:
    ann = actions.add_parser(
        "ann", help="recall@10 and QPS against the search list size L", description=__doc__
    )
    ann.add_argument("--size", type=int, default=100_000, help="base vectors")
    ann.add_argument("--dim", type=int, default=2048, help="synthetic vectors' dimension")
    ann.add_argument(
        "--vectors",
        choices=("synthetic", "real"),
        default="synthetic",
        help="clustered synthetic vectors, or real descriptors of augmented shared photographs",
    )
    ann.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared")
    ann.add_argument("--queries", type=int, default=1000)
    ann.add_argument("--ls", type=int, nargs="+", default=[10, 20, 30, 40, 50, 100])
    ann.add_argument("--indexes", nargs="+", default=list(ALL_INDEXES), choices=ALL_INDEXES)
    ann.add_argument("--single", type=int, default=200, help="queries timed one by one")
    ann.add_argument("--out", type=Path, help="folder for the outputs (bench/results)")
    ann.add_argument("--name", default="ann")
    ann.add_argument(
        "--install-only", action="store_true", help="only set up diskannpy's venv, then stop"
    )
    ann.set_defaults(run=run)
