"""`cbir bench embedding`: images per second and CPU time per image for the embedding step.

ResNet-50 at 224x224 through Triton (gRPC and HTTP; client batch 1, 8, 32; concurrency 1, 4,
16; encoded bytes and float tensors), in-process ONNX Runtime and torch eager, on flowers17
photos (decoding included); the shared MobileNet's throughput; and Flowers17 retrieval quality
(leave-one-out, exhaustive cosine) for every model with real weights.

ResNet-50 runs with seeded random weights: the model hub cannot be reached here, and speed
does not depend on the weights' values. Its retrieval quality is therefore not reported.
Needs the local stack up (`cbir stack up`); exports its models into the stack's repository.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from cbir.adapters.embedder import TritonEmbedder
from cbir.bench.common import RESULTS, publish
from cbir.evaluation.metrics import leave_one_out
from cbir.evaluation.report import provenance_line
from cbir.models.export import export_model, image_files
from cbir.models.runtime import SPEC_FILE, ModelSpec, OnnxEmbedder, Pooling
from cbir.models.shared_mobilenet import export_shared_mobilenet
from cbir.output import console
from cbir.settings import PROJECT_ROOT, Settings, get_settings
from cbir.stack.launcher import Launcher

RESNET = "resnet50_random"
RESNET_TENSOR = "resnet50_random_tensor"
MOBILENET = "mobilenet"
MOBILENET_REFERENCE = {"map": 0.541, "p@1": 0.896, "p@10": 0.819}  # ../shared/data/README.md


def ensure_models(settings: Settings, mobilenet_onnx: Path) -> None:
    """Export (once) and load the benchmark's models in the stack's Triton."""
    repository = settings.triton.model_repository
    wanted: dict[str, Callable[[], ModelSpec]] = {
        RESNET: lambda: export_model(
            repository,
            RESNET,
            1,
            timm_arch="resnet50",
            weights="random",
            seed=0,
            pooling=Pooling("gap"),
        ),
        RESNET_TENSOR: lambda: export_model(
            repository,
            RESNET_TENSOR,
            1,
            timm_arch="resnet50",
            weights="random",
            seed=0,
            pooling=Pooling("gap"),
            input_kind="TENSOR",
        ),
        MOBILENET: lambda: export_shared_mobilenet(repository, mobilenet_onnx, MOBILENET),
    }
    for name, export in wanted.items():
        if not (repository / name / "1" / SPEC_FILE).exists():
            console.print(f"exporting {name}")
            export()
        TritonEmbedder(settings.triton, name, protocol="http").load()


class CpuMeter:
    """CPU seconds spent by a process tree (the Triton server and its model stubs) or by us."""

    def __init__(
        self, pid: int | None = None, children: bool = True, pids: list[int] | None = None
    ) -> None:
        """`pids`: several trees, summed (a role's workers)."""
        roots = pids or [pid or os.getpid()]
        self.processes = [psutil.Process(p) for p in roots]
        self.children = children

    def seconds(self) -> float:
        processes = list(self.processes)
        if self.children:
            for root in self.processes:
                try:
                    processes += root.children(recursive=True)
                except psutil.Error:
                    continue
        total = 0.0
        for proc in processes:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total


def timed(images: int, work: Callable[[], None], meters: dict[str, CpuMeter]) -> dict[str, float]:
    before = {name: meter.seconds() for name, meter in meters.items()}
    started = time.perf_counter()
    work()
    elapsed = time.perf_counter() - started
    record = {
        "images": images,
        "seconds": round(elapsed, 3),
        "images_per_s": round(images / elapsed, 1),
    }
    for name, meter in meters.items():
        record[f"{name}_cpu_ms_per_image"] = round(
            (meter.seconds() - before[name]) * 1000 / images, 1
        )
    return record


def chunks(items: Sequence[Any], size: int, total: int) -> Iterator[list[Any]]:
    cycle = itertools.cycle(items)
    sent = 0
    while sent < total:
        count = min(size, total - sent)
        yield [next(cycle) for _ in range(count)]
        sent += count


_worker_embedder: OnnxEmbedder | None = None


def _start_worker(model_dir: Path) -> None:
    global _worker_embedder
    _worker_embedder = OnnxEmbedder(model_dir, intra_op_threads=1)


def _worker_embed(images: list[bytes]) -> int:
    assert _worker_embedder is not None
    _worker_embedder.embed(images)
    return len(images)


def embed_in_processes(pool: ProcessPoolExecutor, images: Sequence[bytes], total: int) -> None:
    """Work spread over processes of one ONNX Runtime thread each: Triton's own shape."""
    list(pool.map(_worker_embed, chunks(images, 8, total)))


def embed_all(embedder: OnnxEmbedder, images: Sequence[bytes], total: int) -> None:
    for chunk in chunks(images, 32, total):
        embedder.embed(chunk)


def triton_run(
    settings: Settings,
    model: str,
    protocol: str,
    batch: int,
    concurrency: int,
    payload: Sequence[Any],
    total: int,
    tensor: bool,
) -> None:
    """`concurrency` threads, each with its own client, send batches until `total` are done."""
    work = chunks(payload, batch, total)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker() -> None:
        embedder = TritonEmbedder(settings.triton, model, protocol=protocol)  # type: ignore[arg-type]
        try:
            while True:
                with lock:
                    request = next(work, None)
                if request is None:
                    return
                if tensor:
                    embedder.embed_tensors(np.stack(request))
                else:
                    embedder.embed(request)
        except BaseException as exc:
            failures.append(exc)
        finally:
            embedder.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    shared = args.shared
    photos = image_files(shared / "data" / "flowers17")
    step = max(1, len(photos) // 256)
    sample = [p.read_bytes() for p in photos[::step][:256]]
    ensure_models(settings, shared / "models" / "mobilenet_v1_embed.onnx")
    triton_pid = Launcher(settings, only=["triton"]).service("triton").process.pid
    server = {"server": CpuMeter(triton_pid)} if triton_pid else {}
    client = {"client": CpuMeter()}
    repository = settings.triton.model_repository
    records: list[dict[str, Any]] = []

    def record(**fields: Any) -> None:
        records.append(fields)
        console.print(" ".join(f"{k}={v}" for k, v in fields.items()))

    cores = psutil.cpu_count() or 1
    for model in (RESNET, MOBILENET):
        embedder = OnnxEmbedder(repository / model / "1", intra_op_threads=cores)
        embedder.embed(sample[:8])  # warm-up
        total = args.images
        result = timed(total, partial(embed_all, embedder, sample, total), client)
        record(model=model, path="in-process onnxruntime", threads=cores, batch=32, **result)
        with ProcessPoolExecutor(
            cores, initializer=_start_worker, initargs=(repository / model / "1",)
        ) as pool:
            embed_in_processes(pool, sample, 8 * cores)  # start and warm every worker
            result = timed(total, partial(embed_in_processes, pool, sample, total), client)
        record(
            model=model,
            path=f"in-process onnxruntime, {cores} processes",
            threads=1,
            batch=8,
            **result,
        )

    if not args.skip_torch:
        import timm
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(cores)
        network = timm.create_model(
            "resnet50", pretrained=False, num_classes=0, global_pool=""
        ).eval()
        reference = OnnxEmbedder(repository / RESNET / "1")

        def torch_eager() -> None:
            with torch.inference_mode():
                for chunk in chunks(sample, 32, args.images):
                    inputs = torch.from_numpy(np.stack([reference.prepare(b) for b in chunk]))
                    reference.describe(network(inputs).numpy())

        torch_eager()  # warm-up
        record(
            model=RESNET,
            path="in-process torch eager",
            threads=cores,
            batch=32,
            **timed(args.images, torch_eager, client),
        )

    meters = {**server, **client}
    for protocol, batch, concurrency in itertools.product(("grpc", "http"), (1, 8, 32), (1, 4, 16)):
        total = max(args.images, 2 * batch * concurrency)
        triton_run(settings, RESNET, protocol, batch, 1, sample, batch, tensor=False)  # warm-up
        run_config = partial(
            triton_run, settings, RESNET, protocol, batch, concurrency, sample, total, tensor=False
        )
        result = timed(total, run_config, meters)
        record(
            model=RESNET,
            path=f"triton {protocol}",
            input="encoded bytes",
            batch=batch,
            concurrency=concurrency,
            **result,
        )

    prepared = [OnnxEmbedder(repository / RESNET / "1").prepare(b) for b in sample[:64]]
    jpeg_bytes = float(np.mean([len(b) for b in sample]))
    for kind, payload, tensor in (
        ("encoded bytes", sample, False),
        ("float tensors", prepared, True),
    ):
        model = RESNET_TENSOR if tensor else RESNET
        triton_run(settings, model, "grpc", 8, 1, payload, 8, tensor=tensor)
        run_config = partial(
            triton_run, settings, model, "grpc", 8, 4, payload, args.images, tensor=tensor
        )
        result = timed(args.images, run_config, meters)
        size = prepared[0].nbytes if tensor else jpeg_bytes
        record(
            model=model,
            path="triton grpc",
            input=kind,
            batch=8,
            concurrency=4,
            request_bytes_per_image=round(size),
            **result,
        )

    triton_run(settings, MOBILENET, "grpc", 32, 1, sample, 32, tensor=False)
    result = timed(
        args.images * 2,
        lambda: triton_run(
            settings, MOBILENET, "grpc", 32, 4, sample, args.images * 2, tensor=False
        ),
        meters,
    )
    record(
        model=MOBILENET,
        path="triton grpc",
        input="encoded bytes",
        batch=32,
        concurrency=4,
        **result,
    )

    quality = flowers_quality(settings, photos)
    extra = {"quality": quality, "notes": __doc__.strip().splitlines()[-4:]}
    publish("embedding", records, extra, render_markdown)
    print_summary(records, quality)
    return 0


def flowers_quality(settings: Settings, photos: list[Path]) -> list[dict[str, Any]]:
    """Leave-one-out retrieval on all of flowers17, for the models with real weights."""
    embedder = TritonEmbedder(settings.triton, MOBILENET)
    vectors, errors = embedder.embed([p.read_bytes() for p in photos])
    if any(errors):
        raise RuntimeError(f"{sum(map(bool, errors))} flowers17 images were rejected")
    labels = np.array([p.parent.name for p in photos])
    result = leave_one_out(vectors, labels, ks=(1, 10))
    return [
        {
            "model": MOBILENET,
            "model_id": embedder.identity().model_id,
            "images": len(photos),
            "map": round(result.mean_average_precision, 4),
            "p@1": round(result.precision_at[1], 4),
            "p@10": round(result.precision_at[10], 4),
            "reference": MOBILENET_REFERENCE,
        }
    ]


def print_summary(records: list[dict[str, Any]], quality: list[dict[str, Any]]) -> None:
    resnet_ort = max(
        (
            r
            for r in records
            if r["model"] == RESNET and r["path"].startswith("in-process onnxruntime")
        ),
        key=lambda r: r["images_per_s"],
    )
    best_triton = max(
        (
            r
            for r in records
            if r["model"] == RESNET
            and r["path"].startswith("triton")
            and r.get("concurrency", 0) >= 4
            and r.get("input") == "encoded bytes"
        ),
        key=lambda r: r["images_per_s"],
    )
    ratio = best_triton["images_per_s"] / resnet_ort["images_per_s"]
    console.print(
        f"ResNet-50: Triton best at concurrency >= 4 {best_triton['images_per_s']} images/s "
        f"({best_triton['path']}, batch {best_triton['batch']}, concurrency "
        f"{best_triton['concurrency']}) = {ratio:.0%} of the best in-process ONNX Runtime "
        f"({resnet_ort['path']}: {resnet_ort['images_per_s']} images/s); "
        "target >= 90% and >= 40 images/s"
    )
    for q in quality:
        console.print(
            f"{q['model']} flowers17: mAP {q['map']}, P@1 {q['p@1']}, P@10 {q['p@10']} "
            f"(reference {q['reference']})"
        )


def render_markdown(document: dict[str, Any]) -> str:
    """The README's tables, from bench/results/embedding.json."""
    lines = [
        provenance_line(document),
        "",
        "| model | path | input | batch | concurrency | images/s | server CPU-ms/image "
        "| client CPU-ms/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in document["records"]:
        request = r.get("request_bytes_per_image")
        kind = r.get("input", "encoded bytes") + (f" ({request / 1024:.0f} KiB)" if request else "")
        lines.append(
            f"| {r['model']} | {r['path']} | {kind} | {r['batch']} | {r.get('concurrency', '-')} "
            f"| {r['images_per_s']} | {r.get('server_cpu_ms_per_image', '-')} "
            f"| {r.get('client_cpu_ms_per_image', '-')} |"
        )
    lines += [
        "",
        "| model | images | mAP | P@1 | P@10 | reference mAP / P@1 / P@10 |",
        "|---|---|---|---|---|---|",
    ]
    for q in document["quality"]:
        ref = q["reference"]
        lines.append(
            f"| {q['model_id']} | {q['images']} | {q['map']} | {q['p@1']} | {q['p@10']} "
            f"| {ref['map']} / {ref['p@1']} / {ref['p@10']} |"
        )
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace) -> int:
    document = json.loads((RESULTS / "embedding.json").read_text())
    print(render_markdown(document), end="")
    return 0


def register(actions: Any) -> None:
    embedding = actions.add_parser(
        "embedding", help="embedding throughput and quality", description=__doc__
    )
    embedding.add_argument(
        "--images",
        type=int,
        default=128,
        help="images per configuration (more for big batch x concurrency)",
    )
    embedding.add_argument(
        "--shared",
        type=Path,
        default=PROJECT_ROOT.parent / "shared",
        help="the shared folder with data/flowers17 and models/",
    )
    embedding.add_argument("--skip-torch", action="store_true")
    embedding.add_argument(
        "--markdown",
        action="store_true",
        help="print the tables of the last run's results, run nothing",
    )
    embedding.set_defaults(run=lambda args: report(args) if args.markdown else run(args))
