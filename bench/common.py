"""What every benchmark records: the machine, the date, the command, the commit."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def commit() -> str:
    result = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    return result.stdout.strip() or "unknown"


def write_results(
    name: str, records: list[dict[str, Any]], extra: dict[str, Any], folder: Path = RESULTS
) -> Path:
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


def provenance_line(document: dict[str, Any]) -> str:
    """The first line of every results table: when, where, which code, which command."""
    machine_ = document["machine"]
    return (
        f"Measured {document['date'][:10]} on {machine_['cpu']} ({machine_['cores']} cores),"
        f" commit {document['commit']}, `{document['command']}`."
    )
