"""The same-object set: transformed copies of shared photographs, made by this script and
cached (never committed). Each chosen source image gets one copy per transform below; a copy
and its source (and the source's other copies) show the very same object, so a search with a
copy should find them first, and a near-duplicate detector should pair them.

Transforms, each with its parameters drawn from a generator seeded per source:
crop (45-70 % of the area), rotate (10-30 degrees either way, canvas expanded), scale (down to
30-50 %), perspective (corners moved up to 15 % of the side), jpeg (quality 10-20), colour
(hue, saturation and brightness shifted), text (two lines drawn over the image), flip
(mirrored), screenshot (shrunk into a window with a title bar and borders, saved as PNG),
combo (crop, then rotate, then JPEG quality 40).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

Transform = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, str]]
VERSION = 1


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    share = rng.uniform(0.45, 0.70)
    side = np.sqrt(share)
    w, h = int(width * side), int(height * side)
    left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return image.crop((left, top, left + w, top + h))


def crop(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    return _crop(image, rng), "JPEG"


def _rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = float(rng.uniform(10, 30) * rng.choice([-1, 1]))
    return image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)


def rotate(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    return _rotate(image, rng), "JPEG"


def scale(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    factor = rng.uniform(0.30, 0.50)
    size = (max(16, int(image.width * factor)), max(16, int(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS), "JPEG"


def perspective(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    width, height = image.size
    moved = rng.uniform(0, 0.15, size=(4, 2)) * (width, height)
    corners = np.array([(0, 0), (width, 0), (width, height), (0, height)], float)
    inward = np.array([(1, 1), (-1, 1), (-1, -1), (1, -1)], float)
    source = corners + moved * inward
    coefficients = _perspective_coefficients(corners, source)
    warped = image.transform(
        image.size, Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC
    )
    return warped, "JPEG"


def _perspective_coefficients(target: np.ndarray, source: np.ndarray) -> tuple[float, ...]:
    """PIL's 8 coefficients mapping output pixels (target corners) to input (source)."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    solution = np.linalg.solve(np.array(rows), source.reshape(8))
    return tuple(float(c) for c in solution)


def jpeg(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    return image, f"JPEG:{int(rng.integers(10, 21))}"


def colour(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(20, 60))) % 256
    shifted = Image.fromarray(hsv, "HSV").convert("RGB")
    shifted = ImageEnhance.Color(shifted).enhance(rng.uniform(0.5, 1.5))
    return ImageEnhance.Brightness(shifted).enhance(rng.uniform(0.7, 1.3)), "JPEG"


def text(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    size = max(12, image.height // 9)
    font = ImageFont.load_default(size)
    words = ["SALE -40%", "© photo agency", "not for resale", "www.example.com", "#flowers"]
    for line in range(2):
        y = int(image.height * (0.15 + 0.55 * line + rng.uniform(0, 0.1)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.text((int(image.width * 0.05), y), str(rng.choice(words)), fill=fill, font=font)
    return drawn, "JPEG"


def flip(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    return ImageOps.mirror(image), "JPEG"


def screenshot(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    factor = rng.uniform(0.6, 0.8)
    inner = image.resize((int(image.width * factor), int(image.height * factor)))
    border, bar = int(rng.integers(20, 60)), 28
    canvas = Image.new(
        "RGB", (inner.width + 2 * border, inner.height + 2 * border + bar), (236, 236, 236)
    )
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, bar), fill=(60, 63, 70))
    for i, dot in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
        draw.ellipse((8 + 18 * i, 8, 20 + 18 * i, 20), fill=dot)
    draw.text(
        (80, 6), "IMG_2041.jpg - Photos", fill=(230, 230, 230), font=ImageFont.load_default(14)
    )
    canvas.paste(inner, (border, bar + border))
    return canvas, "PNG"


def combo(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    return _rotate(_crop(image, rng), rng), "JPEG:40"


TRANSFORMS: dict[str, Transform] = {
    "crop": crop,
    "rotate": rotate,
    "scale": scale,
    "perspective": perspective,
    "jpeg": jpeg,
    "colour": colour,
    "text": text,
    "flip": flip,
    "screenshot": screenshot,
    "combo": combo,
}


@dataclass(frozen=True)
class Copy:
    path: Path
    source: int  # index of the source among the dataset's images
    transform: str


def encode(image: Image.Image, how: str) -> bytes:
    kind, _, quality = how.partition(":")
    buffer = io.BytesIO()
    if kind == "PNG":
        image.save(buffer, "PNG", optimize=False)
    else:
        image.convert("RGB").save(buffer, "JPEG", quality=int(quality or 90))
    return buffer.getvalue()


def make_copies(
    sources: list[Path], count: int, seed: int, cache: Path, advance: Callable[[], None]
) -> list[Copy]:
    """`count` sources drawn from `sources` (seeded), one copy per transform each, written
    once under `cache` (a folder named by the inputs: a second run reads it)."""
    chosen = sorted(np.random.default_rng(seed).choice(len(sources), count, replace=False))
    key = hashlib.sha256(
        json.dumps([VERSION, seed, [str(sources[i]) for i in chosen], list(TRANSFORMS)]).encode()
    ).hexdigest()[:12]
    folder = cache / f"same-object-{key}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        rows = json.loads(manifest.read_text())
        return [Copy(folder / r["file"], r["source"], r["transform"]) for r in rows]
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in chosen:
        rng = np.random.default_rng([seed, int(index)])
        with Image.open(sources[index]) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        for name, transform in TRANSFORMS.items():
            made, how = transform(image, rng)
            suffix = ".png" if how == "PNG" else ".jpg"
            file = f"{index:05d}-{name}{suffix}"
            (folder / file).write_bytes(encode(made, how))
            rows.append({"file": file, "source": int(index), "transform": name})
        advance()
    manifest.write_text(json.dumps(rows, indent=1))
    return [Copy(folder / r["file"], r["source"], r["transform"]) for r in rows]
