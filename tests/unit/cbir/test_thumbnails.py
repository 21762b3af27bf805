"""Renditions made from real photographs and odd ones: sizes, never upscaled, upright, WebP;
a missing one is made from the original on its first read."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from cbir.models.runtime import ImageRejected
from cbir.thumbnails import RenditionSizes, ThumbnailStore, make_renditions, rendition_key
from tests.fakes import FakeObjectStore


def encoded(image: Image.Image, exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92, exif=exif or Image.Exif())
    return out.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
        return image.size


def test_a_phone_sized_photo_becomes_a_small_thumbnail_and_a_preview(shared_dir: Path) -> None:
    photo = next((shared_dir / "data" / "holidays").rglob("*.jpg"))
    with Image.open(photo) as source:
        big = encoded(source.convert("RGB").resize((4032, 3024)))
    made = make_renditions(big, RenditionSizes(320, 960, 75), ("thumbnail", "preview"))
    assert size_of(made["thumbnail"]) == (320, 240) and size_of(made["preview"]) == (960, 720)
    assert len(made["thumbnail"]) * 50 < len(big)
    assert make_renditions(big, RenditionSizes(320, 960, 75), ("thumbnail",)).keys() == {
        "thumbnail"
    }


def test_a_small_image_is_never_upscaled_and_exif_orientation_is_honoured() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown upright, it is taller than wide
    made = make_renditions(encoded(Image.new("RGB", (200, 100)), exif), RenditionSizes(320, 1280))
    assert size_of(made["thumbnail"]) == (100, 200) == size_of(made["preview"])


def test_bytes_that_are_no_image_are_refused() -> None:
    with pytest.raises(ImageRejected):
        make_renditions(b"\x00not an image", RenditionSizes())


def test_a_missing_rendition_is_made_from_the_original_on_first_read() -> None:
    objects = FakeObjectStore()
    objects.objects[("images", "k/1")] = encoded(Image.new("RGB", (1000, 500), (10, 200, 30)))
    store = ThumbnailStore(objects, "thumbs", "images", RenditionSizes(100, 400))
    assert not store.has("1")
    thumbnail = store.get("1", "thumbnail", object_key="k/1")
    assert thumbnail is not None and size_of(thumbnail) == (100, 50)
    assert store.has("1") and ("thumbs", rendition_key("1", "preview")) not in objects.objects
    preview = store.get("1", "preview", object_key="k/1")
    assert preview is not None and size_of(preview) == (400, 200) and store.has("1", "preview")
    assert store.get("2", "thumbnail", object_key="k/2") is None  # no original: none
    store.remove("1")
    assert not store.has("1") and not store.has("1", "preview")
