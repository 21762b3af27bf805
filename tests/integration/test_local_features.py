"""Same-object search on the real stack: local features stored at ingest beside the image,
`rerank=spatial` ranking a transformed copy's source first, near-duplicates listed by the API,
and a delete removing both the features and the link."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from cbir import wiring
from cbir.adapters.embedder import TritonEmbedder
from cbir.adapters.event_log import KafkaEventLog
from cbir.adapters.object_store import MinioObjectStore
from cbir.domain.images import image_id_of
from cbir.local_features.features import Extractor, LocalFeatures, hamming, perceptual_hash
from cbir.local_features.vlad import train
from cbir.models.export import export_vlad
from cbir.models.runtime import LocalSpec
from cbir.replay.duplicates import read_records
from cbir.settings import settings_environment
from cbir.stack.launcher import Launcher
from cbir.wiring import CORE, DUPLICATES, FEATURES
from schemas.events import DuplicatesFound
from tests.integration.conftest import TEST_API_KEY
from tests.integration.helpers import role_workers, wait_for
from tests.integration.test_query_api import ids_of, search, status_of

pytestmark = pytest.mark.integration
CBIR = str(Path(sys.executable).parent / "cbir")


@pytest.fixture(scope="module")
def client(launcher: Launcher, indexed_flowers: list[Path]) -> Iterator[httpx.Client]:
    api = launcher.settings.api
    with httpx.Client(base_url=f"http://{api.host}:{api.port}", timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def objects(launcher: Launcher) -> Iterator[MinioObjectStore]:
    store = MinioObjectStore(launcher.settings.minio, 10)
    yield store


def jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def rotated_crop(photo: Path, angle: float = 15) -> bytes:
    """The middle two thirds of the photo, turned and recompressed: the same object."""
    with Image.open(photo) as opened:
        image = opened.convert("RGB")
    w, h = image.size
    crop = image.crop((w // 6, h // 6, w - w // 6, h - h // 6))
    return jpeg(crop.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True), 70)


def upload(client: httpx.Client, data: bytes, name: str) -> str:
    response = client.post(
        "/images",
        files={"image": (name, data, "image/jpeg")},
        headers={"X-API-Key": TEST_API_KEY},
    )
    assert response.status_code in (200, 202), response.text
    image_id = image_id_of(data)
    wait_for(lambda: status_of(client, image_id) == "indexed", 90, f"{name} to be indexed")
    return image_id


def test_every_indexed_image_has_its_local_features_beside_it(
    launcher: Launcher, objects: MinioObjectStore, indexed_flowers: list[Path]
) -> None:
    bucket = launcher.settings.local_features.bucket
    for photo in random.Random(3).sample(indexed_flowers, 5):
        blob = objects.get(bucket, image_id_of(photo.read_bytes()))
        assert blob is not None, f"no features stored for {photo}"
        features = LocalFeatures.from_bytes(blob)
        assert len(features) >= 50


def without_twins(photos: list[Path]) -> list[Path]:
    """The photos no other photo repeats: flowers17 holds some photographs twice (other bytes,
    hashes a few bits apart), and a copy of one is as much a copy of the other."""
    hashes = []
    for photo in photos:
        with Image.open(photo) as opened:
            hashes.append(perceptual_hash(np.asarray(opened.convert("L"))))
    return [
        photo
        for i, photo in enumerate(photos)
        if all(hamming(hashes[i], other) > 10 for j, other in enumerate(hashes) if j != i)
    ]


def test_spatial_reranking_ranks_a_transformed_copys_source_first(
    client: httpx.Client, indexed_flowers: list[Path]
) -> None:
    misses = []
    for photo in random.Random(11).sample(without_twins(indexed_flowers), 6):
        source = image_id_of(photo.read_bytes())
        # MobileNet may rank a rotated crop's source far down (black corners): R covers most
        # of the index, and a budget a loaded machine cannot spend verifies every candidate
        response = search(
            client, rotated_crop(photo), k=10, rerank="spatial", depth=200, rerank_budget_ms=9000
        )
        body = response.json()
        first = body["results"][0]
        if ids_of(response)[0] != source:
            misses.append(photo.name)
            continue
        assert first["inliers"] >= 15
        assert body["spatial"]["verified"] == body["spatial"]["depth"] == 200
        # unrelated results below it stay unverified (under 15 inliers), or were not checked
        assert all(r["inliers"] is None or r["inliers"] < 15 for r in body["results"][1:]), [
            r["inliers"] for r in body["results"]
        ]
    assert not misses, f"sources not first: {misses}"
    # without rerank the results carry no inliers and no spatial block
    plain = search(client, rotated_crop(indexed_flowers[0]), k=5)
    assert plain.json()["spatial"] is None
    assert all(r["inliers"] is None for r in plain.json()["results"])


def test_expansion_searches_again_from_the_verified_results(
    client: httpx.Client, indexed_flowers: list[Path]
) -> None:
    photo = without_twins(indexed_flowers)[3]
    query = rotated_crop(photo, angle=12)
    asked = {"k": 10, "rerank": "spatial", "depth": 200, "rerank_budget_ms": 9000}
    response = search(client, query, **asked, expand="true")
    body = response.json()
    assert ids_of(response)[0] == image_id_of(photo.read_bytes())
    assert body["spatial"]["expanded_with"] >= 1
    # the verified results first, then what the expanded query found; each once, ranked
    verified = [r for r in body["results"] if r["inliers"] is not None and r["inliers"] >= 15]
    assert body["results"][: len(verified)] == verified
    assert len(set(ids_of(response))) == len(body["results"]) == 10
    assert [r["rank"] for r in body["results"]] == list(range(1, 11))
    # not asked: not expanded, and its own cache entry
    plain = search(client, query, **asked)
    assert plain.headers["x-cache"] == "miss" and plain.json()["spatial"]["expanded_with"] is None
    # what the expanded search finds again keeps the inliers the first pass found for it
    first_pass = {r["image_id"]: r["inliers"] for r in plain.json()["results"]}
    again = [r for r in body["results"] if r["image_id"] in first_pass]
    assert len(again) >= 2
    assert all(r["inliers"] == first_pass[r["image_id"]] for r in again)


def test_spatial_reranking_is_cached_and_bounded_and_more_like_this_takes_it(
    client: httpx.Client, indexed_flowers: list[Path]
) -> None:
    photo = indexed_flowers[7]
    query = rotated_crop(photo, angle=-10)
    first = search(client, query, k=5, rerank="spatial", depth=20)
    again = search(client, query, k=5, rerank="spatial", depth=20)
    assert again.headers["x-cache"] == "hit"
    assert again.json()["results"] == first.json()["results"]
    assert again.json()["spatial"] == first.json()["spatial"]
    # the global order is a different list: another cache entry
    assert search(client, query, k=5).headers["x-cache"] == "miss"
    for bad in ({"depth": 0}, {"depth": 10_000}, {"rerank": "magic"}, {"rerank_budget_ms": 0}):
        response = search(client, query, k=5, **{"rerank": "spatial", **bad})
        assert response.status_code == 422, response.text
        assert "Traceback" not in response.text
    image_id = image_id_of(photo.read_bytes())
    similar = client.get(
        f"/images/{image_id}/similar", params={"k": 5, "rerank": "spatial", "depth": 30}
    )
    assert ids_of(similar)[0] == image_id
    assert similar.json()["results"][0]["inliers"] >= 100  # itself: every keypoint agrees


def test_near_duplicates_are_listed_and_a_delete_removes_features_and_link(
    launcher: Launcher, client: httpx.Client, objects: MinioObjectStore, shared_dir: Path
) -> None:
    # a photo of a species the session has not indexed, and two copies of it
    photo = sorted((shared_dir / "data" / "flowers17" / "9").glob("*.jpg"))[4]
    with Image.open(photo) as opened:
        image = opened.convert("RGB")
    smaller = jpeg(image.resize((image.width * 2 // 3, image.height * 2 // 3)), 60)
    source = upload(client, photo.read_bytes(), "source.jpg")
    resized = upload(client, smaller, "resized.jpg")
    cropped = upload(client, rotated_crop(photo, angle=8), "cropped.jpg")

    # the processors recorded it on the duplicates topic (compacted, keyed by image id)
    events = KafkaEventLog(launcher.settings.kafka)
    topic = launcher.settings.kafka.duplicates_topic

    def recorded() -> dict[str, DuplicatesFound]:
        return read_records(events, topic)

    wait_for(lambda: resized in recorded(), 60, "the resized copy's duplicates record")
    record = recorded()[resized]
    assert source in {link.image_id for link in record.links}
    # and `cbir duplicates` lists the cluster from the topic
    env = {**os.environ, **settings_environment(launcher.settings)}
    listing = subprocess.run(
        [CBIR, "duplicates"], env=env, capture_output=True, text=True, timeout=300
    )
    assert listing.returncode == 0, listing.stderr
    assert source[:16] in listing.stdout and resized[:16] in listing.stdout

    listed = client.get(f"/images/{resized}/duplicates")
    assert listed.status_code == 200, listed.text
    tiers = {d["image_id"]: d["tier"] for d in listed.json()["duplicates"]}
    assert tiers.get(source) == "both", tiers  # same hash, same embedding
    by_crop = client.get(f"/images/{cropped}/duplicates").json()["duplicates"]
    assert source in {d["image_id"] for d in by_crop}
    # unrelated indexed flowers are not duplicates of it
    assert len(by_crop) <= 2

    bucket = launcher.settings.local_features.bucket
    assert objects.get(bucket, source) is not None
    deleted = client.delete(f"/images/{source}", headers={"X-API-Key": TEST_API_KEY})
    assert deleted.status_code == 202, deleted.text
    wait_for(lambda: status_of(client, source) == "gone", 60, "the delete to go through")
    assert objects.get(bucket, source) is None
    wait_for(lambda: source not in recorded(), 60, "the source's tombstone on the topic")
    after = client.get(f"/images/{resized}/duplicates").json()["duplicates"]
    assert source not in {d["image_id"] for d in after}
    missing = client.get(f"/images/{source}/duplicates")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_image"


def test_a_vlad_model_is_served_by_triton_as_the_runtime_computes_it(
    launcher: Launcher, flower_photos: list[Path]
) -> None:
    settings = launcher.settings
    local = LocalSpec(200, 256)
    extractor = Extractor(local.max_keypoints, local.max_side)
    datas = [p.read_bytes() for p in flower_photos]
    features = [extractor.extract(data) for data in datas]
    model = train(features, words=8, dim=4, seed=2)
    spec = export_vlad(settings.triton.model_repository, "vlad-test", 1, model, local, "test")
    embedder = TritonEmbedder(settings.triton, "vlad-test", protocol="http")
    embedder.load()
    assert embedder.identity().model_id == spec.model_id
    vectors, errors = embedder.embed([*datas, b"not an image"])
    assert errors[: len(datas)] == [""] * len(datas) and errors[-1]
    expected = np.stack([model.describe(f.rootsift()) for f in features])
    assert np.allclose(vectors[: len(datas)], expected, atol=1e-5)


def test_a_frozen_features_group_never_holds_back_indexing(
    launcher: Launcher, client: httpx.Client, objects: MinioObjectStore, shared_dir: Path
) -> None:
    """The derived consumer groups frozen (SIGSTOP), images uploaded: indexed and searchable
    all the same; a spatial search leaves the featureless in their order and says so; thawed,
    the features group catches up and stores them."""
    settings = launcher.settings
    frozen = role_workers(launcher, FEATURES) + role_workers(launcher, DUPLICATES)
    assert len(frozen) == 2
    # and they yield the cores to indexing
    assert {w.nice() for w in frozen} == {settings.processors.derived_nice} != {0}
    assert {w.nice() for w in role_workers(launcher, CORE)} == {0}
    # a species no other test ingests (test_pipeline checks its species' folder tags)
    photos = sorted((shared_dir / "data" / "flowers17" / "16").glob("*.jpg"))[:3]
    bucket = settings.local_features.bucket
    for worker in frozen:
        worker.suspend()
    try:
        uploaded = [upload(client, p.read_bytes(), p.name) for p in photos]  # waits: indexed
        assert all(objects.get(bucket, image_id) is None for image_id in uploaded)
        lags = {role.name: lag.lag for role, lag in wiring.pipeline_lag(settings)}
        assert lags[FEATURES] > 0
        response = search(client, photos[0].read_bytes(), k=5, rerank="spatial", depth=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["results"][0]["image_id"] == uploaded[0]  # itself, by its global score
        assert body["spatial"]["features_missing"] >= 1
        assert body["results"][0]["inliers"] is None  # not verified: no features yet
    finally:
        for worker in frozen:
            worker.resume()
    wait_for(lambda: wiring.caught_up(settings), 180, "the derived groups to catch up")
    assert all(objects.get(bucket, image_id) is not None for image_id in uploaded)
