"""The fault matrix's quick version, in CI: `cbir bench faults` on a stack of its own (ports
+12000, beside the session's), Milvus killed and then frozen while images stream in and
searches run. The full matrix (every part, 300 images per fault) is `cbir bench faults`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cbir.stack.launcher import Launcher

pytestmark = pytest.mark.integration
CBIR = str(Path(sys.executable).parent / "cbir")


def test_milvus_killed_and_frozen_loses_nothing_and_no_search_hangs(
    launcher: Launcher, shared_dir: Path, tmp_path: Path
) -> None:
    command = [CBIR, "bench", "faults", "--parts", "milvus", "--faults", "kill", "pause"]
    command += ["--images", "80", "--port-offset", "12000", "--shared", str(shared_dir)]
    command += ["--out", str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    results = tmp_path / "faults-milvus.json"
    assert results.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    records = json.loads(results.read_text())["records"]
    assert [(r["part"], r["fault"]) for r in records] == [("milvus", "kill"), ("milvus", "pause")]
    bound = launcher.settings.api.dependency_timeout_s
    for r in records:
        assert (r["lost"], r["duplicated"], r["dead_lettered"]) == (0, 0, 0), r
        assert r["searches"].get("hung", 0) == 0 and r["searches"].get("failed", 0) == 0, r
        assert r["slowest_search_s"] <= bound + 1.0, r
        assert r["searches"].get("answered", 0) > 0, r  # it did answer, before and after
    assert run.returncode == 0, run.stdout[-3000:]
