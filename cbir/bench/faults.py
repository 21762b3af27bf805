"""`cbir bench faults`: the fault matrix. While images stream in, each part of the system is
killed with SIGKILL, or hung with SIGSTOP for 20 s then SIGCONT, and the end state is checked.

One fresh stack (ports moved by --port-offset) with the shared MobileNet, two processor
workers and the watchdog on, so that a killed part comes back as it would in a deployment.
Per fault: a batch of new images is ingested by `cbir ingest`'s own code while a client
searches without pause (by a stored image's id, result cache bypassed, its timeout the API's
dependency bound plus 5 s); the fault lands a few seconds into the batch. Recorded:
- lost: images of the batch not indexed at the end; duplicated: vectors beyond one per image;
  dead letters of good images (rows failed);
- seconds from the fault until every image of the batch is indexed;
- searches: answered, refused with a 503 that names the dependency, and failed (any other
  status, or no answer within the bound: a hang).
The verdict of a fault is `ok` when nothing is lost, duplicated or dead-lettered and no
search failed; every figure is in bench/results/faults.json and faults.md.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

from cbir import wiring
from cbir.adapters.metadata_store import MySQLMetadataStore
from cbir.adapters.vector_index import MilvusVectorIndex
from cbir.bench.common import RESULTS, add_stack_arguments, publish
from cbir.domain.errors import ServiceUnavailable
from cbir.domain.images import image_id_of
from cbir.domain.retry import RetryPolicy
from cbir.evaluation.report import provenance_line
from cbir.models.shared_mobilenet import export_shared_mobilenet
from cbir.output import console
from cbir.settings import Settings, get_settings, side_by_side
from cbir.stack.launcher import Launcher
from producers.ingest import IngestItem

PARTS = ("kafka", "minio", "milvus", "mariadb", "redis", "triton", "processors", "query-api")
FAULTS = ("kill", "pause")
PAUSE_S = 20.0
SETTLE_S = 600.0


@dataclass
class Searches:
    """A client searching without pause; what it got back."""

    base_url: str
    image_id: str
    timeout_s: float
    outcomes: Counter[str] = field(default_factory=Counter)
    slowest_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    answer = client.get(
                        f"/images/{self.image_id}/similar",
                        params={"k": 5},
                        headers={"Cache-Control": "no-cache"},
                    )
                    kind = verdict_of_answer(answer.status_code, answer.text)
                except httpx.TimeoutException:
                    kind = "hung"
                except httpx.TransportError:
                    kind = "unreachable"  # the API itself is down: refused, not hung
                self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                self.outcomes[kind] += 1
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


def verdict_of_answer(status: int, body: str) -> str:
    """answered, refused (a 503 in the error shape, naming what is away), or failed."""
    if status == 200:
        return "answered"
    if status == 503 and '"error"' in body and '"detail"' in body:
        return "refused"
    return "failed"


def batch(folder: Path, seed: int, count: int) -> list[IngestItem]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for n in range(count):
        pixels = np.random.default_rng(seed * 10_000 + n).integers(0, 255, (48, 48, 3), np.uint8)
        path = folder / f"{n}.png"
        Image.fromarray(pixels).save(path)
        items.append(IngestItem(path, ("faults",)))
    return items


def statuses(settings: Settings, ids: set[str]) -> Counter[str]:
    """The images' statuses; all `unknown` while MySQL itself is the part that is away."""
    store = MySQLMetadataStore(settings.mysql, pool_size=1, timeout_s=5)
    try:
        rows = store.lookup(sorted(ids))
    except ServiceUnavailable:
        return Counter({"unknown": len(ids)})
    finally:
        store.close()
    return Counter(str(rows[i].status) if i in rows else "missing" for i in ids)


def vectors(settings: Settings, ids: set[str]) -> int:
    """The vectors stored for the images. Milvus may still be handing its channels out again
    after its fault (healthy a moment ago, 'channel not available' now): the count rides that
    out for up to two minutes."""
    index = MilvusVectorIndex(settings.milvus, settings.processors)
    try:
        ordered = sorted(ids)
        return sum(
            index.count(image_ids=ordered[start : start + 500], timeout_s=120.0)
            for start in range(0, len(ordered), 500)
        )
    finally:
        index.close()


def processes(launcher: Launcher, part: str) -> list[psutil.Process]:
    pid = launcher.service(part).process.pid
    if pid is None:
        raise RuntimeError(f"{part} is not running before its fault")
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def inject(launcher: Launcher, part: str, fault: str) -> None:
    targets = processes(launcher, part)
    if fault == "kill":
        for process in targets:
            process.send_signal(signal.SIGKILL)
        return
    for process in targets:
        process.send_signal(signal.SIGSTOP)
    time.sleep(PAUSE_S)
    for process in targets:
        with contextlib.suppress(psutil.NoSuchProcess):  # died while hung (Milvus's TTL)
            process.send_signal(signal.SIGCONT)


def wait_healthy(launcher: Launcher, timeout_s: float) -> float:
    started = time.monotonic()
    unhealthy: list[str] = []
    while time.monotonic() - started < timeout_s:
        states = launcher.status()
        unhealthy = [
            f"{s.name}: {s.health} {s.detail}".strip() for s in states if s.health != "healthy"
        ]
        if not unhealthy:
            return time.monotonic() - started
        time.sleep(1.0)
    raise RuntimeError(
        f"the stack was not healthy again within {timeout_s:.0f} s ({'; '.join(unhealthy)})"
    )


