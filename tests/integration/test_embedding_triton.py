"""The shared MobileNet served by the test stack's Triton, through the real clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cbir.adapters.embedder import ModelNotServed, TritonEmbedder
from cbir.models.runtime import RUNTIME_STATE_FILE, OnnxEmbedder
from cbir.settings import Settings, settings_environment
from cbir.stack.launcher import Launcher
from tests.images import bad_inputs, reencoded

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(launcher: Launcher, mobilenet_served: Path) -> tuple[Settings, Path]:
    """The stack's settings and the served MobileNet's version folder."""
    return launcher.settings, mobilenet_served


def test_http_and_grpc_give_identical_unit_vectors(
    served: tuple[Settings, Path], flower_photos: list[Path]
) -> None:
    settings, _ = served
    images = [p.read_bytes() for p in flower_photos]
    over_grpc, grpc_errors = TritonEmbedder(settings.triton, "mobilenet", "grpc").embed(images)
    over_http, http_errors = TritonEmbedder(settings.triton, "mobilenet", "http").embed(images)
    assert not any(grpc_errors) and not any(http_errors)
    assert over_grpc.shape == (len(images), 1024)
    np.testing.assert_array_equal(over_grpc, over_http)
    np.testing.assert_allclose(np.linalg.norm(over_grpc, axis=1), 1.0, rtol=1e-5)


def test_triton_equals_the_same_model_in_process(
    served: tuple[Settings, Path], flower_photos: list[Path]
) -> None:
    settings, version_dir = served
    images = [p.read_bytes() for p in flower_photos]
    through_triton, _ = TritonEmbedder(settings.triton, "mobilenet").embed(images)
    in_process, _ = OnnxEmbedder(version_dir).embed(images)
    np.testing.assert_allclose(through_triton, in_process, atol=1e-5)


def test_jpeg_and_png_of_one_photo_agree_and_two_photos_do_not(
    served: tuple[Settings, Path], flower_photos: list[Path]
) -> None:
    settings, _ = served
    photo, other = flower_photos[0], flower_photos[4]  # species 0 and species 10
    images = [reencoded(photo, "JPEG", quality=90), reencoded(photo, "PNG"), other.read_bytes()]
    vectors, _ = TritonEmbedder(settings.triton, "mobilenet").embed(images)
    assert float(vectors[0] @ vectors[1]) > 0.99
    assert float(vectors[0] @ vectors[2]) < 0.9


def test_a_mixed_batch_embeds_the_good_and_names_each_bad(
    served: tuple[Settings, Path], flower_photos: list[Path]
) -> None:
    settings, _ = served
    bad = bad_inputs(flower_photos[0])
    good = [p.read_bytes() for p in flower_photos[:2]]
    vectors, errors = TritonEmbedder(settings.triton, "mobilenet").embed(
        [good[0], *bad.values(), good[1]]
    )
    assert errors[0] == errors[-1] == ""
    for kind, error in zip(bad, errors[1:-1], strict=True):
        assert error, f"{kind} was not rejected"
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, -1]], axis=1), 1.0, rtol=1e-5)
    assert not vectors[1:-1].any()


def test_the_model_identity_is_in_its_metadata(served: tuple[Settings, Path]) -> None:
    settings, version_dir = served
    identity = TritonEmbedder(settings.triton, "mobilenet").identity()
    spec = OnnxEmbedder(version_dir).spec
    assert identity.model_id == spec.model_id
    assert (identity.dim, identity.pooling) == (1024, "gap")
    assert identity.fingerprint == spec.fingerprint()


def test_cbir_model_list_says_which_provider_the_served_model_runs_on(
    served: tuple[Settings, Path],
) -> None:
    settings, version_dir = served
    # this machine's ONNX Runtime has no GPU provider: the default (auto) runs on the CPU
    assert json.loads((version_dir / RUNTIME_STATE_FILE).read_text())["provider"] == (
        "CPUExecutionProvider"
    )
    env = {**os.environ, **settings_environment(settings), "COLUMNS": "400"}
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "cbir"), "model", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    row = next((r for r in rows if r and r[0] == "mobilenet"), None)
    assert row is not None, listed.stdout
    assert "READY" in row and row[-1] == "CPUExecutionProvider", listed.stdout


def test_a_model_not_served_says_how_to_serve_it(stack: Settings) -> None:
    with pytest.raises(ModelNotServed, match="cbir model export"):
        TritonEmbedder(stack.triton, "no_such_model").embed([b"x"])
