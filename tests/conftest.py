"""Fixtures every test area shares: the labelled images and the pretrained model in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cbir.models.shared_mobilenet import export_shared_mobilenet
from cbir.settings import PROJECT_ROOT

SHARED = Path(os.environ.get("CBIR_SHARED_DIR", PROJECT_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.fail(
            f"no shared data at {SHARED}: check out ../shared beside the repository or "
            "set CBIR_SHARED_DIR"
        )
    return SHARED


@pytest.fixture(scope="session")
def mobilenet_onnx(shared_dir: Path) -> Path:
    return shared_dir / "models" / "mobilenet_v1_embed.onnx"


@pytest.fixture(scope="session")
def flower_photos(shared_dir: Path) -> list[Path]:
    """Two photos of each of three species (classes 0, 5, 10 of flowers17)."""
    folder = shared_dir / "data" / "flowers17"
    return [p for c in ("0", "5", "10") for p in sorted((folder / c).glob("*.jpg"))[:2]]


@pytest.fixture(scope="session")
def mobilenet_entry(tmp_path_factory: pytest.TempPathFactory, mobilenet_onnx: Path) -> Path:
    """The shared MobileNet exported into a repository of its own: its version folder."""
    repository = tmp_path_factory.mktemp("models")
    export_shared_mobilenet(repository, mobilenet_onnx)
    return repository / "mobilenet" / "1"
