"""The integration suite runs against a real local stack that it starts through the launcher,
on its own ports (+10000) and data directory, so it never touches a developer's own stack.
Servers are installed by `cbir stack install` (the test command runs it first)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from cbir import wiring
from cbir.adapters.embedder import TritonEmbedder
from cbir.domain.images import image_id_of
from cbir.models.shared_mobilenet import export_shared_mobilenet
from cbir.settings import Settings, side_by_side
from cbir.stack.launcher import Launcher
from producers.ingest import collect
from tests.integration.helpers import indexed, wait_for

# another offset lets a second suite run beside one already running (at most 12435: Milvus's
# highest internal port is 53100)
TEST_PORT_OFFSET = int(os.environ.get("CBIR_TEST_PORT_OFFSET", "10000"))
HERE = Path(__file__).parent
TEST_API_KEY = "test-key"
FLOWER_CLASSES = ("0", "5", "12")  # three flowers17 species, 240 images, tagged by folder


def stack_settings(
    data_dir: Path, model_repository: Path, offset: int = TEST_PORT_OFFSET
) -> Settings:
    """This environment's settings (stack home included) with every port moved by `offset`."""
    moved = side_by_side(Settings(), offset, data_dir, model_repository)
    api = moved.api.model_copy(update={"api_key": SecretStr(TEST_API_KEY)})
    # two workers in the consumer group: every pipeline test runs scaled out
    processors = moved.processors.model_copy(update={"workers": 2})
    # the suite kills and restarts services itself; the watchdog has a test of its own
    stack = moved.stack.model_copy(update={"supervise": False})
    return moved.model_copy(update={"api": api, "processors": processors, "stack": stack})


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("stack")
    repository = root / "triton_models"
    shutil.copytree(HERE / "triton_models", repository)
    return stack_settings(root / "data", repository)


@pytest.fixture(scope="session")
def launcher(settings: Settings) -> Iterator[Launcher]:
    """The test stack, up for the whole session and stopped at its end."""
    launcher = Launcher(settings)
    missing = [svc.name for svc in launcher.services if not svc.is_installed()]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)}; run `cbir stack install` first")
    try:
        launcher.up()
    except BaseException:
        launcher.down()  # leave nothing running when the stack did not come up whole
        raise
    yield launcher
    if not os.environ.get("CBIR_TEST_KEEP_STACK"):
        launcher.down()


@pytest.fixture()
def stack(launcher: Launcher) -> Settings:
    """Settings of a running, healthy test stack."""
    return launcher.settings


@pytest.fixture(scope="session")
def mobilenet_served(launcher: Launcher, mobilenet_onnx: Path) -> Path:
    """The shared MobileNet exported into the test stack's repository and loaded in Triton
    (the processors embed with it): its version folder."""
    settings = launcher.settings
    export_shared_mobilenet(
        settings.triton.model_repository, mobilenet_onnx, settings.processors.model, instances=2
    )
    TritonEmbedder(settings.triton, settings.processors.model, protocol="http").load()
    return settings.triton.model_repository / settings.processors.model / "1"


@pytest.fixture(scope="session")
def indexed_flowers(launcher: Launcher, mobilenet_served: Path, shared_dir: Path) -> list[Path]:
    """Three species of flowers17 ingested through the pipeline and indexed."""
    settings = launcher.settings
    folder = shared_dir / "data" / "flowers17"
    items = [item for item in collect([str(folder)]) if item.path.parent.name in FLOWER_CLASSES]
    wiring.ingest(settings, items)
    ids = {image_id_of(item.path.read_bytes()) for item in items}
    wait_for(lambda: indexed(settings, ids) == len(ids), 420, "three species to be indexed")
    # SIFT local features and near-duplicates are consumer groups of their own, behind
    wait_for(lambda: wiring.caught_up(settings), 420, "local features to catch up")
    return [item.path for item in items]
