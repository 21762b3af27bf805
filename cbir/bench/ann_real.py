"""Real descriptors for the ANN table: the shared photographs under augmentations, through the
shared MobileNet (1024-d; no 2048-d model with real weights can be had offline here, ResNet-50's
pretrained weights come from a hub and a randomly initialised one gives no real descriptors).

Sources: every image of flowers17 (1360 photographs) and cifar10-test (10000 images of 32
pixels), so each source appears about nine times in a 100K base. Each descriptor is one
augmentation of one source, with parameters drawn from a generator seeded by (seed, index):

- random resized crop: 35-100 % of the area, aspect ratio 3/4-4/3 (torchvision's recipe),
  squashed to the network's input size;
- horizontal flip with probability 1/2;
- colour jitter: brightness, contrast and saturation each scaled by 0.6-1.4, hue turned by up
  to 0.05 of the circle.

Base vectors are augmentations 0 .. size-1 (source = index modulo the source count); queries
are augmentations drawn with another seed of sources chosen at random, so no query is in the
base but each has near copies there, as a user's query of a stored photograph would. The exact
ground truth is brute force (inner product of unit vectors). Everything is cached.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from cbir.bench.truth import exact_neighbours
from cbir.domain.images import IMAGE_SUFFIXES
from cbir.models.runtime import OnnxEmbedder, decode_image, to_input
from cbir.output import console

VERSION = 2
BATCH = 64


def source_files(folders: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f"no images under {', '.join(map(str, folders))}: pass --shared with the shared data"
        )
    return files


def augment(image: Image.Image, rng: np.random.Generator, side: int) -> Image.Image:
    """One augmentation (see the module's docstring), squashed to side x side: the colour
    jitter runs on the resized crop, which costs the same whatever the source's size."""
    width, height = image.size
    for _ in range(10):
        area = width * height * rng.uniform(0.35, 1.0)
        ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        w, h = round(float(np.sqrt(area * ratio))), round(float(np.sqrt(area / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            image = image.crop((left, top, left + w, top + h))
            break
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.resize((side, side), Image.Resampling.BILINEAR)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(0.6, 1.4)))
    shift = round(float(rng.uniform(-0.05, 0.05)) * 255)
    if shift:
        hue, saturation, value = image.convert("HSV").split()
        hue = hue.point(lambda v: (v + shift) % 256)
        image = Image.merge("HSV", (hue, saturation, value)).convert("RGB")
    return image


def describe(
    embedder: OnnxEmbedder, images: list[Image.Image], count: int, seed: int, sources: np.ndarray
) -> np.ndarray:
    """`count` descriptors: augmentation i of images[sources[i]] with generator (seed, i).
    The next batch is augmented in a thread while the network runs on this one."""
    prep = embedder.spec.preprocessing

    def inputs(start: int) -> np.ndarray:
        batch = []
        for i in range(start, min(count, start + BATCH)):
            rng = np.random.default_rng((seed, i))
            batch.append(to_input(augment(images[sources[i]], rng, prep.input_size), prep))
        return np.stack(batch)

    vectors = np.empty((count, embedder.spec.dim), dtype=np.float32)
    started, reported = time.perf_counter(), 0.0
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(inputs, 0)
        for start in range(0, count, BATCH):
            batch = pending.result()
            if start + BATCH < count:
                pending = pool.submit(inputs, start + BATCH)
            vectors[start : start + len(batch)] = embedder.embed_tensors(batch)
            elapsed = time.perf_counter() - started
            if elapsed - reported > 30 or start + len(batch) == count:
                reported = elapsed
                done = start + len(batch)
                console.print(f"  {done}/{count} descriptors, {done / elapsed:.0f}/s")
    return vectors


def real_dataset(
    cache: Path, model_dir: Path, folders: Sequence[Path], size: int, queries: int, seed: int
) -> dict[str, Path]:
    """Base vectors, queries and exact ground truth as .npy files, made once and reused."""
    files = source_files(folders)
    digest = hashlib.sha256(f"v{VERSION}".encode())
    for path in files:
        digest.update(f"{path.parent.name}/{path.name}:{path.stat().st_size}\n".encode())
    embedder = OnnxEmbedder(model_dir, intra_op_threads=os.cpu_count() or 1)
    digest.update(embedder.spec.model_id.encode())
    folder = cache / f"real-{size}-q{queries}-s{seed}-{digest.hexdigest()[:12]}"
    out = {name: folder / f"{name}.npy" for name in ("base", "queries", "truth")}
    if all(path.exists() for path in out.values()):
        return out
    folder.mkdir(parents=True, exist_ok=True)
    prep = embedder.spec.preprocessing
    target = prep.resize_shorter if prep.resize == "shorter_side_crop" else prep.input_size
    console.print(f"decoding {len(files)} source images")
    images = [decode_image(p.read_bytes(), max(target, 256)) for p in files]
    console.print(
        f"embedding {size} augmented copies and {queries} queries ({embedder.spec.model_id})"
    )
    base = describe(embedder, images, size, seed, np.arange(size) % len(images))
    chosen = np.random.default_rng((seed, 1)).integers(0, len(images), size=queries)
    held_out = describe(embedder, images, queries, seed + 1, chosen)
    started = time.perf_counter()
    truth = exact_neighbours(base, held_out, min(100, size - 1))
    console.print(f"exact ground truth by brute force in {time.perf_counter() - started:.1f} s")
    for name, array in (("base", base), ("queries", held_out), ("truth", truth)):
        np.save(out[name], array)
    (folder / "sources.txt").write_text("\n".join(str(p) for p in files) + "\n")
    return out
