"""`cbir train` end to end on the test stack: descriptors through Triton, a short training
run with its checkpoint, the export into the stack's model repository, and Triton serving
the trained entry exactly as the head computes it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cbir.adapters.embedder import TritonEmbedder
from cbir.domain.images import image_id_of
from cbir.models.export import trained_on
from cbir.models.runtime import HEAD_FILE, SPEC_FILE, Head, ModelSpec
from cbir.settings import settings_environment
from cbir.stack.launcher import Launcher
from cbir.training.trainer import embed_with

pytestmark = pytest.mark.integration
CBIR = str(Path(sys.executable).parent / "cbir")


def test_cbir_train_exports_a_model_triton_serves(
    launcher: Launcher, mobilenet_served: Path, shared_dir: Path, tmp_path: Path
) -> None:
    settings = launcher.settings
    dataset = tmp_path / "three-species"
    for species in ("0", "1", "2"):
        photos = sorted((shared_dir / "data" / "flowers17" / species).iterdir())[:12]
        (dataset / species).mkdir(parents=True)
        for photo in photos:
            shutil.copy(photo, dataset / species / photo.name)
    env = {**os.environ, **settings_environment(settings)}
    command = [CBIR, "train", str(dataset), "--model", settings.processors.model]
    command += ["--name", "trained", "--epochs", "3", "--dim", "32", "--classes-per-batch", "3"]
    command += ["--checkpoint", str(tmp_path / "run.pt")]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "validation mAP" in run.stdout and "cbir re-embed trained" in run.stdout

    entry = settings.triton.model_repository / "trained" / "1"
    spec = ModelSpec.from_json((entry / SPEC_FILE).read_text())
    head = Head.load(entry / HEAD_FILE)
    trained = TritonEmbedder(settings.triton, "trained")
    assert trained.identity().model_id == spec.model_id and spec.dim == 32

    photos = sorted((dataset / "1").iterdir())[:4]
    images = [p.read_bytes() for p in photos]
    frozen, _ = TritonEmbedder(settings.triton, settings.processors.model).embed(images)
    served, errors = trained.embed(images)
    assert not any(errors)
    np.testing.assert_allclose(served, embed_with(head, frozen), atol=1e-5)

    # what it was trained on is kept beside it: the fitted half of each species, not the
    # images validation held out; as a probe set they are refused, saying why
    kept = trained_on(settings.triton.model_repository, "trained")
    assert kept is not None and kept.classes == ("0", "1", "2") and kept.held_out == 18
    every = {image_id_of(p.read_bytes()) for p in dataset.rglob("*.jpg")}
    assert kept.images < every and 0 < len(kept.images) <= 18  # (flowers17 repeats a few)
    assert f"trained on {len(kept.images)} images of three-species" in " ".join(run.stdout.split())
    probe = [CBIR, "re-embed", "trained", "--probe", str(dataset)]
    refused = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=120)
    said = " ".join((refused.stdout + refused.stderr).split())
    found = re.search(r"(\d+) of the 36 probe images are images trained was trained on", said)
    assert refused.returncode != 0 and found is not None and int(found[1]) >= 18, said

    # the same command again resumes from the finished checkpoint: no epoch is redone
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resumed from epoch 3" in again.stdout, again.stdout


def test_cbir_train_from_the_index_learns_from_its_tags(
    launcher: Launcher, indexed_flowers: list[Path], tmp_path: Path
) -> None:
    env = {**os.environ, **settings_environment(launcher.settings)}
    command = [CBIR, "train", "--from-index", "--model", launcher.settings.processors.model]
    command += ["--epochs", "2", "--dim", "32", "--classes-per-batch", "3", "--no-export"]
    # a checkpoint of its own: the default one (by data) is resumed, finished, on a rerun
    command += ["--checkpoint", str(tmp_path / "run.pt")]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    # the three species the session indexed, tagged by their folders, at least
    summary = next(line for line in run.stdout.splitlines() if line.startswith("the index:"))
    images, classes = (int(word) for word in summary.split()[2:5:2])
    assert images >= len(indexed_flowers) and classes >= 3, summary
    assert "epoch   2/2" in run.stdout
    # the descriptors are the vectors the index already holds (this model's), not embedded
    # again; a rerun on the same machine reads them from its cache instead
    origin = next(line for line in run.stdout.splitlines() if line.startswith("descriptors:"))
    if "from the cache" not in origin:
        read = re.match(r"descriptors: (\d+) read from \S+, (\d+) embedded", origin)
        assert read is not None and int(read[1]) >= len(indexed_flowers), origin
