"""Search by words on the real stack: a CLIP model (open_clip ViT-S-32; random weights, the
tests being offline) exported as two Triton entries, its image tower indexing a collection
of its own (the `words` namespace: processors and query API beside the session's) and its
text tower answering `POST /search/text` and `cbir search --text`. The plumbing is what is
tested: both towers equal torch to 1e-5, and a search by words returns the indexed images in
the order of their vectors' similarity to the words' vector. The session's collection
(MobileNet, no text tower) answers a 409 that says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from cbir import wiring
from cbir.adapters.embedder import TritonEmbedder
from cbir.adapters.vector_index import MilvusVectorIndex
from cbir.domain.images import image_id_of
from cbir.models.clip import clip_model, export_clip
from cbir.models.runtime import OnnxEmbedder
from cbir.settings import Settings, settings_environment
from cbir.stack.launcher import Launcher
from producers.ingest import collect
from tests.integration.helpers import indexed, namespace_apps, namespaced, wait_for

pytestmark = pytest.mark.integration
NAMESPACE = "words"
MODEL = "cliptest"
ARCH = "ViT-S-32"
CBIR = str(Path(sys.executable).parent / "cbir")
WORDS = ("a photo of a flower", "red car at night", "Café & naïve façade, 東京!")


@pytest.fixture(scope="module")
def clip_served(launcher: Launcher) -> Path:
    """Both towers exported into the session's repository and loaded: the repository."""
    repository = launcher.settings.triton.model_repository
    export_clip(repository, MODEL, 1, ARCH, weights="random", seed=0, instances=1)
    for entry in (MODEL, f"{MODEL}-text"):
        TritonEmbedder(launcher.settings.triton, entry, protocol="http").load()
    return repository


def test_both_towers_served_by_triton_equal_torch(
    launcher: Launcher, clip_served: Path, shared_dir: Path
) -> None:
    import open_clip
    import torch

    settings = launcher.settings
    photos = sorted((shared_dir / "data" / "flowers17" / "3").iterdir())[:4]
    images = [p.read_bytes() for p in photos]
    image_tower = TritonEmbedder(settings.triton, MODEL)
    text_tower = TritonEmbedder(settings.triton, f"{MODEL}-text")
    assert text_tower.identity().pairs_with == image_tower.identity().model_id
    served_images, image_errors = image_tower.embed(images)
    served_words, word_errors = text_tower.embed_texts(list(WORDS))
    assert not any(image_errors) and not any(word_errors)

    model, _ = clip_model(ARCH, "random", 0)  # the same seed: the same weights
    prepare = OnnxEmbedder(clip_served / MODEL / "1").prepare
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([prepare(data) for data in images]))
        tokens = open_clip.get_tokenizer(ARCH)(list(WORDS))
        by_torch = model.encode_image(pixels, normalize=True).numpy()
        words_by_torch = model.encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(served_images, by_torch, atol=1e-5)
    np.testing.assert_allclose(served_words, words_by_torch, atol=1e-5)
    # the text tower takes no image, and an empty text is refused alone
    _, errors = text_tower.embed_texts(["", "a rose"])
    assert errors[0].startswith("empty text") and not errors[1]


@pytest.fixture(scope="module")
def words_stack(
    launcher: Launcher, clip_served: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launcher]:
    """Processors and query API of a collection CLIP's image tower indexes."""
    base = launcher.settings
    settings = namespaced(
        base,
        NAMESPACE,
        tmp_path_factory.mktemp(NAMESPACE),
        processors={"workers": 1, "model": MODEL},
        api={"port": base.api.port + 2},
        local_features={"enabled": False},
    )
    with namespace_apps(launcher, settings, ["processors", "query-api"]) as apps:
        yield apps


def search_words(settings: Settings, text: str, **fields: str) -> httpx.Response:
    url = f"http://{settings.api.host}:{settings.api.port}/search/text"
    return httpx.post(url, data={"text": text, **fields}, timeout=60)


def test_a_search_by_words_ranks_images_by_their_similarity_to_the_words(
    words_stack: Launcher, shared_dir: Path
) -> None:
    settings = words_stack.settings
    items = [
        item
        for item in collect([str(shared_dir / "data" / "flowers17")])
        if item.path.parent.name in ("3", "9") and item.path.stem[-1] in "05"
    ]
    ids = {image_id_of(item.path.read_bytes()) for item in items}
    wiring.ingest(settings, items)
    wait_for(lambda: indexed(settings, ids) == len(ids), 420, "the collection indexed by CLIP")

    words = "a photo of a purple flower"
    vector = TritonEmbedder(settings.triton, f"{MODEL}-text").embed_texts([words])[0][0]
    index = MilvusVectorIndex(settings.milvus, settings.processors)
    try:
        stored = index.vectors_of(sorted(ids))
    finally:
        index.close()
    assert set(stored) == ids
    expected = sorted(ids, key=lambda i: -float(np.dot(vector, stored[i])))

    response = search_words(settings, words, k="5", tag="3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_id"].startswith(f"{MODEL}:")
    found = [r["image_id"] for r in body["results"]]
    # the tag filter applies as for an image search: species 3 only, in the words' order
    of_species = {image_id_of(i.path.read_bytes()) for i in items if i.path.parent.name == "3"}
    assert found == [i for i in expected if i in of_species][:5]
    for result in body["results"]:
        exact = float(np.dot(vector, stored[result["image_id"]]))
        assert result["score"] == pytest.approx(exact, abs=1e-4)
    again = search_words(settings, "  a photo of a  purple flower ", k="5", tag="3").json()
    assert again["cache"]["result"] == "hit" and [r["image_id"] for r in again["results"]] == found

    env = {**os.environ, **settings_environment(settings)}
    run = subprocess.run(
        [CBIR, "search", "--text", words, "-k", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert expected[0][:16] in run.stdout

    empty = search_words(settings, "   ")
    assert empty.status_code == 422, empty.text


def test_a_collection_without_a_text_tower_answers_409_saying_what_to_do(
    launcher: Launcher, indexed_flowers: list[Path]
) -> None:
    response = search_words(launcher.settings, "a red car at night")
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == "no_text_tower", body
    assert "--clip" in body["detail"] and "re-embed" in body["detail"]
