"""A fresh local stack with folders of images indexed through the whole pipeline, for the
benchmarks that measure the API: started on ports of its own, fed by the producer, waited
for until every consumer group (indexing, local features, near-duplicates) has caught up and
Milvus has built its index, and stopped (its data removed) at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from rich.progress import Progress

from cbir import wiring
from cbir.bench.ingest import export_models, indexed_count
from cbir.bench.query import settle
from cbir.domain.images import image_id_of
from cbir.output import console
from cbir.settings import Settings, get_settings, side_by_side
from cbir.stack.launcher import Launcher
from producers.ingest import collect


@dataclass
class Indexed:
    settings: Settings
    images: int  # distinct images indexed
    indexed_s: float  # from the first upload to the last image indexed
    caught_up_s: float  # ... to every consumer group caught up

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api.host}:{self.settings.api.port}"


@contextmanager
def indexed_stack(
    shared: Path, folders: list[Path], port_offset: int, timeout_s: float = 3600
) -> Iterator[Indexed]:
    with TemporaryDirectory(prefix="cbir-bench-stack-") as scratch:
        root = Path(scratch)
        export_models(root / "models", shared, ["mobilenet"])
        settings = side_by_side(get_settings(), port_offset, root / "data", root / "models")
        launcher = Launcher(settings)
        launcher.up()
        try:
            items = collect([str(folder) for folder in folders])
            wanted = len(
                {image_id_of(item.path.read_bytes()) for item in items if not item.refused}
            )
            started = time.perf_counter()
            wiring.ingest(settings, items)
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("indexing through the pipeline", total=wanted)
                while (done := indexed_count(settings)) < wanted:
                    progress.update(task, completed=done)
                    if time.perf_counter() - started > timeout_s:
                        raise RuntimeError(f"only {done} of {wanted} indexed in {timeout_s} s")
                    time.sleep(1)
            indexed_s = time.perf_counter() - started
            while not wiring.caught_up(settings):
                if time.perf_counter() - started > timeout_s:
                    raise RuntimeError(f"the processors did not catch up in {timeout_s} s")
                time.sleep(1)
            caught_up_s = time.perf_counter() - started
            settle(settings)
            yield Indexed(settings, wanted, indexed_s, caught_up_s)
        finally:
            launcher.down()
