"""CLIP's two towers, exported from open_clip with random weights (offline): the runtime's
tokenizer equals open_clip's, both entries' vectors equal torch's to 1e-5, the text entry names
the image entry's model id, and a model whose tokenizer is not CLIP's BPE is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbir.domain.models import text_entry
from cbir.models.clip import clip_model, export_clip
from cbir.models.export import ExportError
from cbir.models.runtime import ClipTokenizer, ModelSpec, OnnxEmbedder

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

TEXTS = [
    "a red car at night",
    "A Photo of a DOG!!",
    "  café  naïve façade 東京 タワー ",
    "it's 3.14 o'clock; we'll see...",
    "&amp;lt;b&amp;gt; html entities",
    "😀 emoji, ümlauts and Straße",
    "don't ½ ² Ⅻ",
    "x " * 200,  # past the context: cut, the end marker kept
    "",
]


def test_the_runtime_tokenizer_equals_open_clips() -> None:
    ours = ClipTokenizer(Path(open_clip.tokenizer.default_bpe()))
    theirs = open_clip.get_tokenizer("ViT-B-32")(TEXTS).numpy()
    np.testing.assert_array_equal(ours(TEXTS), theirs)


@pytest.fixture(scope="module")
def towers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("clip")
    export_clip(repository, "clip", 1, "ViT-S-32", weights="random", seed=0, instances=1)
    return repository


def test_both_towers_equal_torch_and_share_one_space(towers: Path, shared_dir: Path) -> None:
    image_tower = OnnxEmbedder(towers / "clip" / "1")
    text_tower = OnnxEmbedder(towers / text_entry("clip") / "1")
    assert text_tower.spec.text is not None
    assert text_tower.spec.text.pairs_with == image_tower.spec.model_id
    assert text_tower.spec.dim == image_tower.spec.dim == 384
    photos = sorted((shared_dir / "data" / "flowers17" / "0").iterdir())[:3]
    images = [p.read_bytes() for p in photos]
    words = ["a flower", "a red car at night"]

    model, source = clip_model("ViT-S-32", "random", 0)
    assert source == "open_clip:ViT-S-32 weights=random seed=0"
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([image_tower.prepare(data) for data in images]))
        by_torch = model.encode_image(pixels, normalize=True).numpy()
        words_by_torch = model.encode_text(
            open_clip.get_tokenizer("ViT-S-32")(words), normalize=True
        ).numpy()
    np.testing.assert_allclose(image_tower.embed(images)[0], by_torch, atol=1e-5)
    np.testing.assert_allclose(text_tower.embed_texts(words)[0], words_by_torch, atol=1e-5)
    # each entry refuses the other kind, item by item
    assert text_tower.embed(images[:1])[1] == ["clip-text embeds text, not images"]
    with pytest.raises(ValueError, match="embeds images"):
        image_tower.embed_texts(words)
    config = (towers / text_entry("clip") / "config.pbtxt").read_text()
    assert 'name: "TEXT"' in config and image_tower.spec.model_id in config
    spec = ModelSpec.from_json((towers / text_entry("clip") / "1" / "embedding.json").read_text())
    assert spec == text_tower.spec


def test_an_image_entrys_id_is_unchanged_by_the_text_field() -> None:
    # entries exported before text towers existed keep their model ids
    spec = ModelSpec("m", 1, "s", "input", "output", 8, 8)
    assert (
        "text" not in spec.fingerprint()
        and spec.model_id == ModelSpec.from_json(spec.to_json()).model_id
    )


def test_what_cannot_be_exported_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="open_clip has no such model"):
        export_clip(tmp_path, "x", 1, "ViT-Nothing-1", weights="random")
    with pytest.raises(ExportError, match="no pretrained tag of that name"):
        export_clip(tmp_path, "x", 1, "ViT-S-32", weights="no-such-tag")
    with pytest.raises(ExportError, match="only CLIP's own BPE tokenizer"):
        export_clip(tmp_path, "x", 1, "ViT-B-32-SigLIP2-256", weights="random")