def one_fault(
    settings: Settings,
    launcher: Launcher,
    part: str,
    fault: str,
    items: list[IngestItem],
    probe_id: str,
) -> dict[str, Any]:
    ids = {image_id_of(item.path.read_bytes()) for item in items}
    api = settings.api
    searches = Searches(f"http://{api.host}:{api.port}", probe_id, api.dependency_timeout_s + 5.0)
    searcher = threading.Thread(target=searches.run, daemon=True)
    searcher.start()
    ingest_error: list[str] = []

    def ingest() -> None:
        try:
            wiring.ingest(settings, items)
        except Exception as exc:  # recorded: the producer must not crash, but if it does...
            ingest_error.append(f"{type(exc).__name__}: {exc}")

    producer = threading.Thread(target=ingest)
    producer.start()
    time.sleep(3.0)
    injected = time.monotonic()
    inject(launcher, part, fault)
    producer.join()
    if ingest_error:  # a producer that stopped (its wait ran out): the same command resumes
        wiring.ingest(settings, items)
    deadline = injected + SETTLE_S
    counts = statuses(settings, ids)
    while counts.get("indexed", 0) + counts.get("failed", 0) < len(ids):
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
        counts = statuses(settings, ids)
    recovered_s = time.monotonic() - injected
    healthy_s = wait_healthy(launcher, 300)
    searches.stop()
    searcher.join()
    # Milvus can still drop out after the stack looked healthy (a frozen Milvus outlives its
    # session and restarts): the count waits for it rather than ending the benchmark
    stored = RetryPolicy(give_up_after_s=300).run(
        lambda: vectors(settings, ids), "count the vectors in Milvus"
    )
    record = {
        "part": part,
        "fault": fault,
        "images": len(ids),
        "indexed": counts.get("indexed", 0),
        "lost": len(ids) - counts.get("indexed", 0),
        "duplicated": max(stored - counts.get("indexed", 0), 0),
        "dead_lettered": counts.get("failed", 0),
        "seconds_to_all_indexed": round(recovered_s, 1),
        "seconds_more_to_healthy": round(healthy_s, 1),
        "producer_stopped": ingest_error[0] if ingest_error else "",
        "searches": dict(searches.outcomes),
        "slowest_search_s": round(searches.slowest_s, 2),
        "restarts": {s.name: s.restarts for s in launcher.status() if s.restarts},
    }
    record["verdict"] = (
        "ok"
        if not (record["lost"] or record["duplicated"] or record["dead_lettered"])
        and not searches.outcomes.get("failed")
        and not searches.outcomes.get("hung")
        else "FAILED"
    )
    console.print(" ".join(f"{k}={v}" for k, v in record.items()))
    return record


def render_markdown(document: dict[str, Any]) -> str:
    lines = [
        provenance_line(document),
        "",
        "| part | fault | images | lost | duplicated | dead letters | s to all indexed "
        "| searches answered / refused 503 / unreachable / failed / hung | slowest search, s "
        "| restarts | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in document["records"]:
        s = r["searches"]
        outcome = " / ".join(
            str(s.get(k, 0)) for k in ("answered", "refused", "unreachable", "failed", "hung")
        )
        restarts = ", ".join(f"{k} {v}" for k, v in r["restarts"].items()) or "-"
        lines.append(
            f"| {r['part']} | {r['fault']} | {r['images']} | {r['lost']} | {r['duplicated']} "
            f"| {r['dead_lettered']} | {r['seconds_to_all_indexed']} | {outcome} "
            f"| {r['slowest_search_s']} | {restarts} | {r['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="cbir-bench-faults-") as scratch:
        root = Path(scratch)
        repository = root / "models"
        export_shared_mobilenet(
            repository, args.shared / "models" / "mobilenet_v1_embed.onnx", base.processors.model
        )
        moved = side_by_side(base, args.port_offset, root / "data", repository)
        settings = moved.model_copy(
            update={
                "processors": moved.processors.model_copy(update={"workers": 2}),
                "stack": moved.stack.model_copy(update={"supervise": True}),
            }
        )
        launcher = Launcher(settings)
        records = []
        try:
            launcher.up()
            seed_items = batch(root / "seed", 0, 20)
            wiring.ingest(settings, seed_items)
            probe_id = image_id_of(seed_items[0].path.read_bytes())
            while statuses(settings, {probe_id}).get("indexed", 0) == 0:
                time.sleep(1.0)
            scenario = 0
            for part in args.parts:
                for fault in args.faults:
                    scenario += 1
                    console.print(f"{part} {fault}: {args.images} images streaming in")
                    items = batch(root / f"batch{scenario}", scenario, args.images)
                    records.append(one_fault(settings, launcher, part, fault, items, probe_id))
        finally:
            launcher.down()
    extra = {"notes": __doc__.strip().splitlines()[2:], "pause_s": PAUSE_S}
    # the whole matrix is `faults`; a run of some parts, `faults-<parts>`, beside it
    everything = set(args.parts) == set(PARTS) and set(args.faults) == set(FAULTS)
    publish(
        "faults" if everything else "faults-" + "-".join(args.parts),
        records,
        extra,
        render_markdown,
        args.out,
    )
    return 0 if all(r["verdict"] == "ok" for r in records) else 1


def register(actions: Any) -> None:
    faults = actions.add_parser(
        "faults", help="kill and hang each part while images stream in", description=__doc__
    )
    faults.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    faults.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    faults.add_argument("--images", type=int, default=300, help="images per fault")
    faults.add_argument("--out", type=Path, default=RESULTS, help="folder of the results")
    add_stack_arguments(faults)
    faults.set_defaults(run=run)
