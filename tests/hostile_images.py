"""A corpus of hostile and odd images, made on the spot: every kind the pipeline must either
index correctly or refuse with a reason of its own (never crash, never pass over in silence).

Each `Hostile` says what must happen to it: `embed` (indexed: it is a valid image, however
odd) or `reject` with a fragment of the reason the embedding runtime gives.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from tests.images import encode, png_claiming_size

Verdict = Literal["embed", "reject"]


@dataclass(frozen=True)
class Hostile:
    kind: str
    file_name: str
    data: bytes
    verdict: Verdict
    reason: str = ""  # a fragment of the rejection's reason


def _photo(photo: Path, side: int = 96) -> Image.Image:
    with Image.open(photo) as image:
        return image.convert("RGB").resize((side, side))


def _with_orientation(image: Image.Image, orientation: int) -> bytes:
    return encode(image, "JPEG", exif=_orientation_exif(orientation))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with_text(image: Image.Image, size: int, compressed: bool = False) -> bytes:
    """A PNG with a text chunk of `size` bytes (zTXt: deflated, a few kB on disk)."""
    png = encode(image, "PNG")
    if compressed:
        chunk = _png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * size, 9))
    else:
        chunk = _png_chunk(b"tEXt", b"Comment\0" + b"A" * size)
    return png[:33] + chunk + png[33:]  # after the signature and IHDR


def _gif_claiming(width: int, height: int) -> bytes:
    gif = bytearray(encode(Image.new("P", (4, 4)), "GIF"))
    gif[6:10] = struct.pack("<HH", width, height)
    return bytes(gif)


def _corrupt_exif(image: Image.Image) -> bytes:
    jpeg = encode(image, "JPEG")
    app1 = b"Exif\0\0" + b"MM\0\x2a\0\0\0\x08" + b"\xff\xff" + b"\x00" * 20  # 65535 entries
    segment = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    return jpeg[:2] + segment + jpeg[2:]


def _polyglot(jpeg: bytes) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("payload.txt", "a zip archive riding on a jpeg")
    return jpeg + archive.getvalue()


def _bad_idat_crc(image: Image.Image) -> bytes:
    data = bytearray(encode(image, "PNG"))
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 + length] ^= 0xFF  # the chunk's CRC
    return bytes(data)


def _claiming_size(container: bytes, width: int, height: int) -> bytes:
    """A HEIF or AVIF whose image-spatial-extent box (ispe) declares another size."""
    data = bytearray(container)
    at = data.index(b"ispe") + 8  # after the box type and its version and flags
    data[at : at + 8] = struct.pack(">II", width, height)
    return bytes(data)


def _many_images(image: Image.Image, fmt: str) -> bytes:
    """Several images in one container (a burst, a live photo's stills): the primary counts."""
    others = [image.rotate(n * 40) for n in range(1, 5)]
    return encode(image, fmt, save_all=True, append_images=others, quality=60)


def phone_kinds(image: Image.Image) -> list[Hostile]:
    """HEIC and AVIF, what phones write, and their odd cases."""
    heic = encode(image, "HEIF", quality=70)
    avif = encode(image, "AVIF", quality=70)
    return [
        Hostile("HEIC", "phone.heic", heic, "embed"),
        Hostile("AVIF", "phone.avif", avif, "embed"),
        Hostile(
            "HEIC turned by EXIF orientation 6",
            "turned.heic",
            encode(image.rotate(11), "HEIF", quality=70, exif=_orientation_exif(6)),
            "embed",
        ),
        Hostile(
            "AVIF turned by EXIF orientation 8",
            "turned.avif",
            encode(image.rotate(13), "AVIF", quality=70, exif=_orientation_exif(8)),
            "embed",
        ),
        Hostile("grayscale HEIC", "gray.heic", encode(image.convert("L"), "HEIF"), "embed"),
        Hostile(
            "HEIC with an embedded thumbnail",
            "thumbed.heic",
            encode(image.rotate(17), "HEIF", thumbnails=[48]),
            "embed",
        ),
        Hostile("AVIF with alpha", "alpha.avif", encode(image.convert("RGBA"), "AVIF"), "embed"),
        Hostile("HEIC with five images", "burst.heic", _many_images(image, "HEIF"), "embed"),
        Hostile("AVIF with five frames", "burst.avif", _many_images(image, "AVIF"), "embed"),
        Hostile("truncated HEIC", "cut.heic", heic[: len(heic) // 2], "reject", "corrupt HEIF"),
        Hostile("truncated AVIF", "cut.avif", avif[: len(avif) // 2], "reject", "not an image"),
        Hostile("HEIC header only", "head.heic", heic[:64], "reject", ""),
        Hostile(
            "HEIC claiming 30000x30000",
            "huge.heic",
            _claiming_size(heic, 30_000, 30_000),
            "reject",
            "decompression-bomb",
        ),
        Hostile(
            "AVIF claiming 30000x30000",
            "huge.avif",
            _claiming_size(avif, 30_000, 30_000),
            "reject",
            "not an image",  # libavif refuses it before any size is known
        ),
    ]


def _orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def hostile_corpus(photo: Path) -> list[Hostile]:
    """At least 40 kinds, from one real photo."""
    image = _photo(photo)
    jpeg = encode(image, "JPEG", quality=90)
    png = encode(image, "PNG")
    frames = [Image.new("RGB", (32, 32), (i * 5 % 256, 0, 0)) for i in range(50)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=20)
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    sixteen = Image.new("I;16", (64, 64))
    sixteen.putdata([i * 16 for i in range(64 * 64)])
    transparent_gif = Image.new("P", (16, 16))
    transparent_gif.info["transparency"] = 0
    top_down_bmp = bytearray(encode(image, "BMP"))
    top_down_bmp[22:26] = struct.pack("<i", -struct.unpack("<i", top_down_bmp[22:26])[0])
    kinds = [
        Hostile("zero bytes", "empty.jpg", b"", "reject", "empty"),
        Hostile("text named .jpg", "notes.jpg", b"just some text\n" * 40, "reject", "not an image"),
        Hostile(
            "HTML named .jpg",
            "page.jpg",
            b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
            "reject",
            "not an image",
        ),
        Hostile(
            "SVG named .jpg",
            "vector.jpg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
            "reject",
            "not an image",
        ),
        Hostile(
            "PDF named .png",
            "doc.png",
            b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n",
            "reject",
            "not an image",
        ),
        Hostile("truncated JPEG", "cut.jpg", jpeg[: len(jpeg) // 3], "reject", "corrupt JPEG"),
        Hostile("truncated PNG", "cut.png", png[: len(png) // 2], "reject", "corrupt PNG"),
        Hostile("JPEG header only", "head.jpg", jpeg[:20], "reject", ""),
        # the pixels are intact: it is indexed (PIL, like browsers, does not check IDAT CRCs)
        Hostile("PNG with a bad IDAT CRC", "crc.png", _bad_idat_crc(image), "embed"),
        Hostile(
            "decompression bomb (PNG header 30000x30000)",
            "bomb.png",
            png_claiming_size(30_000, 30_000),
            "reject",
            "decompression-bomb",
        ),
        Hostile(
            "GIF claiming 60000x60000",
            "huge.gif",
            _gif_claiming(60_000, 60_000),
            "reject",
            "",
        ),
        Hostile(
            "20001 x 1 PNG",
            "wide.png",
            encode(Image.new("L", (20_001, 1)), "PNG"),
            "reject",
            "absurd",
        ),
        Hostile(
            "PNG with a 2 MB text chunk", "chatty.png", _png_with_text(image, 2_000_000), "embed"
        ),
        Hostile(
            "PNG with a zTXt bomb (200 MB of text deflated)",
            "ztxt.png",
            _png_with_text(image, 200_000_000, compressed=True),
            "reject",
            "unreadable header: Decompressed data too large",
        ),
        Hostile(
            "PNG with a 100 kB text chunk", "noted.png", _png_with_text(image, 100_000), "embed"
        ),
        Hostile("TIFF", "scan.tif", encode(image, "TIFF"), "reject", "unsupported format TIFF"),
        Hostile("ICO", "favicon.ico", encode(image, "ICO"), "reject", "unsupported format ICO"),
        Hostile("animated GIF, 50 frames", "anim.gif", animated.getvalue(), "embed"),
        Hostile("CMYK JPEG", "cmyk.jpg", encode(image.convert("CMYK"), "JPEG"), "embed"),
        Hostile("16-bit grayscale PNG", "deep.png", encode(sixteen, "PNG"), "embed"),
        Hostile("palette PNG with transparency", "palette.png", encode(palette, "PNG"), "embed"),
        Hostile("RGBA PNG", "alpha.png", encode(image.convert("RGBA"), "PNG"), "embed"),
        Hostile("gray + alpha PNG", "la.png", encode(image.convert("LA"), "PNG"), "embed"),
        Hostile("1-bit PNG", "mono.png", encode(image.convert("1"), "PNG"), "embed"),
        Hostile("grayscale JPEG", "gray.jpg", encode(image.convert("L"), "JPEG"), "embed"),
        Hostile(
            "progressive JPEG", "progressive.jpg", encode(image, "JPEG", progressive=True), "embed"
        ),
        Hostile("corrupt EXIF", "exif.jpg", _corrupt_exif(image), "embed"),
        Hostile("WebP lossy", "lossy.webp", encode(image, "WEBP", quality=70), "embed"),
        Hostile(
            "WebP lossless with alpha",
            "lossless.webp",
            encode(image.convert("RGBA"), "WEBP", lossless=True),
            "embed",
        ),
        Hostile("BMP", "bitmap.bmp", encode(image, "BMP"), "embed"),
        Hostile("BMP stored top-down", "topdown.bmp", bytes(top_down_bmp), "embed"),
        Hostile("1 x 1 PNG", "dot.png", encode(Image.new("RGB", (1, 1), "blue"), "PNG"), "embed"),
        Hostile(
            "20000 x 1 PNG", "line.png", encode(Image.new("L", (20_000, 1), 99), "PNG"), "embed"
        ),
        Hostile("JPEG named .png", "liar.png", encode(image.rotate(90), "JPEG"), "embed"),
        Hostile(
            "ZIP/JPEG polyglot",
            "polyglot.jpg",
            _polyglot(encode(image.rotate(45), "JPEG")),
            "embed",
        ),
        Hostile(
            "JPEG with trailing garbage",
            "tail.jpg",
            encode(image.rotate(30), "JPEG") + b"\0" * 999,
            "embed",
        ),
        Hostile("GIF with transparency", "clear.gif", encode(transparent_gif, "GIF"), "embed"),
    ]
    kinds += [
        Hostile(
            f"EXIF orientation {n}",
            f"orientation{n}.jpg",
            _with_orientation(image.rotate(n * 7), n),
            "embed",
        )
        for n in range(1, 9)
    ]
    return kinds + phone_kinds(image)
