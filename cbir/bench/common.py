"""What every benchmark records: the machine, the date, the command, the commit."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cbir.output import console
from cbir.settings import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def commit(root: Path = PROJECT_ROOT) -> str:
    """The commit measured, `-dirty` when the code differs from it: results being written
    (bench/results, profiles included, rewritten during the run) do not count."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=root).stdout

    head = git("rev-parse", "--short", "HEAD").strip()
    if not head:
        return "unknown"
    changed = git(
        "status", "--porcelain", "--", ".", f":(exclude){RESULTS.relative_to(PROJECT_ROOT)}"
    )
    return f"{head}-dirty" if changed.strip() else head


def write_results(
    name: str, records: list[dict[str, Any]], extra: dict[str, Any], folder: Path = RESULTS
) -> Path:
    """`folder/name.json`: the records with when, where, which code and which command."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    document = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["cbir", *sys.argv[1:]]) if sys.argv else "",
        "commit": commit(),
        "machine": machine(),
        **extra,
        "records": records,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def publish(
    name: str,
    records: list[dict[str, Any]],
    extra: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str],
    folder: Path = RESULTS,
) -> dict[str, Any]:
    """`name.json` and the `name.md` table made from it; the document, for plots."""
    path = write_results(name, records, extra, folder)
    document: dict[str, Any] = json.loads(path.read_text())  # as written: JSON types
    (folder / f"{name}.md").write_text(markdown(document))
    console.print(f"wrote {path} and {name}.md")
    return document


def add_stack_arguments(parser: Any) -> None:
    """--shared and --port-offset of a benchmark that starts a stack of its own."""
    parser.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared")
    parser.add_argument(
        "--port-offset",
        type=int,
        default=11000,
        help="where the benchmark's own stack listens (default +11000)",
    )


def on_fresh_stacks(
    runs: Sequence[tuple[str, Callable[[Path], dict[str, Any]]]], scratch: Path
) -> list[dict[str, Any]]:
    """Each (label, measure) with a data directory of its own, removed after: `measure`
    starts its stack there, so every run begins empty. The records, as printed."""
    records = []
    for label, measure in runs:
        root = scratch / re.sub(r"[^A-Za-z0-9_.-]+", "-", label)  # MariaDB's setup dislikes spaces
        console.print(f"{label}: starting a fresh stack")
        record = measure(root)
        records.append(record)
        console.print(" ".join(f"{k}={v}" for k, v in record.items()))
        shutil.rmtree(root, ignore_errors=True)
    return records
