"""Training on what the index holds, against fakes of the ports."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from domain.images import image_id_of
from schemas.events import ImageMetadata
from tests.fakes import FakeEmbedder, FakeMetadataStore, FakeObjectStore
from training.sources import NothingToTrainOn, from_index, tagged_rows

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
