"""The API against its own spec: schemathesis (`st run`) with every check and every phase,
stateful included, a bounded number of examples (tests/schemathesis.toml), against the test
stack's API with the write key: no server error, every response in its documented schema,
every status code documented, no schema-valid request refused, no invalid one taken."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cbir.stack.launcher import Launcher
from tests.integration.conftest import TEST_API_KEY

pytestmark = pytest.mark.integration
CONFIG = Path(__file__).parents[1] / "schemathesis.toml"
HOOKS = Path(__file__).parents[1] / "schemathesis_hooks.py"  # one false positive dropped


def test_the_api_passes_every_check_of_a_fuzzer_reading_its_spec(
    launcher: Launcher, indexed_flowers: list[Path]
) -> None:
    api = launcher.settings.api
    st = Path(sys.executable).parent / "st"
    run = subprocess.run(
        [
            str(st),
            "--config-file",
            str(CONFIG),
            "run",
            f"http://{api.host}:{api.port}/openapi.json",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--header",
            f"X-API-Key: {TEST_API_KEY}",
            "--seed",
            "20261202",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
    )
    summary = run.stdout[-8000:]
    assert run.returncode == 0, summary
    assert "generated" in summary, summary  # it ran the cases it says
