"""What the pipeline reads from an image's header: media type, upright size and the capture
metadata of its EXIF, for every format it takes (HEIC and AVIF included)."""

from __future__ import annotations

from datetime import datetime

import pytest
from PIL import ExifTags, Image

from cbir.domain.images import (
    MAX_CAMERA_LENGTH,
    NO_CAPTURE_TIME,
    UNKNOWN_TYPE,
    Capture,
    clock_ms,
    exif_date,
    sniff,
)
from tests.images import encode

TAKEN = datetime(2024, 7, 14, 18, 32, 5, 420_000)


def exif(orientation: int = 1, **details: str) -> bytes:
    made = Image.Exif()
    made[ExifTags.Base.Make] = "Apple\0"
    made[ExifTags.Base.Model] = "iPhone 15 Pro"
    made[ExifTags.Base.Orientation] = orientation
    inner = made.get_ifd(ExifTags.IFD.Exif)
    for name, value in details.items():
        inner[ExifTags.Base[name]] = value
    return made.tobytes()


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        ("JPEG", "image/jpeg"),
        ("HEIF", "image/heic"),
        ("AVIF", "image/avif"),
        ("PNG", "image/png"),
        ("WEBP", "image/webp"),
    ],
)
def test_the_header_gives_type_upright_size_and_capture(fmt: str, media_type: str) -> None:
    sideways = Image.new("RGB", (30, 40), "teal")  # orientation 6: upright it is 40 x 30
    data = encode(
        sideways,
        fmt,
        exif=exif(6, DateTimeOriginal="2024:07:14 18:32:05", SubsecTimeOriginal="42"),
    )
    header = sniff(data)
    assert (header.content_type, header.width, header.height) == (media_type, 40, 30)
    assert header.capture == Capture(TAKEN, "Apple", "iPhone 15 Pro")


def test_the_digitized_time_stands_in_and_the_modification_time_never_does() -> None:
    image = Image.new("RGB", (8, 8))
    digitized = sniff(encode(image, "JPEG", exif=exif(DateTimeDigitized="2023:01:02 03:04:05")))
    assert digitized.capture.taken_at == datetime(2023, 1, 2, 3, 4, 5)
    modified = Image.Exif()
    modified[ExifTags.Base.DateTime] = "2023:01:02 03:04:05"  # when the file was last edited
    assert sniff(encode(image, "JPEG", exif=modified.tobytes())).capture == Capture()
    assert sniff(encode(image, "JPEG")).capture == Capture()  # no EXIF: nothing made up


@pytest.mark.parametrize(
    "text",
    [
        "0000:00:00 00:00:00",
        "    :  :     :  :  ",
        "2024:13:01 00:00:00",
        "2024:02:30 10:00:00",
        "1850:01:01 00:00:00",
        "yesterday",
        "",
    ],
)
def test_placeholder_and_impossible_dates_are_no_date(text: str) -> None:
    assert exif_date(text) is None


def test_camera_names_are_cleaned_and_bounded_and_corrupt_exif_is_no_capture() -> None:
    image = Image.new("RGB", (8, 8))
    made = Image.Exif()
    made[ExifTags.Base.Make] = "Canon\x07" + "x" * 200
    made[ExifTags.Base.Model] = "   "
    capture = sniff(encode(image, "JPEG", exif=made.tobytes())).capture
    assert capture.camera_make == "Canon" + "x" * (MAX_CAMERA_LENGTH - 5)
    assert capture.camera_model is None
    jpeg = encode(image, "JPEG")
    broken = b"Exif\0\0MM\0\x2a\0\0\0\x08\xff\xff" + b"\0" * 20  # 65535 entries promised
    segment = b"\xff\xe1" + len(broken + b"..").to_bytes(2, "big") + broken
    header = sniff(jpeg[:2] + segment + jpeg[2:])
    assert (header.content_type, header.width, header.capture) == ("image/jpeg", 8, Capture())
    assert sniff(b"not an image").content_type == UNKNOWN_TYPE


def test_camera_clock_times_keep_their_order_and_unknown_is_below_all() -> None:
    assert clock_ms(datetime(1970, 1, 1)) == 0
    assert clock_ms(TAKEN) == 1720981925420
    assert clock_ms(None) == NO_CAPTURE_TIME < clock_ms(datetime(1900, 1, 1))
