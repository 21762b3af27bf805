"""`cbir bench thumbnails`: what a page of results transfers with thumbnails against the
originals, and what making them costs at ingest beside the model.

Phone-sized photographs are made from INRIA Holidays (../shared/data/holidays holds them
downscaled): each brought to 12 MP (4032 x 3024, or 3024 x 4032 upright), with seeded
Gaussian noise (sigma 4 levels, a phone sensor's grain, which is what makes real originals
megabytes) and saved as a phone saves it: JPEG quality 92; HEIC (what iPhones write) quality
80 with a 320 px embedded thumbnail, as iPhones embed one; AVIF quality 80. HEIC and AVIF take
seconds each to encode at 12 MP, so they get one page (`--phone-pages`). In one run on the
same photographs, per format:

- bytes: pages of 12 results, the originals' bytes against the thumbnails' (the page's grid)
  and the previews' (what it shows large); the target is at most 1/20;
- CPU-ms per image (this process's CPU time, one thread): the thumbnail (what ingest makes),
  the preview (made on its first request), and embedding with the shared MobileNet through
  the runtime Triton runs (decoding included), the ingest's own per-image cost. The
  pipeline's throughput with the thumbnails group on against off is
  `cbir bench ingest --thumbnails off on`.

Writes bench/results/thumbnails.json and .md.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
from PIL import Image

from cbir.bench.common import PROJECT_ROOT, RESULTS, publish
from cbir.evaluation.report import provenance_line
from cbir.models.runtime import OnnxEmbedder
from cbir.models.shared_mobilenet import export_shared_mobilenet
from cbir.output import console
from cbir.settings import get_settings
from cbir.thumbnails import RenditionSizes, make_renditions

PAGE = 12
PHONE = (4032, 3024)
# how a phone saves a photograph, per format (Pillow's names)
SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "JPEG": {"quality": 92},
    "HEIF": {"quality": 80, "thumbnails": [320]},
    "AVIF": {"quality": 80, "speed": 8},
}


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser("thumbnails", help="bytes per result page, cost at ingest")
    parser.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared")
    parser.add_argument("--photos", type=int, default=48, help="phone-sized JPEGs to make")
    parser.add_argument(
        "--formats", nargs="+", default=["JPEG", "HEIF", "AVIF"], choices=list(SAVE_OPTIONS)
    )
    parser.add_argument(
        "--phone-pages", type=int, default=1, help="pages of 12 HEIC and AVIF photographs"
    )
    parser.add_argument("--name", default="thumbnails", help="results file name")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.set_defaults(run=run)


def phone_photo(path: Path, seed: int, fmt: str = "JPEG") -> bytes:
    """A 12 MP photograph made of a Holidays one, with a sensor's grain, as a phone saves it."""
    with Image.open(path) as source:
        rgb = source.convert("RGB")
    size = PHONE if rgb.width >= rgb.height else PHONE[::-1]
    big = np.asarray(rgb.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    grain = np.random.default_rng(seed).normal(0.0, 4.0, big.shape).astype(np.float32)
    noisy = np.clip(big + grain, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format=fmt, **SAVE_OPTIONS[fmt])
    return out.getvalue()


def cpu_ms(action: Any, items: list[bytes]) -> tuple[list[Any], float]:
    started = time.process_time()
    made = [action(item) for item in items]
    return made, 1000 * (time.process_time() - started) / len(items)


def run(args: argparse.Namespace) -> int:
    t = get_settings().thumbnails
    sizes = RenditionSizes(t.thumbnail_side, t.preview_side, t.quality)
    all_paths = sorted((args.shared / "data" / "holidays").rglob("*.jpg"))
    records = []
    with TemporaryDirectory() as scratch:
        export_shared_mobilenet(
            Path(scratch), args.shared / "models" / "mobilenet_v1_embed.onnx", "mobilenet"
        )
        embedder = OnnxEmbedder(Path(scratch) / "mobilenet" / "1", intra_op_threads=1)
        for fmt in args.formats:
            count = args.photos if fmt == "JPEG" else args.phone_pages * PAGE
            paths = all_paths[:count]
            console.print(f"making {len(paths)} phone-sized photographs as {fmt}")
            photos = [phone_photo(path, seed, fmt) for seed, path in enumerate(paths)]
            records.append(measure(fmt, photos, sizes, embedder))
            console.print(records[-1])
    publish(args.name, records, {}, markdown, args.out)
    return 0


def measure(
    fmt: str, photos: list[bytes], sizes: RenditionSizes, embedder: OnnxEmbedder
) -> dict[str, Any]:
    """Bytes per page and CPU per image of one format's photographs."""
    thumbnails, rendition_ms = cpu_ms(
        lambda data: make_renditions(data, sizes, ("thumbnail",)), photos
    )
    previews, preview_ms = cpu_ms(lambda data: make_renditions(data, sizes, ("preview",)), photos)
    renditions = [t | p for t, p in zip(thumbnails, previews, strict=True)]
    embedder.embed(photos[:1])  # warm-up
    _, model_ms = cpu_ms(lambda data: embedder.embed([data]), photos)
    pages = []
    for start in range(0, len(photos) - PAGE + 1, PAGE):
        chunk = range(start, start + PAGE)
        pages.append(
            {
                "original_bytes": sum(len(photos[i]) for i in chunk),
                "thumbnail_bytes": sum(len(renditions[i]["thumbnail"]) for i in chunk),
                "preview_bytes": sum(len(renditions[i]["preview"]) for i in chunk),
            }
        )
    original = float(np.mean([p["original_bytes"] for p in pages]))
    thumbnail = float(np.mean([p["thumbnail_bytes"] for p in pages]))
    preview = float(np.mean([p["preview_bytes"] for p in pages]))
    return {
        "format": fmt,
        "photos": len(photos),
        "photo_megapixels": PHONE[0] * PHONE[1] / 1e6,
        "original_mb_per_photo": round(float(np.mean([len(p) for p in photos])) / 1e6, 2),
        "pages": len(pages),
        "page_original_mb": round(original / 1e6, 2),
        "page_thumbnails_kb": round(thumbnail / 1e3, 1),
        "page_previews_kb": round(preview / 1e3, 1),
        "thumbnails_share_of_originals": round(thumbnail / original, 4),
        "previews_share_of_originals": round(preview / original, 4),
        "renditions_cpu_ms_per_image": round(rendition_ms, 1),  # the thumbnail, at ingest
        "preview_cpu_ms_per_image": round(preview_ms, 1),  # on its first request
        "model_cpu_ms_per_image": round(model_ms, 1),
        "renditions_over_model": round(rendition_ms / model_ms, 3),
        "sizes": {
            "thumbnail": sizes.thumbnail_side,
            "preview": sizes.preview_side,
            "quality": sizes.quality,
        },
    }


def markdown(document: dict[str, Any]) -> str:
    records = document["records"]
    s = records[0]["sizes"]
    lines = [
        provenance_line(document),
        "",
        f"Phone-sized photographs ({records[0]['photo_megapixels']:.1f} MP), pages of {PAGE} "
        f"results; thumbnails {s['thumbnail']} px and previews {s['preview']} px, WebP quality "
        f"{s['quality']}. The model's CPU includes decoding the original.",
        "",
        "| format | photos | MB a photo | page of 12: originals | thumbnails | share | previews "
        "| share | thumbnail CPU-ms / image (ingest) | preview CPU-ms / image (on request) "
        "| model CPU-ms / image | thumbnail / model |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r.get('format', 'JPEG')} | {r['photos']} | {r['original_mb_per_photo']} "
            f"| {r['page_original_mb']} MB | {r['page_thumbnails_kb']} KB "
            f"| {r['thumbnails_share_of_originals']:.2%} | {r['page_previews_kb']} KB "
            f"| {r['previews_share_of_originals']:.2%} | {r['renditions_cpu_ms_per_image']} "
            f"| {r.get('preview_cpu_ms_per_image', '')} "
            f"| {r['model_cpu_ms_per_image']} | {r['renditions_over_model']} |"
        )
    return "\n".join(lines) + "\n"
