"""Training on what the index holds, against fakes of the ports."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from cbir.domain.images import image_id_of
from cbir.training.sources import NothingToTrainOn, from_index, tagged_rows
from schemas.events import ImageMetadata
from tests.fakes import FakeEmbedder, FakeMetadataStore, FakeObjectStore, FakeVectorIndex

MODEL = "mobilenet:1:8d:gap:aaaaaaaaaaaa"


def holding(tagged: dict[bytes, tuple[str, ...]]) -> tuple[FakeMetadataStore, FakeObjectStore]:
    metadata, objects = FakeMetadataStore(), FakeObjectStore()
    images = []
    for data, tags in tagged.items():
        image_id = image_id_of(data)
        image = ImageMetadata(
            image_id, "images", f"k/{image_id}", "f.jpg", "t", "image/jpeg", len(data), 1, 1,
            datetime(2026, 1, 1, tzinfo=UTC), tags,
        )  # fmt: skip
        objects.objects[("images", image.object_key)] = data
        images.append(image)
    metadata.upsert_indexed(images, MODEL, "images__g1")
    return metadata, objects


def test_the_index_tags_become_classes_and_the_bytes_descriptors(tmp_path: Path) -> None:
    metadata, objects = holding(
        {
            b"\x01a": ("rose",),
            b"\x01b": ("rose", "red"),  # the first tag is the class
            b"\x02a": ("tulip",),
            b"\x02b": ("tulip",),
            b"\x03a": ("lonely",),  # one image: no positive pair, left out
            b"\x04a": (),  # untagged: left out
        }
    )
    embedder = FakeEmbedder("mobilenet", MODEL)
    found = from_index(metadata, objects, "images", embedder, tmp_path)
    assert found.classes == ["rose", "tulip"] and sorted(found.labels.tolist()) == [0, 0, 1, 1]
    assert found.features.shape == (4, 8) and found.model_id == MODEL
    # the descriptor of each image is its own: the fake one-hots the first byte
    for vector, label in zip(found.features, found.labels, strict=True):
        assert int(np.argmax(vector)) == (1 if found.classes[label] == "rose" else 2)
    again = from_index(metadata, objects, "images", embedder, tmp_path)
    assert embedder.calls == 1  # the second run read the cache
    np.testing.assert_array_equal(again.features, found.features)
    np.testing.assert_array_equal(again.labels, found.labels)


def test_too_few_tagged_images_say_what_to_do(tmp_path: Path) -> None:
    metadata, objects = holding({b"\x01a": ("rose",), b"\x01b": ("rose",)})
    with pytest.raises(NothingToTrainOn, match="two tags with two images"):
        from_index(metadata, objects, "images", FakeEmbedder("m", MODEL), tmp_path)


def test_paging_sees_every_tagged_image_once() -> None:
    metadata, _ = holding({bytes([i, 7]): ("t",) for i in range(25)})
    assert len(tagged_rows(metadata, page=10)) == 25


FOUR: dict[bytes, tuple[str, ...]] = {
    b"\x01a": ("rose",),
    b"\x01b": ("rose",),
    b"\x02a": ("tulip",),
    b"\x02b": ("tulip",),
}


def serving(model_id: str, stored: list[bytes]) -> FakeVectorIndex:
    """A served collection of `model_id` holding a marked vector (9 in its last place) for
    each of `stored`."""
    index = FakeVectorIndex()
    index.create("images__g1", model_id, 8, "FLAT", {})
    index.switch_alias("images__g1")
    for data in stored:
        marked = np.zeros(8, dtype=np.float32)
        marked[data[0]], marked[7] = 1.0, 9.0
        index.collections["images__g1"][image_id_of(data)] = marked
    return index


def test_the_served_collection_s_vectors_are_the_descriptors_when_it_holds_the_model(
    tmp_path: Path,
) -> None:
    metadata, objects = holding(FOUR)
    metadata.milvus_ts = 4242  # the processors' last write
    embedder = FakeEmbedder("mobilenet", MODEL)
    index = serving(MODEL, list(FOUR))
    found = from_index(metadata, objects, "images", embedder, tmp_path, index=index)
    assert embedder.calls == 0  # nothing fetched, nothing embedded
    assert index.read_guarantees == [4242]  # no strongly consistent wait per read
    assert found.origin == "descriptors: 4 read from images__g1, 0 embedded"
    assert found.features.shape == (4, 8) and (found.features[:, 7] == 9.0).all()
    assert sorted(found.labels.tolist()) == [0, 0, 1, 1]


def test_an_image_the_collection_lacks_is_embedded_beside_the_stored_ones(
    tmp_path: Path,
) -> None:
    metadata, objects = holding(FOUR)
    embedder = FakeEmbedder("mobilenet", MODEL)
    index = serving(MODEL, [b"\x01a", b"\x01b", b"\x02a"])
    found = from_index(metadata, objects, "images", embedder, tmp_path, index=index)
    assert embedder.calls == 1
    assert found.origin == "descriptors: 3 read from images__g1, 1 embedded"
    assert sorted(found.features[:, 7].tolist()) == [0.0, 9.0, 9.0, 9.0]
    # each row keeps its own label: the embedded one is the tulip without a stored vector
    embedded = int(np.flatnonzero(found.features[:, 7] == 0.0)[0])
    assert found.classes[found.labels[embedded]] == "tulip"


def test_another_model_s_collection_is_not_used(tmp_path: Path) -> None:
    metadata, objects = holding(FOUR)
    embedder = FakeEmbedder("mobilenet", MODEL)
    index = serving("resnet50:1:8d:gap:bbbbbbbbbbbb", list(FOUR))
    found = from_index(metadata, objects, "images", embedder, tmp_path, index=index)
    assert embedder.calls == 1 and (found.features[:, 7] == 0.0).all()
    assert found.origin == ("descriptors: 4 embedded (no served collection holds this model's)")
