"""`cbir bench thumbnails`: what a page of results transfers with thumbnails against the
originals, and what making them costs at ingest beside the model.

Phone-sized photographs are made from INRIA Holidays (../shared/data/holidays holds them
downscaled): each brought to 12 MP (4032 x 3024, or 3024 x 4032 upright), with seeded
Gaussian noise (sigma 4 levels, a phone sensor's grain, which is what makes real originals
megabytes) and saved as JPEG quality 92. In one run on the same photographs:

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


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = actions.add_parser("thumbnails", help="bytes per result page, cost at ingest")
    parser.add_argument("--shared", type=Path, default=PROJECT_ROOT.parent / "shared")
    parser.add_argument("--photos", type=int, default=48, help="phone-sized photos to make")
    parser.add_argument("--name", default="thumbnails", help="results file name")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.set_defaults(run=run)


def phone_photo(path: Path, seed: int) -> bytes:
    """A 12 MP JPEG of the photograph, with a sensor's grain."""
    with Image.open(path) as source:
        rgb = source.convert("RGB")
    size = PHONE if rgb.width >= rgb.height else PHONE[::-1]
    big = np.asarray(rgb.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    grain = np.random.default_rng(seed).normal(0.0, 4.0, big.shape).astype(np.float32)
    noisy = np.clip(big + grain, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format="JPEG", quality=92)
    return out.getvalue()


def cpu_ms(action: Any, items: list[bytes]) -> tuple[list[Any], float]:
    started = time.process_time()
    made = [action(item) for item in items]
    return made, 1000 * (time.process_time() - started) / len(items)


def run(args: argparse.Namespace) -> int:
    paths = sorted((args.shared / "data" / "holidays").rglob("*.jpg"))[: args.photos]
    console.print(f"making {len(paths)} phone-sized photographs")
    photos = [phone_photo(path, seed) for seed, path in enumerate(paths)]
    t = get_settings().thumbnails
    sizes = RenditionSizes(t.thumbnail_side, t.preview_side, t.quality)
    thumbnails, rendition_ms = cpu_ms(
        lambda data: make_renditions(data, sizes, ("thumbnail",)), photos
    )
    previews, preview_ms = cpu_ms(lambda data: make_renditions(data, sizes, ("preview",)), photos)
    renditions = [t | p for t, p in zip(thumbnails, previews, strict=True)]
    with TemporaryDirectory() as scratch:
        export_shared_mobilenet(
            Path(scratch), args.shared / "models" / "mobilenet_v1_embed.onnx", "mobilenet"
        )
        embedder = OnnxEmbedder(Path(scratch) / "mobilenet" / "1", intra_op_threads=1)
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
    record = {
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
        "sizes": {"thumbnail": t.thumbnail_side, "preview": t.preview_side, "quality": t.quality},
    }
    console.print(record)
    publish(args.name, [record], {}, markdown, args.out)
    return 0


def markdown(document: dict[str, Any]) -> str:
    (r,) = document["records"]
    s = r["sizes"]
    return (
        "\n".join(
            [
                provenance_line(document),
                "",
                f"{r['photos']} phone-sized photographs ({r['photo_megapixels']:.1f} MP JPEG, "
                f"{r['original_mb_per_photo']} MB on average), pages of {PAGE} results; "
                f"thumbnails {s['thumbnail']} px and previews {s['preview']} px, WebP quality "
                f"{s['quality']}.",
                "",
                "| page of 12: originals | thumbnails | share | previews | share "
                "| thumbnail CPU-ms / image (ingest) | preview CPU-ms / image (on request) "
                "| model CPU-ms / image | thumbnail / model |",
                "|---|---|---|---|---|---|---|---|---|",
                f"| {r['page_original_mb']} MB | {r['page_thumbnails_kb']} KB "
                f"| {r['thumbnails_share_of_originals']:.2%} | {r['page_previews_kb']} KB "
                f"| {r['previews_share_of_originals']:.2%} | {r['renditions_cpu_ms_per_image']} "
                f"| {r.get('preview_cpu_ms_per_image', '')} "
                f"| {r['model_cpu_ms_per_image']} | {r['renditions_over_model']} |",
            ]
        )
        + "\n"
    )
