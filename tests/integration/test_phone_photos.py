"""Phone photographs on the real stack: HEIC (what iPhones write) and AVIF (what many Android
phones and browsers write), each through every entry (the producer, the API's upload, a plain
S3 client's put), decoded by the runtime inside Triton, by the local-feature extractor and by
the thumbnail maker; each found first by a search with a JPEG copy of the same photograph;
their capture time, camera and upright size read from their EXIF and kept with the row and
beside the vector, where the taken_after / taken_before filters of searches and browsing
use them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import ExifTags, Image

from cbir import wiring
from cbir.adapters import object_store
from cbir.domain.images import image_id_of
from cbir.settings import Settings
from cbir.stack.launcher import Launcher
from cbir.thumbnails import rendition_key
from producers.ingest import IngestItem
from tests.images import encode
from tests.integration.conftest import TEST_API_KEY
from tests.integration.helpers import indexed, wait_for

pytestmark = pytest.mark.integration
PHONE_SIZE = (1600, 1200)  # the Holidays copies are 325 px wide: brought to a phone's scale
ENTRIES = ("producer", "api", "s3")


@dataclass(frozen=True)
class PhonePhoto:
    entry: str
    file_name: str
    data: bytes  # as the phone wrote it
    jpeg_copy: bytes  # the same photograph, upright, as a plain JPEG without EXIF
    taken_at: datetime
    make: str
    model: str

    @property
    def image_id(self) -> str:
        return image_id_of(self.data)


def _exif(taken_at: datetime, make: str, model: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = make
    exif[ExifTags.Base.Model] = model
    exif[ExifTags.Base.Orientation] = orientation
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = taken_at.strftime(
        "%Y:%m:%d %H:%M:%S"
    )
    return exif.tobytes()


def phone_photos(holidays: Path) -> list[PhonePhoto]:
    """Six photographs of six scenes: per entry one HEIC and one AVIF, stored sideways with
    EXIF orientation 6 (as a phone held upright writes them), each with its own date."""
    scenes = sorted(p for p in holidays.iterdir() if p.is_dir())[40:46]
    made = []
    for n, scene in enumerate(scenes):
        entry, fmt = ENTRIES[n // 2], ("HEIF", "AVIF")[n % 2]
        with Image.open(sorted(scene.iterdir())[0]) as opened:
            upright = opened.convert("RGB").resize(PHONE_SIZE, Image.Resampling.BICUBIC)
        taken = datetime(2024, 7, 10 + n, 9 + n, 30, 5)
        make, model = ("Apple", "iPhone 15 Pro") if fmt == "HEIF" else ("Google", "Pixel 8")
        sideways = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
        # an iPhone embeds a 320 px thumbnail in its HEIC: the thumbnail (and a squashed
        # 224 px model input) is read from it, where a full decode costs ~0.3 s at 12 MP
        extra: dict[str, Any] = {"thumbnails": [320]} if fmt == "HEIF" else {}
        data = encode(sideways, fmt, quality=80, exif=_exif(taken, make, model, 6), **extra)
        suffix = ".heic" if fmt == "HEIF" else ".avif"
        jpeg = encode(upright, "JPEG", quality=90)
        made.append(PhonePhoto(entry, f"{scene.name}{suffix}", data, jpeg, taken, make, model))
    return made


@pytest.fixture(scope="module")
def photos(
    launcher: Launcher, mobilenet_served: Path, shared_dir: Path, tmp_path_factory: Any
) -> list[PhonePhoto]:
    """The six photographs sent through their entries and indexed."""
    settings = launcher.settings
    made = phone_photos(shared_dir / "data" / "holidays")
    folder = tmp_path_factory.mktemp("phone")
    items = []
    for photo in (p for p in made if p.entry == "producer"):
        path = folder / photo.file_name
        path.write_bytes(photo.data)
        items.append(IngestItem(path, ("phone",)))
    assert wiring.ingest(settings, items).rejected == []
    with httpx.Client(base_url=base_url(settings), timeout=60) as client:
        for photo in (p for p in made if p.entry == "api"):
            answer = client.post(
                "/images",
                files={"image": (photo.file_name, photo.data)},
                headers={"X-API-Key": TEST_API_KEY},
            )
            assert answer.status_code in (200, 202), answer.text
    minio = object_store.client(settings.minio)
    for photo in (p for p in made if p.entry == "s3"):
        minio.put_object(
            settings.minio.bucket,
            f"phone/{photo.file_name}",
            io.BytesIO(photo.data),
            len(photo.data),
        )
    ids = {p.image_id for p in made}
    wait_for(lambda: indexed(settings, ids) == len(ids), 240, "the phone photos indexed")
    return made


def base_url(settings: Settings) -> str:
    return f"http://{settings.api.host}:{settings.api.port}"


def search(settings: Settings, jpeg: bytes, **fields: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{base_url(settings)}/search",
        files={"image": ("copy.jpg", jpeg)},
        data={"k": "3", **fields},
        headers={"Cache-Control": "no-cache"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_each_phone_photo_is_found_first_by_its_jpeg_copy_with_its_capture_metadata(
    launcher: Launcher, photos: list[PhonePhoto]
) -> None:
    settings = launcher.settings
    for photo in photos:
        top = search(settings, photo.jpeg_copy)["results"][0]
        assert top["image_id"] == photo.image_id, (photo.entry, photo.file_name)
        assert top["score"] > 0.9, (photo.file_name, top["score"])  # upright: EXIF honoured
        heic = photo.file_name.endswith(".heic")
        assert top["content_type"] == ("image/heic" if heic else "image/avif")
        assert top["taken_at"] == photo.taken_at.isoformat()
        assert (top["camera_make"], top["camera_model"]) == (photo.make, photo.model)
        assert (top["width"], top["height"]) == PHONE_SIZE  # upright, not as stored


def test_thumbnails_and_local_features_are_made_from_the_phone_formats(
    launcher: Launcher, photos: list[PhonePhoto]
) -> None:
    settings = launcher.settings
    minio = object_store.client(settings.minio)
    bucket = settings.thumbnails.bucket

    def thumbnails_made() -> bool:
        names = {o.object_name for o in minio.list_objects(bucket, "thumbnail/")}
        return all(rendition_key(p.image_id, "thumbnail") in names for p in photos)

    wait_for(thumbnails_made, 120, "the thumbnails made at ingest")
    for photo in photos:
        thumbnail = minio.get_object(bucket, rendition_key(photo.image_id, "thumbnail")).read()
        with Image.open(io.BytesIO(thumbnail)) as image:
            assert image.format == "WEBP" and image.width > image.height  # upright
        assert len(thumbnail) < len(photo.data) / 5  # (an upscaled photo: HEIC packs it well)

    def verified(photo: PhonePhoto) -> bool:
        body = search(settings, photo.jpeg_copy, rerank="spatial")
        top = body["results"][0]
        return body["spatial"]["features_missing"] == 0 and (top["inliers"] or 0) >= 15

    wait_for(lambda: all(verified(p) for p in photos), 120, "local features of every photo")


def test_taken_filters_keep_the_photographs_of_their_window(
    launcher: Launcher, photos: list[PhonePhoto]
) -> None:
    settings = launcher.settings
    photo = photos[3]
    day = photo.taken_at.date().isoformat()
    next_day = photo.taken_at.replace(day=photo.taken_at.day + 1).date().isoformat()
    inside = search(settings, photo.jpeg_copy, taken_after=day, taken_before=next_day)
    assert [r["image_id"] for r in inside["results"]] == [photo.image_id]
    before = search(settings, photo.jpeg_copy, taken_before=day)["results"]
    assert {r["image_id"] for r in before} <= {p.image_id for p in photos[:3]}
    assert before  # the three photographs taken before it fill the window
    zoned = search(settings, photo.jpeg_copy, taken_after=f"{day}T00:00:00+02:00")
    assert zoned["results"][0]["image_id"] == photo.image_id  # the zone dropped: its midnight

    window = {"taken_after": "2024-07-10", "taken_before": "2024-07-16"}
    browsed = httpx.get(f"{base_url(settings)}/images", params=window, timeout=60).json()
    taken = [(i["image_id"], i["taken_at"]) for i in browsed["images"]]
    expected = sorted(photos, key=lambda p: p.taken_at, reverse=True)
    assert taken == [(p.image_id, p.taken_at.isoformat()) for p in expected]


def test_an_image_without_exif_has_no_capture_time(
    launcher: Launcher, photos: list[PhonePhoto], flower_photos: list[Path]
) -> None:
    settings = launcher.settings
    flower = flower_photos[5]
    assert wiring.ingest(settings, [IngestItem(flower, ())]).rejected == []
    image_id = image_id_of(flower.read_bytes())
    wait_for(lambda: indexed(settings, {image_id}) == 1, 120, "the flower indexed")
    row = httpx.get(f"{base_url(settings)}/images/{image_id}", timeout=60).json()
    assert (row["taken_at"], row["camera_make"], row["camera_model"]) == (None, None, None)
